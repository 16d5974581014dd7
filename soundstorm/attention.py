"""Which attention kernel the Conformer runs: Pallas flash attention on TPU, SDPA everywhere else.

``F.scaled_dot_product_attention`` lowers to the math path on XLA, which keeps ``[B, H, T, T]``
scores per layer (at a 30-s window of the paper model: 16 heads × 2250² × 4 bytes ≈ 324 MB per
example and layer, kept for the backward). The Pallas flash kernel of torch_xla
(``torch_xla.experimental.custom_kernel.flash_attention``) never materialises them. Its key
padding mask is expressed with segment ids (a query attends to keys of its own segment: real keys
are segment 1, padding keys 0, every query 1), its scale is given explicitly, and the sequence is
padded to the kernel's block sizes here (padded keys are segment 0, padded queries are cut off).
It has no dropout: with dropout on, SDPA runs instead.

This module never imports torch_xla: the XLA backend passes the kernel in
(:func:`select_attention`), so the model stays importable without it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

# kernel(q_BNTH, k_BNTH, v_BNTH, attend_B11T or None, dropout_p) -> out_BNTH
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, float], torch.Tensor]


def sdpa_attention(q_BNTH, k_BNTH, v_BNTH, attend_B11T, dropout_p: float) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with a boolean key mask (True = attend)."""
    return F.scaled_dot_product_attention(q_BNTH, k_BNTH, v_BNTH, attn_mask=attend_B11T, dropout_p=dropout_p)


def flash_length(num_frames: int) -> int:
    """The sequence length the Pallas kernel runs at: a multiple of 128 up to 512 frames, beyond
    that a multiple of 1024 (its default q/k blocks are 512 and its dq block 1024; each must divide T)."""
    step = 128 if num_frames <= 512 else 1024
    return math.ceil(num_frames / step) * step


class SegmentFlashAttention:
    """An :data:`AttentionFn` over a flash kernel with torch_xla's ``flash_attention`` signature."""

    def __init__(self, kernel: Callable, partition_spec=None, mesh=None):
        self.kernel, self.partition_spec, self.mesh = kernel, partition_spec, mesh

    def __call__(self, q_BNTH, k_BNTH, v_BNTH, attend_B11T, dropout_p: float) -> torch.Tensor:
        if dropout_p:
            return sdpa_attention(q_BNTH, k_BNTH, v_BNTH, attend_B11T, dropout_p)
        batch_size, _, num_frames, head_dim = q_BNTH.shape
        if attend_B11T is None:
            valid_BT = torch.ones(batch_size, num_frames, dtype=torch.bool, device=q_BNTH.device)
        else:
            valid_BT = attend_B11T.reshape(batch_size, num_frames)
        pad = flash_length(num_frames) - num_frames
        if pad:
            q_BNTH, k_BNTH, v_BNTH = (F.pad(x, (0, 0, 0, pad)) for x in (q_BNTH, k_BNTH, v_BNTH))
            valid_BT = F.pad(valid_BT, (0, pad), value=False)
        kv_segment_BT = valid_BT.to(torch.float32)
        q_segment_BT = torch.ones_like(kv_segment_BT)
        kwargs = {} if self.partition_spec is None else {"partition_spec": self.partition_spec, "mesh": self.mesh}
        out_BNTH = self.kernel(q_BNTH, k_BNTH, v_BNTH, causal=False, q_segment_ids=q_segment_BT,
                               kv_segment_ids=kv_segment_BT, sm_scale=head_dim ** -0.5, **kwargs)
        return out_BNTH[:, :, :num_frames]


def select_attention(device_kind: str, load_flash_kernel: Callable[[], Callable | None],
                     partition_spec=None, mesh=None) -> tuple[str, AttentionFn]:
    """``("pallas_flash", fn)`` on a TPU whose torch_xla provides the kernel, else ``("sdpa", sdpa_attention)``.

    ``load_flash_kernel()`` returns the kernel or None (a guarded import); it is only called on TPU.
    """
    if device_kind.upper().startswith("TPU"):
        kernel = load_flash_kernel()
        if kernel is not None:
            return "pallas_flash", SegmentFlashAttention(kernel, partition_spec, mesh)
    return "sdpa", sdpa_attention
