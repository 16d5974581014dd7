"""Evaluation during training: teacher-forced metrics on every rank, audio examples on rank 0.

Logged names: ``eval/mask_<r>/{nll,accuracy}_level<q>`` per mask ratio r, and ``eval/loss``,
``eval/accuracy``, ``eval/{loss,accuracy}_level<q>`` pooled over the ratios (the default sweep
objective, ``sweep_objective: eval/loss``); ``eval/gen_*`` from generation on rank 0.

Every rank scores its share of the fixed held-out batches (teacher-forced, :mod:`soundstorm.
evaluation.teacher_forced`) and the sums are all-reduced, so no rank waits on work it does not do.
Rank 0 then generates a few held-out utterances, decodes them with the codec and logs audio and
spectrograms; the other ranks wait at a barrier (a short wait: ``evaluation.max_utterances`` is small).
"""

from __future__ import annotations

from pathlib import Path

from soundstorm.evaluation.config import EvaluationConfig
from soundstorm.evaluation.generation import GenerationEvaluator
from soundstorm.evaluation.teacher_forced import heldout_batches, pooled, summarize, teacher_forced_sums
from soundstorm.paths import output_dir


class TrainingEvaluator:
    """``evaluate(model, step) -> metrics``; called by the trainer on every rank."""

    def __init__(self, backend, dataset, config: EvaluationConfig, batch_size: int, codec_factory, sampler_config,
                 logger, out_dir):
        self.backend, self.config, self.logger = backend, config, logger
        info = backend.dist
        self.batches = heldout_batches(dataset, batch_size, config.max_batches)[info.rank::info.world_size]
        self.dataset, self.codec_factory, self.codec = dataset, codec_factory, None
        self.sampler_config, self.out_dir = sampler_config, Path(out_dir)

    def __call__(self, model, step: int) -> dict:
        ratios = list(self.config.mask_ratios)
        batches = (self.backend.to_device({k: b[k] for k in ("codes", "semantic", "lengths")}) for b in self.batches)
        sums = teacher_forced_sums(model, batches, ratios, self.config.seed, self.backend.autocast,
                                   self.backend.mark_step)
        sums = self.backend.all_reduce_sum(sums)
        summary = summarize(sums, ratios)
        # eval/loss, eval/accuracy and their per-level lists: pooled over the mask ratios (a sweep's objective)
        metrics = {f"eval/{name}": value for name, value in pooled(sums).items()}
        for name, values in summary.items():
            metrics[f"eval/{name}/nll_per_level"] = values["nll_per_level"]
            metrics[f"eval/{name}/accuracy_per_level"] = values["accuracy_per_level"]
        if self.backend.dist.is_main and self.config.max_utterances > 0:
            metrics.update(self._generate(model, step))
        self.backend.barrier()
        return metrics

    def _generate(self, model, step: int) -> dict:
        if self.codec is None:
            self.codec = self.codec_factory()
        utterances = [self.dataset.utterance(i) for i in range(min(len(self.dataset), self.config.max_utterances))]
        out_dir = output_dir(self.out_dir, "eval", f"step_{step:08d}")
        result = GenerationEvaluator(model, self.codec, self.sampler_config, self.config,
                                     mark_step=self.backend.mark_step).run(utterances, out_dir)
        examples = out_dir / "examples"
        audio = {}
        if examples.is_dir():
            import soundfile as sf

            audio = {f"audio/{p.stem}": sf.read(str(p), dtype="float32")[0] for p in sorted(examples.glob("*.wav"))}
            images = {f"spectrogram/{p.stem}": p for p in sorted(examples.glob("*.png"))}
            if self.logger is not None:
                self.logger.log_media(step, audio, images, self.codec.sample_rate)
        return {"eval/gen_level1_accuracy": result["heldout_level1_accuracy"],
                "eval/gen_mel_distance": result["mel_distance_generated"],
                "eval/random_mel_distance": result["mel_distance_random"]}
