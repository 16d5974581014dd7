"""`soundstorm-eval`: metrics of a checkpoint on held-out utterances → ``out_dir/metrics.json``.

Teacher-forced per-level accuracy and NLL at ``evaluation.mask_ratios``; generation (unprompted and
prompted with the first ``evaluation.prompt_seconds``) with per-level token accuracy, mel distances
and the unigram / random-token baselines; optional WER and speaker similarity
(``evaluation.asr=pkg.mod:fn``, ``evaluation.verifier=pkg.mod:fn``); example wavs and spectrogram PNGs,
and a ``evaluation.long_seconds`` long-form generation. With ``evaluation.speech.enabled=true``, the
paper's Table 1 in miniature (:mod:`soundstorm.evaluation.speech_table`: WER/CER and speaker
similarity of ground truth, codec resynthesis, unprompted, prompted and cross-speaker generation) goes
to ``metrics.json`` under ``speech``, ``speech_table.md``, ``speech_table.png``, wandb and stdout.
The codec is the one saved in ``data.root``, checked against what the checkpoint was
trained on (:mod:`soundstorm.assets`). ``backend=cpu backend.options.dtype=int8`` evaluates the int8
model; ``evaluation.compare_int8=true`` adds int8 against float32 on the same utterances
(:mod:`soundstorm.evaluation.int8`). The output folder follows :mod:`soundstorm.outputs`: one writer at a
time; an ``out_dir`` holding an earlier evaluation's outputs (:data:`OUTPUTS`) is refused before any work
unless ``overwrite=true``, which removes them once every check has passed, so none is left beside the new
ones. Exit code 2 on bad inputs or a folder in use, 1 on an operating-system error such as a full disk.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from soundstorm import builders
from soundstorm.assets import open_checkpoint, require_checkpoint_dir
from soundstorm.cli._common import run_with_backend
from soundstorm.cli._hydra import cli_schema, hydra_main
from soundstorm.evaluation.generation import WINDOW_FIELDS, GenerationEvaluator
from soundstorm.evaluation.int8 import compare_int8
from soundstorm.evaluation.metrics import most_frequent_tokens
from soundstorm.evaluation.speech_table import evaluate_speech, rows_of
from soundstorm.evaluation.teacher_forced import heldout_batches, summarize, teacher_forced_sums
from soundstorm.io import atomic_write_bytes
from soundstorm.longform import window_frames
from soundstorm.outputs import OutputFolder, claim
from soundstorm.t2s.speech_row import load_semantic_from_text


# what an evaluation writes in out_dir: an earlier run's are refused, or removed with overwrite=true (never
# the folder's other files: out_dir may hold a training run, token folders or wandb logs)
OUTPUTS = ("metrics.json", "examples/", "speech_examples/", "speech_table.md", "speech_table.png", "generated_*s.wav",
           "reference_*s.wav", "spectrogram_*s.png")


def evaluate(cfg: DictConfig, backend, out: OutputFolder) -> dict:
    """Every metric of the eval config; writes examples under ``out_dir`` (claimed as ``out``, whose earlier
    outputs are removed once every check has passed, with ``overwrite=true``) and returns the metrics."""
    evaluation = builders.build_evaluation(cfg.evaluation)
    require_checkpoint_dir(cfg.checkpoint)
    data_root = builders.load_data_root(cfg.data)  # data.root set and readable, before anything is loaded
    assets = builders.build_assets(data_root.section.root, "data.root", cfg.get("codec"), cfg.get("semantic"))
    model, used_ema = open_checkpoint(cfg.checkpoint, assets, assets_field="data.root", use_ema=evaluation.use_ema,
                                      device=backend.device, ema_field="evaluation.use_ema")
    backend.configure_model(model)  # attention kernel: Pallas flash on TPU, SDPA elsewhere
    data, train_set, heldout = builders.build_datasets(cfg.data, model.config, int(cfg.seed), backend.static_shapes)
    if heldout is None:
        raise ValueError(f"data.heldout_fraction={data.heldout_fraction} holds out no utterance; expected > 0")
    codec = assets.codec
    sampler = builders.build_sampler(cfg.sampler, model.config.num_levels)
    utterances = [heldout.utterance(i) for i in range(len(heldout))]
    extra_metrics = builders.build_extra_metrics(evaluation)
    comparison = _compare_int8(model, codec, sampler, utterances, evaluation, extra_metrics, backend)
    model = backend.prepare_inference_model(model)  # int8 linear layers with backend.options.dtype=int8
    batches = [backend.to_device({k: b[k] for k in ("codes", "semantic", "lengths")})
               for b in heldout_batches(heldout, data.batch_size, evaluation.max_batches)]
    ratios = list(evaluation.mask_ratios)
    teacher_forced = summarize(teacher_forced_sums(model, batches, ratios, evaluation.seed, backend.autocast,
                                                   backend.mark_step), ratios)
    num_train = min(len(train_set), evaluation.unigram_max_utterances)
    unigram = most_frequent_tokens([train_set.utterance(i)["codes"] for i in range(num_train)])
    evaluator = GenerationEvaluator(model, codec, sampler, evaluation, unigram_token=unigram,
                                    extra_metrics=extra_metrics, mark_step=backend.mark_step)
    out_dir = Path(cfg.out_dir)
    out.commit()  # every check has passed: the first write follows
    speech = {}
    if evaluation.speech.enabled:  # first: a corpus without speakers or transcripts fails before anything else
        semantic_from_text = load_semantic_from_text(evaluation.speech.t2s_checkpoint, model)
        speech["speech"] = evaluate_speech(evaluation.speech, evaluator, heldout, train_set, out_dir,
                                           evaluation.num_examples, semantic_from_text)
    metrics = evaluator.run(utterances, out_dir)
    if evaluation.long_seconds > 0:
        metrics.update(evaluator.long_form(utterances, out_dir))
    metrics.update(speech)
    metrics.update({"teacher_forced": teacher_forced, "checkpoint": str(cfg.checkpoint), "used_ema": used_ema,
                    "num_heldout_utterances": len(heldout), "sampler": dict(builders.resolved(cfg.sampler)),
                    "codec": codec.describe(), "model": model.config.to_dict(),
                    "backend": backend.describe()})
    if comparison is not None:
        metrics["int8_vs_float32"] = comparison
    return metrics


def _compare_int8(model, codec, sampler, utterances, evaluation, extra_metrics, backend) -> dict | None:
    """``evaluation.compare_int8``: the float32 model against its int8 copy on the same utterances."""
    if not evaluation.compare_int8:
        return None
    if backend.device.type != "cpu":
        raise ValueError(f"evaluation.compare_int8=true needs the cpu backend (int8 runs on the CPU), got "
                         f"backend {backend.name!r}")
    window, window_prompt = window_frames(evaluation.window_seconds, evaluation.window_prompt_seconds,
                                          codec.frame_rate, model.config.semantic_upsample, WINDOW_FIELDS)
    return compare_int8(model, codec, sampler, utterances, window_frames=window, prompt_frames=window_prompt,
                        max_utterances=evaluation.max_utterances, seed=evaluation.seed, extra_metrics=extra_metrics)


def _log(cfg: DictConfig, metrics: dict, out_dir: Path, is_main: bool) -> None:
    """Scalars (and the speech table's figure) to the configured logger (wandb under ``out_dir``)."""
    logger = builders.build_logger(cfg.logger, OmegaConf.to_container(cfg, resolve=True), is_main)
    try:
        scalars = {f"eval/{k}": v for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        speech = metrics.get("speech", {})
        for row in rows_of(speech) if speech else ():
            scalars.update({f"speech/{row}/{col}": v for col, v in speech[row].items() if v is not None})
        for speaker, values in speech.get("per_speaker", {}).items():
            scalars.update({f"speech/per_speaker/{speaker}/{row}_wer": v for row, v in values.items()
                            if row != "n" and v is not None})
        if "speech" in metrics:
            scalars["speech/cross_speaker_attribution"] = metrics["speech"]["cross_speaker_attribution"]
            logger.log_media(0, images={"speech/table": out_dir / "speech_table.png"})
        logger.log(scalars, step=0, echo=False)
        logger.summary(scalars)
    finally:
        logger.finish()


def _evaluate_and_write(cfg: DictConfig, backend) -> None:
    if OmegaConf.is_missing(cfg, "checkpoint") or not cfg.checkpoint:
        raise ValueError("checkpoint is not set; expected checkpoint=CHECKPOINT_DIR")
    out_dir = Path(cfg.out_dir)
    with claim(out_dir, "out_dir", "soundstorm-eval", outputs=OUTPUTS, overwrite=cfg.get("overwrite", False),
               enabled=backend.dist.is_main, kept=f"The evaluation is incomplete (metrics.json is written last, so "
               f"{out_dir} holds no metrics.json of this run); every file it wrote is whole.",
               rerun="Fix the cause (free space), then rerun with overwrite=true.") as out:
        metrics = evaluate(cfg, backend, out)
        atomic_write_bytes(out_dir / "metrics.json", json.dumps(metrics, indent=2).encode())
        _log(cfg, metrics, out_dir, backend.dist.is_main)
    headline = {k: metrics[k] for k in ("heldout_level1_accuracy", "unigram_level1_accuracy",
                                        "mel_distance_generated", "mel_distance_random") if k in metrics}
    if "int8_vs_float32" in metrics:
        comparison = metrics["int8_vs_float32"]
        headline["int8_vs_float32"] = {"agreement_per_level": comparison["agreement_per_level"],
                                       "mel_distance_int8_minus_float32": comparison["mel_distance_int8_minus_float32"]}
    print(json.dumps(headline, indent=2))
    if "speech" in metrics:
        print((out_dir / "speech_table.md").read_text())
    print(f"wrote {out_dir / 'metrics.json'}")


# the config groups of its closed schema (soundstorm.cli._hydra)
SECTIONS = ("codec", "semantic", "data", "sampler", "evaluation", "backend", "logger")


@hydra_main("soundstorm-eval", "eval", lambda: cli_schema("eval", SECTIONS))
def main(cfg: DictConfig) -> None:
    run_with_backend("soundstorm-eval", cfg.backend, lambda backend: _evaluate_and_write(cfg, backend))


if __name__ == "__main__":
    main()
