"""Packed text-to-semantic sequences: ``[text | prompt | target]`` per example, padded into a batch.

The text-to-semantic model reads one sequence per example: the text's symbol ids (N), then an
optional voice prompt of the speaker's semantic tokens (P, from another utterance; it carries the
speaker's voice and pace, not the content), then the target semantic tokens (S), masked in part
while training and wholly at the start of generation. Each position has a segment id and, for the
text and the target, its *progress* ``(i + ½) / length``: a position feature that lets attention
align the k-th tenth of the target with the k-th tenth of the text without any duration model, so
nothing here assumes phone-like tokens. Padding follows the last target token.

With per-symbol durations (:mod:`soundstorm.t2s.align`; an aligned model's training data and its
duration predictor at generation), the batch also holds, per target position, the id of the text
symbol it is aligned to (``aligned_BL``, 0 elsewhere), and per text position its duration in frames
(``durations_BL``, the duration predictor's training target, 0 elsewhere).

:func:`mask_targets` is the training corruption (MaskGIT/MaskGCT: ratio ``cos(u)``, ``u ~ U[0, π/2]``,
i.i.d. over target positions, at least one), keyed per example so that data order and resumes
reproduce it.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

TEXT, PROMPT, TARGET, PAD = 0, 1, 2, 3


def pack(text_ids: Sequence[Sequence[int]], prompts: Sequence[torch.Tensor | None],
         targets: Sequence[torch.Tensor | int], mask_id: int,
         durations: Sequence[Sequence[int] | None] | None = None) -> dict:
    """Batch of packed sequences.

    ``targets[b]`` is either the target semantic tokens ``[S_b]`` or a number of frames ``S_b``
    (then every target position holds ``mask_id``; 0 gives the text and prompt only, which is what
    the length predictor reads). ``durations[b]``, when given, is ``[N_b]`` frames per text symbol
    summing to ``S_b``. Returns ``tokens_BL``, ``segment_BL``, ``progress_BL``, ``aligned_BL``,
    ``durations_BL``, ``has_durations_B``, ``lengths_B`` (N + P + S), ``context_B`` (N + P) and ``target_frames_B`` (S).
    """
    if not (len(text_ids) == len(prompts) == len(targets)) or not text_ids:
        raise ValueError(f"pack needs as many texts, prompts and targets (>= 1), got {len(text_ids)}, "
                         f"{len(prompts)}, {len(targets)}")
    if durations is None:
        durations = [None] * len(text_ids)
    if len(durations) != len(text_ids):
        raise ValueError(f"pack got {len(durations)} duration lists for {len(text_ids)} texts")
    parts = []
    for ids, prompt, target in zip(text_ids, prompts, targets):
        text_N = torch.as_tensor(list(ids), dtype=torch.long)
        if text_N.numel() == 0:
            raise ValueError("every text must have at least one symbol")
        prompt_P = torch.zeros(0, dtype=torch.long) if prompt is None else prompt.reshape(-1).long().cpu()
        if isinstance(target, torch.Tensor):
            target_S = target.reshape(-1).long().cpu()
        else:
            target_S = torch.full((int(target),), mask_id, dtype=torch.long)
        parts.append((text_N, prompt_P, target_S))
    num_positions = max(sum(p.numel() for p in part) for part in parts)
    batch_size = len(parts)
    tokens_BL = torch.zeros(batch_size, num_positions, dtype=torch.long)
    segment_BL = torch.full((batch_size, num_positions), PAD, dtype=torch.long)
    progress_BL = torch.zeros(batch_size, num_positions)
    aligned_BL = torch.zeros(batch_size, num_positions, dtype=torch.long)
    durations_BL = torch.zeros(batch_size, num_positions)
    has_durations_B = torch.tensor([d is not None for d in durations])
    lengths, context, frames = [], [], []
    for b, (text_N, prompt_P, target_S) in enumerate(parts):
        if durations[b] is not None:
            duration_N = torch.as_tensor(list(durations[b]), dtype=torch.long)
            if duration_N.shape != text_N.shape or int(duration_N.min()) < 0 \
                    or int(duration_N.sum()) != target_S.numel():
                raise ValueError(f"durations[{b}] must hold {text_N.numel()} non-negative frame counts summing to "
                                 f"the {target_S.numel()} target frames, got {duration_N.tolist()}")
            durations_BL[b, : text_N.numel()] = duration_N.float()
            aligned_start = text_N.numel() + prompt_P.numel()
            aligned_BL[b, aligned_start: aligned_start + target_S.numel()] = torch.repeat_interleave(text_N, duration_N)
        start = 0
        for segment, values in ((TEXT, text_N), (PROMPT, prompt_P), (TARGET, target_S)):
            end = start + values.numel()
            tokens_BL[b, start:end] = values
            segment_BL[b, start:end] = segment
            if segment != PROMPT and values.numel():
                progress_BL[b, start:end] = (torch.arange(values.numel()) + 0.5) / values.numel()
            start = end
        lengths.append(start)
        context.append(text_N.numel() + prompt_P.numel())
        frames.append(target_S.numel())
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return {"tokens": tokens_BL, "segment": segment_BL, "progress": progress_BL, "aligned": aligned_BL,
            "durations": durations_BL, "has_durations": has_durations_B, "lengths": as_long(lengths),
            "context": as_long(context), "target_frames": as_long(frames)}


def mask_targets(batch: dict, keys: Sequence[Sequence[int]], mask_id: int) -> dict:
    """Training inputs: ``inputs_BL`` (target positions masked at ratio cos(u)) and ``loss_mask_BL``.

    ``keys[b]`` seeds example b's draw (e.g. ``(seed, epoch, dataset index)``).
    """
    tokens_BL, segment_BL = batch["tokens"], batch["segment"]
    loss_mask_BL = torch.zeros_like(tokens_BL, dtype=torch.bool)
    for b, key in enumerate(keys):
        rng = np.random.default_rng([int(k) for k in key])
        target_L = (segment_BL[b] == TARGET).numpy()
        positions = np.flatnonzero(target_L)
        if positions.size == 0:
            continue
        ratio = math.cos(rng.uniform(0.0, math.pi / 2))
        chosen = rng.random(positions.size) < ratio
        if not chosen.any():
            chosen[rng.integers(positions.size)] = True
        loss_mask_BL[b, torch.from_numpy(positions[chosen])] = True
    return {"inputs": torch.where(loss_mask_BL, torch.full_like(tokens_BL, mask_id), tokens_BL),
            "loss_mask": loss_mask_BL}
