"""Teacher-forced evaluation: per-level masked accuracy and NLL at fixed mask ratios.

For a mask ratio r and a level q, every example masks level q at a fraction r of its frames
(Bernoulli, from a seeded generator), masks all finer levels entirely and keeps coarser levels
visible; no prompt. This is the §3.2 corruption with q and p fixed, so the numbers are comparable
across checkpoints and runs. Sums are returned so several ranks can add theirs before dividing.
The batches are fixed: :func:`heldout_batches` collates epoch-0 windows of the held-out set
(used by ``soundstorm-eval`` and by evaluation during training alike).

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import torch

from soundstorm._checks import frame_mask
from soundstorm.masking import Corruption, mask_level_and_finer, masked_loss


def fixed_corruption(codes_BQT: torch.Tensor, lengths_B: torch.Tensor, level: int, mask_ratio: float,
                     generator: torch.Generator, mask_id: int) -> Corruption:
    """Mask ``level`` at ``mask_ratio`` of the real frames and every finer level at all real frames (the
    §3.2 masking step, :func:`soundstorm.masking.mask_level_and_finer`, with fixed draws and no prompt)."""
    batch_size, _, num_frames = codes_BQT.shape
    device = codes_BQT.device
    valid_BT = frame_mask(lengths_B, batch_size, num_frames, device)
    bernoulli_BT = (torch.rand(batch_size, num_frames, generator=generator) < mask_ratio).to(device)
    # level and ratio as device data (made on the CPU, then moved), not constants of the graph:
    # on XLA one compiled graph then serves every level and ratio
    level_B = torch.full((batch_size,), level, dtype=torch.long).to(device)
    inputs_BQT, loss_mask_BQT = mask_level_and_finer(codes_BQT, level_B, bernoulli_BT, valid_BT, mask_id)
    return Corruption(inputs_BQT, loss_mask_BQT, level_B, torch.zeros_like(level_B),
                      torch.full((batch_size,), float(mask_ratio)).to(device))


def heldout_batches(dataset, batch_size: int, max_batches: int) -> list[dict]:
    """Fixed held-out batches (epoch-0 windows), collated on the CPU."""
    dataset.set_epoch(0)
    batches = []
    for start in range(0, min(len(dataset), batch_size * max_batches), batch_size):
        batches.append(dataset.collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]))
    return batches


@torch.no_grad()
def teacher_forced_sums(model, batches, mask_ratios, seed: int = 0, autocast=None, mark_step=None) -> torch.Tensor:
    """Sums ``[R, 3, Q]`` (rows: NLL sum, correct count, token count) over ``batches`` (on the
    model's device, each with ``codes``, ``semantic``, ``lengths``) for each ratio in ``mask_ratios``.
    ``mark_step`` (``backend.mark_step``) is called after every forward pass: on XLA each pass is one
    graph, reused for every level, ratio and batch of the same shape."""
    q = model.config.num_levels
    device = next(model.parameters()).device
    sums = torch.zeros(len(mask_ratios), 3, q, device=device)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            codes, semantic, lengths = batch["codes"], batch["semantic"], batch["lengths"]
            for r, ratio in enumerate(mask_ratios):
                for level in range(q):
                    corruption = fixed_corruption(codes, lengths, level, ratio, generator, model.config.mask_id)
                    with autocast() if autocast else torch.autocast(device.type, enabled=False):
                        _, m = masked_loss(model, codes, semantic, lengths, corruption)
                    tokens_Q = m["tokens_per_level"].float()
                    sums[r] += torch.stack([m["loss_per_level"].float() * tokens_Q,
                                            m["accuracy_per_level"].float() * tokens_Q, tokens_Q])
                    if mark_step is not None:
                        mark_step()
    finally:
        model.train(was_training)
    return sums


def summarize(sums: torch.Tensor, mask_ratios) -> dict:
    """``{"mask_0.5": {"nll_per_level": [...], "accuracy_per_level": [...], "tokens_per_level": [...]}}``."""
    out = {}
    for r, ratio in enumerate(mask_ratios):
        nll, correct, tokens = sums[r].tolist()
        out[f"mask_{ratio:g}"] = {
            "nll_per_level": [n / t if t else float("nan") for n, t in zip(nll, tokens)],
            "accuracy_per_level": [c / t if t else float("nan") for c, t in zip(correct, tokens)],
            "tokens_per_level": [int(t) for t in tokens],
        }
    return out


def pooled(sums: torch.Tensor) -> dict:
    """One held-out score from the sums ``[R, 3, Q]`` of :func:`teacher_forced_sums`: the masked-token
    NLL (``loss``) and accuracy pooled, token-weighted, over every mask ratio, per level and over all
    levels (as ``train/loss`` pools the training tokens). The single number a sweep can minimise."""
    nll_Q, correct_Q, tokens_Q = sums.sum(dim=0).tolist()
    total = sum(tokens_Q)
    return {"loss": sum(nll_Q) / total if total else float("nan"),
            "accuracy": sum(correct_Q) / total if total else float("nan"),
            "loss_per_level": [n / t if t else float("nan") for n, t in zip(nll_Q, tokens_Q)],
            "accuracy_per_level": [c / t if t else float("nan") for c, t in zip(correct_Q, tokens_Q)]}
