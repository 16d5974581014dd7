"""`soundstorm-dialogue`: speak a script with one voice per speaker (Hydra config ``dialogue``).

Loads the text-to-semantic and SoundStorm checkpoints and the token folder's codec and semantic
tokenizer, speaks the script (:class:`soundstorm.dialogue.DialoguePipeline`) and writes
``out_dir/dialogue.wav``, ``dialogue.json`` (turns with speaker, text, start and end; the latency
of each stage; optional per-turn WER and speaker attribution) and ``dialogue.png`` (and ``reference.*`` with
``evaluation.reference=true``). The folder follows :mod:`soundstorm.outputs`: one writer at a time, an
earlier dialogue's outputs refused unless ``overwrite=true`` (which removes all of them, ``reference.*``
included, once every check has passed). Bad scripts, settings, missing files or a folder in use:
``soundstorm-dialogue: error: ...`` and exit status 2; an operating-system error such as a full disk: 1.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig

from soundstorm.cli._common import run_with_backend
from soundstorm.cli._hydra import cli_schema, hydra_main
from soundstorm.config_keys import dataclass_schema
from soundstorm.dialogue import builders as dialogue_builders
from soundstorm.dialogue.evaluate import evaluate_dialogue, true_semantic
from soundstorm.dialogue.script import parse_script
from soundstorm.outputs import claim

# what a dialogue writes in out_dir (an earlier run's are refused, or all removed with overwrite=true)
OUTPUTS = tuple(f"{stem}.{suffix}" for stem in ("dialogue", "reference") for suffix in ("wav", "json", "png"))


def run(cfg: DictConfig, backend) -> dict:
    settings = dialogue_builders.build_dialogue_settings(cfg)
    with claim(settings.out_dir, "out_dir", "soundstorm-dialogue", outputs=OUTPUTS, overwrite=settings.overwrite,
               enabled=backend.dist.is_main, kept="Each file written is whole (temporary name, then renamed), but "
               "the dialogue is incomplete: dialogue.json is written after its wav and figure.",
               rerun="Fix the cause (free space), then rerun with overwrite=true.") as out:
        return speak(cfg, backend, settings, out)


def speak(cfg: DictConfig, backend, settings, out) -> dict:
    """Load, speak the script, score and write (``out``: the claimed folder, committed after the checks)."""
    pipeline = dialogue_builders.build_pipeline(cfg, settings, backend.device)
    recognizer, verifier = dialogue_builders.build_scorers(settings)
    true_tokens = reference_tokens(settings) if settings.evaluation.reference else None  # fail before the work
    result = pipeline.speak(settings.script, dict(settings.voices), seed=settings.seed, speed=settings.speed)
    extra = {"script": settings.script, "voices": dict(settings.voices), "t2s_checkpoint": settings.t2s_checkpoint,
             "soundstorm_checkpoint": settings.soundstorm_checkpoint, "assets": settings.assets}
    scores = evaluate_dialogue(result, recognizer, verifier, settings.silence_db)
    extra["evaluation"], result.turns = scores["summary"], scores["turns"]
    out.commit()  # every check has passed (speak() parses the script): an earlier dialogue's outputs go now
    if true_tokens is not None:
        extra["reference"] = reference(pipeline, result, true_tokens, settings, recognizer, verifier)
    paths = result.save(settings.out_dir, extra=extra)
    for turn in result.turns:
        print(f"{turn['start']:6.2f}-{turn['end']:6.2f} s  {turn['speaker']}: {turn['text']}"
              + (f"  [heard: {turn['transcript']!r}, WER {turn['wer']:.2f}]" if "wer" in turn else ""))
    print("latency (s): " + ", ".join(f"{k}={v:.3f}" for k, v in result.latency.items()))
    print("evaluation: " + json.dumps({k: v for k, v in extra["evaluation"].items() if k != "latency"}))
    if "reference" in extra:
        print("reference (SoundStorm on the true semantic tokens): " + json.dumps(
            {k: v for k, v in extra["reference"].items() if k not in ("latency", "turns")}))
    print(f"wrote {paths['wav']}, {paths['json']}, {paths['png']}")
    return extra


def reference_tokens(settings) -> tuple[list, list]:
    """``(turns, true semantic tokens per turn)`` from the token folder's transcripts (every turn must match)."""
    turns = parse_script(settings.script, list(settings.voices))
    semantic = true_semantic(turns, settings.assets)
    missing = [i + 1 for i, s in enumerate(semantic) if s is None]
    if missing:
        raise ValueError(f"evaluation.reference=true needs every turn's text among the transcripts of assets="
                         f"{settings.assets}; turns {missing} are not")
    return turns, semantic


def reference(pipeline, result, true_tokens, settings, recognizer, verifier) -> dict:
    """The same turns and voices from the true semantic tokens (``reference.wav``), scored alike."""
    turns, semantic = true_tokens
    rendered = pipeline.render(turns, result.voices, semantic, settings.seed)
    scores = evaluate_dialogue(rendered, recognizer, verifier, settings.silence_db)
    rendered.turns = scores["turns"]
    rendered.save(settings.out_dir, stem="reference")
    return {**scores["summary"], "turns": scores["turns"]}


def schema() -> dict:
    """The dialogue's own settings (:class:`~soundstorm.dialogue.builders.DialogueSettings`; its top-level
    ``silence_db`` is filled from ``evaluation.silence_db``, not a key) and the sampler and backend groups."""
    settings = dataclass_schema(dialogue_builders.DialogueSettings)
    settings.pop("silence_db")
    return cli_schema("dialogue", ("sampler", "backend"), **settings)


@hydra_main("soundstorm-dialogue", "dialogue", schema)
def main(cfg: DictConfig) -> None:
    run_with_backend("soundstorm-dialogue", cfg.backend, lambda backend: run(cfg, backend))


if __name__ == "__main__":
    main()
