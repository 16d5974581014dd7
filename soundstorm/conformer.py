"""The bidirectional Conformer backbone of SoundStorm (paper §3.1; Gulati et al. 2020).

Each block is: ½ feed-forward → self-attention with rotary positions → convolution module →
½ feed-forward → LayerNorm ("Macaron" layout). Two details matter for batching sequences of
different lengths, and both are tested:

* attention uses a key padding mask, so real frames never attend to padding;
* padded frames are zeroed right before the depthwise convolution, so the kernel cannot carry
  padding into the real frames next to it. The convolution module normalises with LayerNorm, not
  BatchNorm, so no statistic is shared across the batch either.

Together they make a sequence's outputs independent of how much padding it is batched with.
The attention kernel (SDPA, or Pallas flash attention on TPU: :mod:`soundstorm.attention`) and
activation checkpointing of whole blocks are chosen by the caller (:meth:`Conformer.configure`).

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from soundstorm.attention import sdpa_attention


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021) with cos/sin tables cached per length."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got head_dim={head_dim}")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, num_frames: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos_TH, sin_TH)`` for positions ``0..num_frames-1`` (H = head dim).

        Eager: computed on the host once per (length, device, dtype) and cached, so on XLA the
        tables are device data, not part of a graph. Under ``torch.compile`` they are computed in
        the graph from the ``inv_freq`` buffer (the same float32 formula): no Python dict is read
        or written inside the compiled region, so nothing guards on it and a second clip of the
        same length reuses the compiled graph.
        """
        if torch.compiler.is_compiling():
            return self._compute(torch.arange(num_frames, dtype=torch.float32, device=self.inv_freq.device),
                                 self.inv_freq, device, dtype)
        key = (num_frames, str(device), dtype)
        if key not in self._cache:
            positions_T = torch.arange(num_frames, dtype=torch.float32)
            self._cache[key] = self._compute(positions_T, self.inv_freq.detach().cpu(), device, dtype)
        return self._cache[key]

    @staticmethod
    def _compute(positions_T, inv_freq_H2, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        angles_TH2 = positions_T[:, None] * inv_freq_H2[None, :]
        angles_TH = torch.cat([angles_TH2, angles_TH2], dim=-1)
        return angles_TH.cos().to(device, dtype), angles_TH.sin().to(device, dtype)

    @staticmethod
    def rotate(x_BNTH: torch.Tensor, cos_TH: torch.Tensor, sin_TH: torch.Tensor) -> torch.Tensor:
        """``x·cos + rotate_half(x)·sin``, one half at a time.

        Eager without autograd, both halves are written into one preallocated output (no cat, no
        neg); with autograd or under ``torch.compile`` (where ``out=`` writes and
        ``torch.result_type`` would break the graph) the halves are concatenated. Both forms are
        bit-identical to the textbook one: ``a + (-b)·s`` equals ``a - b·s`` in IEEE arithmetic.
        """
        half = x_BNTH.shape[-1] // 2
        x1, x2 = x_BNTH[..., :half], x_BNTH[..., half:]
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and x_BNTH.requires_grad):
            return torch.cat([x1 * cos_TH[:, :half] - x2 * sin_TH[:, :half],
                              x2 * cos_TH[:, half:] + x1 * sin_TH[:, half:]], dim=-1)
        out_BNTH = torch.empty(x_BNTH.shape, dtype=torch.result_type(x_BNTH, cos_TH), device=x_BNTH.device)
        torch.sub(x1 * cos_TH[:, :half], x2 * sin_TH[:, :half], out=out_BNTH[..., :half])
        torch.add(x2 * cos_TH[:, half:], x1 * sin_TH[:, half:], out=out_BNTH[..., half:])
        return out_BNTH


class FeedForward(nn.Module):
    """Pre-norm position-wise feed-forward with Swish, used twice per block at half weight."""

    def __init__(self, dim: int, ff_dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, ff_dim),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(ff_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        return self.net(x_BTD)


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention with rotary positions, through ``self.kernel`` (default SDPA)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.rotary = RotaryEmbedding(dim // heads)
        self.dropout = dropout
        self.out_dropout = nn.Dropout(dropout)
        self.kernel = sdpa_attention

    def forward(self, x_BTD: torch.Tensor, attend_B11T: torch.Tensor | None) -> torch.Tensor:
        batch_size, num_frames, dim = x_BTD.shape
        qkv_BTD3 = self.to_qkv(self.norm(x_BTD))
        # plain views (no einops: its first call imports torch._dynamo, ≈120 MB of resident memory)
        q_BNTH, k_BNTH, v_BNTH = qkv_BTD3.view(batch_size, num_frames, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        cos_TH, sin_TH = self.rotary.tables(num_frames, x_BTD.device, q_BNTH.dtype)
        q_BNTH = self.rotary.rotate(q_BNTH, cos_TH, sin_TH)
        k_BNTH = self.rotary.rotate(k_BNTH, cos_TH, sin_TH)
        out_BNTH = self.kernel(q_BNTH, k_BNTH, v_BNTH, attend_B11T, self.dropout if self.training else 0.0)
        return self.out_dropout(self.to_out(out_BNTH.transpose(1, 2).reshape(batch_size, num_frames, dim)))


def _glu(x_BTC: torch.Tensor) -> torch.Tensor:
    """``F.glu`` over the last dim; on XLA as ``a * sigmoid(b)`` (torch_xla has no ``glu_backward``)."""
    if x_BTC.device.type != "xla":
        return F.glu(x_BTC, dim=-1)
    a_BTC, b_BTC = x_BTC.chunk(2, dim=-1)
    return a_BTC * torch.sigmoid(b_BTC)


class ConvModule(nn.Module):
    """Pointwise conv + GLU → depthwise conv → LayerNorm → Swish → pointwise conv.

    The depthwise part runs at ``expansion × dim`` channels (2, as in common Conformer code; with
    it the paper preset has ≈354M parameters, the paper's "350M").

    Padded frames are zeroed right before the depthwise convolution (the only place where
    neighbouring frames mix outside attention).
    """

    def __init__(self, dim: int, kernel_size: int, dropout: float, expansion: int = 2):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel must be odd so frames stay aligned, got {kernel_size}")
        inner = dim * expansion
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Linear(dim, 2 * inner)
        self.depthwise = nn.Conv1d(inner, inner, kernel_size, padding=kernel_size // 2, groups=inner)
        self.depthwise_norm = nn.LayerNorm(inner)
        self.pointwise_out = nn.Linear(inner, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x_BTD: torch.Tensor, valid_BT1: torch.Tensor | None) -> torch.Tensor:
        h_BTE = _glu(self.pointwise_in(self.norm(x_BTD)))
        if valid_BT1 is not None:
            h_BTE = h_BTE * valid_BT1
        h_BTE = self.depthwise(h_BTE.transpose(1, 2)).transpose(1, 2)
        h_BTE = F.silu(self.depthwise_norm(h_BTE))
        return self.dropout(self.pointwise_out(h_BTE))


class ConformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, ff_dim: int, conv_kernel: int, dropout: float, conv_expansion: int = 2):
        super().__init__()
        self.ff1 = FeedForward(dim, ff_dim, dropout)
        self.attn = SelfAttention(dim, heads, dropout)
        self.conv = ConvModule(dim, conv_kernel, dropout, conv_expansion)
        self.ff2 = FeedForward(dim, ff_dim, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x_BTD, attend_B11T, valid_BT1):
        # torch.add(x, y, alpha=0.5) is one pass and bit-identical to x + 0.5 * y (0.5·y is exact)
        x_BTD = torch.add(x_BTD, self.ff1(x_BTD), alpha=0.5)
        x_BTD = x_BTD + self.attn(x_BTD, attend_B11T)
        x_BTD = x_BTD + self.conv(x_BTD, valid_BT1)
        x_BTD = torch.add(x_BTD, self.ff2(x_BTD), alpha=0.5)
        return self.norm(x_BTD)


class Conformer(nn.Module):
    """A stack of Conformer blocks over ``[B, T, D]`` with an optional ``valid_BT`` padding mask."""

    def __init__(self, dim: int, depth: int, heads: int, ff_dim: int, conv_kernel: int, dropout: float = 0.0,
                 conv_expansion: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(
            ConformerBlock(dim, heads, ff_dim, conv_kernel, dropout, conv_expansion) for _ in range(depth)
        )
        self.checkpoint = None  # e.g. torch.utils.checkpoint.checkpoint: recompute each block in the backward

    def configure(self, attention=None, checkpoint=None) -> None:
        """Set the attention kernel of every block (None: keep) and the block checkpointing function
        (``checkpoint(block, *inputs)``; None: keep activations)."""
        for block in self.blocks:
            block.attn.kernel = attention or block.attn.kernel
        self.checkpoint = checkpoint

    def forward(self, x_BTD: torch.Tensor, valid_BT: torch.Tensor | None = None) -> torch.Tensor:
        attend_B11T = valid_BT[:, None, None, :] if valid_BT is not None else None
        valid_BT1 = valid_BT[:, :, None].to(x_BTD.dtype) if valid_BT is not None else None
        for block in self.blocks:
            if self.checkpoint is not None and torch.is_grad_enabled():
                x_BTD = self.checkpoint(block, x_BTD, attend_B11T, valid_BT1)
            else:
                x_BTD = block(x_BTD, attend_B11T, valid_BT1)
        return x_BTD
