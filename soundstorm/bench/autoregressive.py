"""An *estimate* of level-wise autoregressive decoding with the same backbone, for the speed-up.

AudioLM-style acoustic stages decode the same T × Q tokens one step at a time. We model the
cheapest honest version with SoundStorm's own backbone sizes: level by level, frame by frame, one
KV-cached causal step per token (every layer's linear layers on one frame, attention over the
frames cached so far, the depthwise convolution over the last K frames, one head). That is
T × Q sequential steps. Timing all of them would take hours at paper size, so steps are timed at a
few cache lengths spread over ``0..T-1`` and the per-level total is the trapezoidal integral of
the step time over the cache length, times Q. The result is labelled an estimate.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from soundstorm.model import SoundStorm


@torch.no_grad()
def _causal_step(model: SoundStorm, x_BD: torch.Tensor, caches: list, position: int, level: int) -> torch.Tensor:
    """One autoregressive step at ``position``: a frame through every block, reading the KV caches."""
    for block, (k_BNTH, v_BNTH, conv_BKC) in zip(model.backbone.blocks, caches):
        x_BD = x_BD + 0.5 * block.ff1(x_BD)
        attn = block.attn
        qkv_B3D = attn.to_qkv(attn.norm(x_BD))
        q_BN1H, k_BN1H, v_BN1H = qkv_B3D.view(x_BD.shape[0], 3, attn.heads, 1, -1).unbind(1)
        k_BNTH[:, :, position:position + 1] = k_BN1H
        v_BNTH[:, :, position:position + 1] = v_BN1H
        out_BN1H = F.scaled_dot_product_attention(q_BN1H, k_BNTH[:, :, :position + 1], v_BNTH[:, :, :position + 1])
        x_BD = x_BD + attn.to_out(out_BN1H.reshape(x_BD.shape))
        conv = block.conv
        h_BC = F.glu(conv.pointwise_in(conv.norm(x_BD)), dim=-1)
        conv_BKC[:, :-1] = conv_BKC[:, 1:].clone()
        conv_BKC[:, -1] = h_BC
        weight_CK = conv.depthwise.weight[:, 0, :]
        h_BC = (conv_BKC * weight_CK.t()[None]).sum(dim=1) + conv.depthwise.bias
        x_BD = x_BD + conv.pointwise_out(F.silu(conv.depthwise_norm(h_BC)))
        x_BD = block.norm(x_BD + 0.5 * block.ff2(x_BD))
    hidden_BD = model.head_norm(x_BD)
    return hidden_BD @ model.head_weight[level] + model.head_bias[level]


@torch.no_grad()
def estimate_autoregressive(model: SoundStorm, backend, num_frames: int, batch_size: int = 1,
                            num_positions: int = 6, repeats: int = 2) -> dict:
    """Time KV-cached causal steps at ``num_positions`` cache lengths; extrapolate to T × Q steps."""
    if num_positions < 2:
        raise ValueError(f"ar_positions must be >= 2 (the integral needs two points), got {num_positions}")
    cfg, device = model.config, backend.device
    dtype = next(model.parameters()).dtype
    heads, head_dim = cfg.heads, cfg.dim // cfg.heads
    caches = [(torch.randn(batch_size, heads, num_frames, head_dim, device=device, dtype=dtype),
               torch.randn(batch_size, heads, num_frames, head_dim, device=device, dtype=dtype),
               torch.zeros(batch_size, cfg.conv_kernel, cfg.conv_expansion * cfg.dim, device=device, dtype=dtype))
              for _ in model.backbone.blocks]
    x_BD = torch.randn(batch_size, cfg.dim, device=device, dtype=dtype)
    positions = sorted({round(i * (num_frames - 1) / (num_positions - 1)) for i in range(num_positions)})
    step_s = []
    with backend.autocast():
        _causal_step(model, x_BD, caches, 0, 0)  # warm-up
        backend.mark_step()
        backend.sync()
        for position in positions:
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                _causal_step(model, x_BD, caches, position, 0)
                backend.mark_step()
                backend.sync()
                best = min(best, time.perf_counter() - start)
            step_s.append(best)
    per_level_s = sum((positions[i + 1] - positions[i]) * (step_s[i] + step_s[i + 1]) / 2
                      for i in range(len(positions) - 1)) + step_s[-1]
    return {
        "estimate": True,
        "method": "level-wise autoregressive, one KV-cached causal step per token, same backbone sizes; "
                  "steps timed at sampled cache lengths, trapezoid-integrated over T, times Q",
        "sequential_steps": num_frames * cfg.num_levels,
        "sampled_positions": positions,
        "step_latency_s": step_s,
        "latency_s_estimate": per_level_s * cfg.num_levels,
    }
