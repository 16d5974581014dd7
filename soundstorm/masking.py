"""The SoundStorm training corruption (paper §3.2), as a pure, vectorised function.

Per example b, with T_b real frames and Q levels:

1. a prompt delimiter ``t_b ~ U{0, T_b - 1}``: the first ``t_b`` frames stay visible at every level
   (``prompt_len``; 0 means no prompt);
2. a level ``q_b ~ U{0, Q - 1}`` (0-based; the paper's 1..Q);
3. a mask ratio ``p_b = cos(u_b)``, ``u_b ~ U[0, π/2]``, and ``M_bt ~ Bernoulli(p_b)`` i.i.d. over frames;
4. level ``q_b`` is masked where ``M_bt = 1`` and ``t >= t_b``; every level finer than ``q_b`` is
   masked at all frames ``t >= t_b``; coarser levels are left visible (they condition level q);
5. the loss counts only the masked tokens of level ``q_b`` (``loss_mask``).

Everything has fixed shapes and no host syncs, so it runs inside a compiled training step.
Padding frames (``t >= T_b``) are never in ``loss_mask``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from soundstorm._checks import check_int_tensor, check_lengths, frame_mask


@dataclass
class Corruption:
    """Output of :func:`corrupt`.

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
) -> Corruption:
    """Apply the paper's masking to ``codes`` ``[B, Q, T]``; see the module docstring.

    ``lengths`` ``[B]`` gives the real frames per example (default: all ``T``). ``mask_id`` is the
    id a masked position holds (the model uses ``codebook_size``). Random draws come from
    ``generator`` (on the codes' device) so results are reproducible. ``validate=False`` skips the
    range check of ``lengths`` (it reads values to the host) inside a compiled training step.
    """
    codes_BQT = check_int_tensor("codes", codes, 3, "[B, Q, T]")
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
    level_B = (uniform(batch_size) * num_levels).long().clamp(max=num_levels - 1)
    # 3. p = cos(u), u ~ U[0, pi/2]; M ~ Bernoulli(p) over frames
    mask_ratio_B = torch.cos(uniform(batch_size) * (math.pi / 2))
    bernoulli_BT = uniform(batch_size, num_frames) < mask_ratio_B[:, None]

    frames_T = torch.arange(num_frames, device=device)
    after_prompt_BT = (frames_T[None, :] >= prompt_len_B[:, None]) & frame_mask(lengths_B, batch_size, num_frames, device)
    levels_Q = torch.arange(num_levels, device=device)
    is_level_BQ = levels_Q[None, :] == level_B[:, None]
    is_finer_BQ = levels_Q[None, :] > level_B[:, None]

    # 4. mask level q where M=1 after the prompt, and every finer level after the prompt
    loss_mask_BQT = is_level_BQ[:, :, None] & (bernoulli_BT & after_prompt_BT)[:, None, :]
    masked_BQT = loss_mask_BQT | (is_finer_BQ[:, :, None] & after_prompt_BT[:, None, :])
    inputs_BQT = torch.where(masked_BQT, torch.full_like(codes_BQT, mask_id), codes_BQT)
    return Corruption(inputs_BQT, loss_mask_BQT, level_B, prompt_len_B, mask_ratio_B)
