"""Training glue of the text-to-semantic stage for SoundStorm's :class:`~soundstorm.train.loop.Trainer`.

:class:`T2SLoss` is the loss module the trainer calls (summed masked cross-entropy plus the length
loss, per-"level" metrics with one level: the semantic tokens); :class:`T2SEvaluator` scores the
held-out utterances at fixed mask ratios (token loss and accuracy) and the length predictor's
relative error, all-reduced across ranks.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import torch
from torch import nn

from soundstorm.t2s.batch import TARGET
from soundstorm.t2s.data import T2SCollate

BATCH_KEYS = ("tokens", "segment", "progress", "lengths", "context", "target_frames", "inputs", "loss_mask",
              "aligned", "durations", "has_durations")


class T2SLoss(nn.Module):
    """``model.loss`` as a module (DDP needs ``forward``); returns the loss × tokens and level metrics."""

    batch_keys = BATCH_KEYS
    num_levels = 1
    extra_metrics = ("length_loss", "duration_loss")  # logged as train/length_loss, train/duration_loss

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *tensors):
        loss, m = self.model.loss(**dict(zip(BATCH_KEYS, tensors)))
        metrics = {"loss_per_level": m["token_loss"].detach()[None],
                   "accuracy_per_level": m["token_accuracy"].detach()[None],
                   "tokens_per_level": m["num_tokens"][None], "num_tokens": m["num_tokens"],
                   "extra": torch.stack([m[name].detach().float() for name in self.extra_metrics])}
        return loss * m["num_tokens"], metrics


class T2SEvaluator:
    """``evaluate(model, step) -> metrics`` on fixed held-out batches, every rank its share."""

    def __init__(self, backend, dataset, section, batch_size: int):
        self.backend, self.section = backend, section
        dataset.set_epoch(0)
        collate = T2SCollate(section.seed, 0, dataset.tokens.manifest.semantic["vocab_size"])
        limit = min(len(dataset), batch_size * section.max_batches)
        batches = [collate([(i, dataset[i]) for i in range(s, min(s + batch_size, limit))])
                   for s in range(0, limit, batch_size)]
        info = backend.dist
        self.batches = batches[info.rank::info.world_size]
        self.mask_id = int(dataset.tokens.manifest.semantic["vocab_size"])
        # the best constant guess on these targets: what a model that ignores the text would score
        targets = torch.cat([b["tokens"][b["segment"] == TARGET] for b in batches])
        self.unigram_accuracy = float(torch.bincount(targets).max()) / max(targets.numel(), 1)

    @torch.no_grad()
    def __call__(self, model, step: int) -> dict:
        ratios = [float(r) for r in self.section.mask_ratios]
        sums = torch.zeros(3 * len(ratios) + 2, device=self.backend.device)
        for batch in self.batches:
            for r, ratio in enumerate(ratios):
                masked = dict(batch, **self._mask_at(batch, ratio))
                tensors = self.backend.to_device({k: masked[k] for k in BATCH_KEYS})
                with self.backend.autocast():
                    _, m = model.loss(**tensors)
                sums[3 * r: 3 * r + 3] += torch.stack([m["token_loss"] * m["num_tokens"],
                                                       m["token_accuracy"] * m["num_tokens"], m["num_tokens"]]).float()
            num_examples = float(batch["tokens"].shape[0])
            sums[-2:] += torch.stack([m["length_abs_rel_error"].float() * num_examples,
                                      torch.tensor(num_examples, device=sums.device)])
        values = self.backend.all_reduce_sum(sums).tolist()
        metrics = {}
        for r, ratio in enumerate(ratios):
            loss_sum, correct_sum, tokens = values[3 * r: 3 * r + 3]
            name = f"eval/mask_{ratio:g}".replace(".", "p")
            metrics[f"{name}/token_nll"] = loss_sum / max(tokens, 1.0)
            metrics[f"{name}/token_accuracy"] = correct_sum / max(tokens, 1.0)
        metrics["eval/length_abs_rel_error"] = values[-2] / max(values[-1], 1.0)
        metrics["eval/unigram_token_accuracy"] = self.unigram_accuracy
        return metrics

    def _mask_at(self, batch: dict, ratio: float) -> dict:
        """Mask a fixed ``ratio`` of each example's targets (at least one), drawn from ``evaluation.seed``."""
        generator = torch.Generator().manual_seed(self.section.seed)
        target_BL = batch["segment"] == TARGET
        scores_BL = torch.rand(target_BL.shape, generator=generator).masked_fill(~target_BL, 2.0)
        num_masked_B = (target_BL.sum(dim=1) * ratio).ceil().clamp(min=1)
        rank_BL = scores_BL.argsort(dim=1).argsort(dim=1)
        loss_mask_BL = target_BL & (rank_BL < num_masked_B[:, None])
        return {"inputs": torch.where(loss_mask_BL, self.mask_id, batch["tokens"]), "loss_mask": loss_mask_BL}
