"""`soundstorm-dialogue`: speak a script with one voice per speaker (Hydra config ``dialogue``).

Loads the text-to-semantic and SoundStorm checkpoints and the token folder's codec and semantic
tokenizer, speaks the script (:class:`soundstorm.dialogue.DialoguePipeline`) and writes
``out_dir/dialogue.wav``, ``dialogue.json`` (turns with speaker, text, start and end; the latency
of each stage; optional per-turn WER and speaker attribution) and ``dialogue.png``. Bad scripts,
settings or missing files: ``soundstorm-dialogue: error: ...`` and exit status 2.
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from soundstorm import builders
from soundstorm.cli._common import run_with_backend
from soundstorm.dialogue import builders as dialogue_builders


def run(cfg: DictConfig, backend) -> dict:
    settings = dialogue_builders.build_dialogue_settings(cfg)
    pipeline = dialogue_builders.build_pipeline(cfg, settings, backend.device)
    recognizer, verifier = dialogue_builders.build_scorers(settings)
    result = pipeline.speak(settings.script, dict(settings.voices), seed=settings.seed, speed=settings.speed)
    extra = {"script": settings.script, "voices": dict(settings.voices), "t2s_checkpoint": settings.t2s_checkpoint,
             "soundstorm_checkpoint": settings.soundstorm_checkpoint, "assets": settings.assets}
    if recognizer is not None or verifier is not None or len(result.turns) > 1:
        from soundstorm.dialogue.evaluate import evaluate_dialogue

        scores = evaluate_dialogue(result, recognizer, verifier, settings.silence_db)
        extra["evaluation"] = scores["summary"]
        result.turns = scores["turns"]
    paths = result.save(settings.out_dir, extra=extra)
    for turn in result.turns:
        print(f"{turn['start']:6.2f}-{turn['end']:6.2f} s  {turn['speaker']}: {turn['text']}")
    print("latency (s): " + ", ".join(f"{k}={v:.3f}" for k, v in result.latency.items()))
    if "evaluation" in extra:
        print("evaluation: " + json.dumps({k: v for k, v in extra["evaluation"].items() if k != "latency"}))
    print(f"wrote {paths['wav']}, {paths['json']}, {paths['png']}")
    return extra


@hydra.main(config_path="pkg://soundstorm.configs", config_name="dialogue", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_with_backend("soundstorm-dialogue", cfg.backend, lambda backend: run(cfg, backend))


if __name__ == "__main__":
    main()
