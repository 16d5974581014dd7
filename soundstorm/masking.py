"""Paper §3.2 in one place: the training corruption, its per-example keyed form, and the masked loss.

Shape letters: see :mod:`soundstorm` (B batch, Q levels, T frames, S semantic ids, V vocab, D dim).

Per example b, with T_b real frames and Q levels:

1. a prompt delimiter ``t_b ~ U{0, T_b - 1}``: the first ``t_b`` frames stay visible at every level
   (``prompt_len``; 0 means no prompt);
2. a level ``q_b ~ U{0, Q - 1}`` (0-based; the paper's 1..Q), or, when ``level_weights`` is given,
   ``P(q_b = q) ∝ level_weights[q]`` (a departure from the paper for short runs: see :func:`corrupt`);
3. a mask ratio ``p_b = cos(u_b)``, ``u_b ~ U[0, π/2]``, and ``M_bt ~ Bernoulli(p_b)`` i.i.d. over frames;
4. level ``q_b`` is masked where ``M_bt = 1`` and ``t >= t_b``; every level finer than ``q_b`` is
   masked at all frames ``t >= t_b``; coarser levels are left visible (they condition level q);
5. the loss counts only the masked tokens of level ``q_b`` (``loss_mask``).

Everything has fixed shapes and no host syncs, so it runs inside a compiled training step.
Padding frames (``t >= T_b``) are never in ``loss_mask``.

:func:`corrupt` draws a whole batch from one generator. :func:`corrupt_batch` (what training runs,
in the DataLoader's collate) corrupts each example on its own real frames with a generator keyed by
``(seed, epoch, dataset index)`` (:func:`example_key`), so DDP ranks on half a batch each produce
exactly the masks of one process on the whole batch, resuming needs no masking RNG state, and the
padded length of a batch never changes an example's masks.

:func:`masked_loss` is the objective for a given :class:`Corruption`: the cross-entropy over the
masked tokens of each example's level, plus per-level metrics; ``SoundStorm.loss`` and the trainer
both call it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from soundstorm._checks import check_int_tensor, check_lengths, check_mask_id, check_range, frame_mask


@dataclass
class Corruption:
    """One §3.2 corruption of a batch (from :func:`corrupt` or :func:`corrupt_batch`); every field is set.

    inputs: ``[B, Q, T]`` codes with masked positions set to ``mask_id``.
    loss_mask: ``[B, Q, T]`` bool, True exactly on the masked tokens of each example's level.
    level: ``[B]`` long, the trained level (0-based).
    prompt_len: ``[B]`` long, frames kept visible at every level.
    mask_ratio: ``[B]`` float, the Bernoulli probability ``cos(u)`` drawn for each example.
    """

    inputs: torch.Tensor
    loss_mask: torch.Tensor
    level: torch.Tensor
    prompt_len: torch.Tensor
    mask_ratio: torch.Tensor


def corrupt(
    codes: torch.Tensor,
    lengths: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    *,
    mask_id: int,
    validate: bool = True,
    level_weights: torch.Tensor | None = None,
) -> Corruption:
    """Apply the paper's masking to ``codes`` ``[B, Q, T]``; see the module docstring.

    ``lengths`` ``[B]`` gives the real frames per example (default: all ``T``). ``mask_id`` is the
    id a masked position holds (the model uses ``codebook_size``); every code must lie below it.
    Random draws come from ``generator`` (on the codes' device) so results are reproducible.
    ``validate=False`` skips the range checks of ``codes`` and ``lengths`` (they read values to the
    host) inside a compiled training step.

    ``level_weights`` ``[Q]`` (None: uniform, the paper): relative probabilities of training each level.
    Why: every level gets 1/Q of the examples under the paper's rule, so in a run of a few thousand
    steps the coarse level, which carries most of what a listener hears and has the highest loss,
    gets too few of them. The draw uses the same uniform number, so the other draws are unchanged.
    """
    check_mask_id(mask_id)
    codes_BQT = check_int_tensor("codes", codes, 3, "[B, Q, T]")
    if validate:
        check_range("codes", codes_BQT, 0, mask_id)
    batch_size, num_levels, num_frames = codes_BQT.shape
    if num_frames < 1 or num_levels < 1:
        raise ValueError(f"codes must have at least one level and one frame, got shape {tuple(codes_BQT.shape)}")
    device = codes_BQT.device
    if lengths is None:
        lengths_B = torch.full((batch_size,), num_frames, dtype=torch.long, device=device)
    else:
        if validate:
            lengths = check_lengths(lengths, batch_size, num_frames)
        lengths_B = lengths.to(device=device, dtype=torch.long)

    def uniform(*shape):
        return torch.rand(*shape, generator=generator, device=device)

    # 1. prompt delimiter t ~ U{0, T_b - 1}
    prompt_len_B = (uniform(batch_size) * lengths_B).long().clamp(max=lengths_B - 1)
    # 2. level q ~ U{0, Q - 1}
    if level_weights is None:
        level_B = (uniform(batch_size) * num_levels).long().clamp(max=num_levels - 1)
    else:
        # validate=False (inside a compiled step): no host reads; the builder checked the weights already
        weights_Q = check_level_weights(level_weights, num_levels) if validate else torch.as_tensor(level_weights)
        cdf_Q = torch.cumsum(weights_Q.to(device=device, dtype=torch.float32), 0)  # float32: TPUs have no float64
        level_B = torch.searchsorted(cdf_Q, uniform(batch_size) * cdf_Q[-1], right=True).clamp(max=num_levels - 1)
    # 3. p = cos(u), u ~ U[0, pi/2]; M ~ Bernoulli(p) over frames
    mask_ratio_B = torch.cos(uniform(batch_size) * (math.pi / 2))
    bernoulli_BT = uniform(batch_size, num_frames) < mask_ratio_B[:, None]

    frames_T = torch.arange(num_frames, device=device)
    after_prompt_BT = (frames_T[None, :] >= prompt_len_B[:, None]) & frame_mask(lengths_B, batch_size, num_frames, device)
    inputs_BQT, loss_mask_BQT = mask_level_and_finer(codes_BQT, level_B, bernoulli_BT, after_prompt_BT, mask_id)
    return Corruption(inputs_BQT, loss_mask_BQT, level_B, prompt_len_B, mask_ratio_B)


def mask_level_and_finer(codes_BQT: torch.Tensor, level_B: torch.Tensor, bernoulli_BT: torch.Tensor,
                         region_BT: torch.Tensor, mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 4–5 of §3.2, given the draws: ``(inputs_BQT, loss_mask_BQT)``. Within ``region_BT`` (after the
    prompt, on real frames) level ``q`` is masked where ``M = 1`` and every finer level everywhere; the loss
    is on the masked tokens of level ``q`` only. Teacher-forced evaluation calls this with its fixed draws."""
    levels_Q = torch.arange(codes_BQT.shape[1], device=codes_BQT.device)
    is_level_BQ = levels_Q[None, :] == level_B[:, None]
    is_finer_BQ = levels_Q[None, :] > level_B[:, None]
    loss_mask_BQT = is_level_BQ[:, :, None] & (bernoulli_BT & region_BT)[:, None, :]
    masked_BQT = loss_mask_BQT | (is_finer_BQ[:, :, None] & region_BT[:, None, :])
    return torch.where(masked_BQT, torch.full_like(codes_BQT, mask_id), codes_BQT), loss_mask_BQT


_MASK64 = (1 << 63) - 1


def example_key(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one example in one epoch (splitmix-style mixing of the three integers)."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + int(index) * 0x94D049BB133111EB)
    x &= (1 << 64) - 1
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    x ^= x >> 29
    return x & _MASK64


def check_level_weights(level_weights, num_levels: int, field: str = "level_weights") -> torch.Tensor:
    """``level_weights`` as a float64 ``[Q]`` tensor; a ValueError naming ``field`` unless it holds
    ``num_levels`` finite, non-negative numbers with a positive sum."""
    try:
        weights_Q = torch.as_tensor(level_weights, dtype=torch.float64).flatten()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{field}={level_weights!r} must be a list of {num_levels} numbers (one per level)") from err
    if weights_Q.numel() != num_levels or not bool(torch.isfinite(weights_Q).all()) \
            or bool((weights_Q < 0).any()) or not float(weights_Q.sum()) > 0:
        raise ValueError(f"{field}={list(map(float, weights_Q.tolist()))} must hold {num_levels} finite, non-negative "
                         f"numbers (one per level) with a positive sum")
    return weights_Q


def corrupt_batch(codes_BQT: torch.Tensor, lengths_B: torch.Tensor, indices_B: list[int], seed: int, epoch: int,
                  mask_id: int, level_weights: torch.Tensor | None = None) -> Corruption:
    """Corrupt each example on its real frames with a generator keyed by ``(seed, epoch, index)``;
    ``level_weights`` as in :func:`corrupt`.

    Returns a CPU :class:`Corruption` of the padded batch; padding frames keep their values and are
    never in ``loss_mask``."""
    batch_size, num_levels, num_frames = codes_BQT.shape
    if len(indices_B) != batch_size:
        raise ValueError(f"indices has {len(indices_B)} entries, expected one per example (batch {batch_size})")
    out = Corruption(codes_BQT.clone(), torch.zeros(codes_BQT.shape, dtype=torch.bool),
                     torch.zeros(batch_size, dtype=torch.long), torch.zeros(batch_size, dtype=torch.long),
                     torch.zeros(batch_size, dtype=torch.float32))
    for b in range(batch_size):
        length = int(lengths_B[b])
        generator = torch.Generator().manual_seed(example_key(seed, epoch, indices_B[b]))
        c = corrupt(codes_BQT[b:b + 1, :, :length], None, generator, mask_id=mask_id, level_weights=level_weights)
        out.inputs[b, :, :length] = c.inputs[0]
        out.loss_mask[b, :, :length] = c.loss_mask[0]
        out.level[b], out.prompt_len[b], out.mask_ratio[b] = c.level[0], c.prompt_len[0], c.mask_ratio[0]
    return out


def masked_loss(model, codes_BQT: torch.Tensor, semantic_BS: torch.Tensor, lengths_B: torch.Tensor | None,
                corruption: Corruption, *, loss_tokens_only: bool = False) -> tuple[torch.Tensor, dict]:
    """Masked cross-entropy of ``model`` on ``corruption`` of clean ``codes_BQT``.

    Only the head of each example's level is computed. Returns ``(loss, metrics)``: the mean over the
    loss tokens, and tensors ``loss_per_level [Q]``, ``accuracy_per_level [Q]``, ``tokens_per_level [Q]``
    (a level no example drew has 0 tokens and a NaN-free 0), ``accuracy`` and ``num_tokens``.

    By default every frame's logits are computed and the loss tokens weighted in: fixed shapes and no
    host sync, which a compiled (XLA) or graph-captured (CUDA) step needs. ``loss_tokens_only=True``
    computes the head, its softmax and the argmax only at the loss tokens (about a third of the frames
    under the §3.2 draw), grouped by level: the same loss and gradient up to float summation order,
    with shapes that depend on the mask. Where tensors live on the host (the CPU trainer) that costs
    nothing, and it saves about a tenth of the CPU quickstart's step (docs/quickstart.md).
    """
    if loss_tokens_only:
        return _loss_on_loss_tokens(model, codes_BQT, semantic_BS, lengths_B, corruption)
    logits_BTV = model(corruption.inputs, semantic_BS, lengths_B, level=corruption.level, validate=False).float()
    level_onehot_BQ = F.one_hot(corruption.level, codes_BQT.shape[1]).to(logits_BTV.dtype)
    targets_BT = (codes_BQT * level_onehot_BQ.long()[:, :, None]).sum(dim=1)
    weight_BT = (corruption.loss_mask.to(logits_BTV.dtype) * level_onehot_BQ[:, :, None]).sum(dim=1)
    ce_BT = F.cross_entropy(logits_BTV.transpose(1, 2), targets_BT, reduction="none")
    correct_BT = (logits_BTV.argmax(dim=-1) == targets_BT).to(logits_BTV.dtype)
    num_tokens = weight_BT.sum()
    loss = (ce_BT * weight_BT).sum() / num_tokens.clamp(min=1.0)
    # Per-level sums: every example contributes to its own level only.
    tokens_Q = level_onehot_BQ.t() @ weight_BT.sum(dim=1)
    ce_sum_Q = level_onehot_BQ.t() @ (ce_BT * weight_BT).sum(dim=1)
    correct_sum_Q = level_onehot_BQ.t() @ (correct_BT * weight_BT).sum(dim=1)
    metrics = {
        "loss_per_level": ce_sum_Q / tokens_Q.clamp(min=1.0),
        "accuracy_per_level": correct_sum_Q / tokens_Q.clamp(min=1.0),
        "tokens_per_level": tokens_Q,
        "accuracy": (correct_BT * weight_BT).sum() / num_tokens.clamp(min=1.0),
        "num_tokens": num_tokens,
    }
    return loss, metrics


def _loss_on_loss_tokens(model, codes_BQT: torch.Tensor, semantic_BS: torch.Tensor, lengths_B: torch.Tensor | None,
                         corruption: Corruption) -> tuple[torch.Tensor, dict]:
    """:func:`masked_loss` with the head computed only on the N loss tokens (``loss_tokens_only``)."""
    num_levels = codes_BQT.shape[1]
    hidden_BTD = model.hidden(corruption.inputs, semantic_BS, lengths_B)
    level_B1T = corruption.level[:, None, None].expand(-1, 1, codes_BQT.shape[2])
    scored_BT = corruption.loss_mask.gather(1, level_B1T)[:, 0]  # the loss tokens of each example's level
    batch_N, frame_N = scored_BT.nonzero(as_tuple=True)
    hidden_ND = hidden_BTD[batch_N, frame_N]
    targets_N = codes_BQT.gather(1, level_B1T)[:, 0][batch_N, frame_N]
    level_N = corruption.level[batch_N]
    ce_parts, correct_parts, level_parts = [], [], []
    for level in level_N.unique().tolist():  # one dense head per level drawn
        rows_M = (level_N == level).nonzero(as_tuple=True)[0]
        logits_MV = model.token_logits(hidden_ND[rows_M], level).float()
        ce_parts.append(F.cross_entropy(logits_MV, targets_N[rows_M], reduction="none"))
        correct_parts.append((logits_MV.argmax(dim=-1) == targets_N[rows_M]).float())
        level_parts.append(level_N[rows_M])
    if not ce_parts:  # no loss token: a zero loss that still reaches every weight, as the default path's does
        zero = (hidden_BTD.float().sum() + model.head_weight.sum() + model.head_bias.sum()) * 0.0
        ce_parts, correct_parts, level_parts = [zero[None][:0]], [zero.detach()[None][:0]], [level_N]
    ce_N, correct_N, level_N = torch.cat(ce_parts), torch.cat(correct_parts), torch.cat(level_parts)
    num_tokens = ce_N.new_tensor(float(ce_N.shape[0]))
    loss = ce_N.sum() / num_tokens.clamp(min=1.0)
    tokens_Q = ce_N.new_zeros(num_levels).index_add(0, level_N, torch.ones_like(correct_N))
    ce_sum_Q = ce_N.new_zeros(num_levels).index_add(0, level_N, ce_N)
    correct_sum_Q = ce_N.new_zeros(num_levels).index_add(0, level_N, correct_N)
    metrics = {
        "loss_per_level": ce_sum_Q / tokens_Q.clamp(min=1.0),
        "accuracy_per_level": correct_sum_Q / tokens_Q.clamp(min=1.0),
        "tokens_per_level": tokens_Q,
        "accuracy": correct_N.sum() / num_tokens.clamp(min=1.0),
        "num_tokens": num_tokens,
    }
    return loss, metrics
