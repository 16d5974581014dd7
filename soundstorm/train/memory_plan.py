"""The per-device memory plan of a training step, before paying for the hardware (``dry_run=true``).

Weights, gradients, the two AdamW moments and the EMA copy are counted from the parameter count
(fp32 master weights, as the trainer keeps them; the non-finite guard copies nothing). Activations
are *measured*, not guessed: one training forward of the real model runs on the ``meta`` device
(shapes only, no memory, seconds on a CPU) at the recipe's per-device batch and longest window,
and every tensor autograd saves for the backward is summed through ``saved_tensors_hooks``. Saved
tensors of shape ``[B, H, T, T]`` are the math attention path's scores: Pallas flash attention
(TPU) and fused CUDA kernels do not keep them. With activation checkpointing only each block's
input is saved, plus one block's activations while it is recomputed in the backward.
The figures are an upper bound in two ways: a tensor saved by two operations counts twice, and
activations are counted in the compute dtype (bf16 autocast keeps a few, e.g. norms, in fp32).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from soundstorm.conformer import ConformerBlock
from soundstorm.masking import corrupt, masked_loss
from soundstorm.model import SoundStorm, SoundStormConfig

GiB = 2**30
# torch.utils.checkpoint runs on the meta device from torch 2.5 on (pytorch/pytorch#132684)
CHECKPOINT_ON_META = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 5)
DEVICES = (("TPU v4 chip, 32 GiB", 32 * GiB), ("GPU, 80 GB", 80 * 10**9))


@dataclass
class ActivationBytes:
    total: int
    attention_scores: int  # saved [B, H, T, T] tensors (the math attention path only)


def meta_model(config: SoundStormConfig, dtype: torch.dtype = torch.float32) -> SoundStorm:
    """The model on the ``meta`` device (shapes, no memory), with real host copies of the per-block
    buffers (the rotary frequencies, from which the host-side cos/sin tables are computed)."""
    with torch.device("meta"):
        model = SoundStorm(config).to(dtype)
    block = ConformerBlock(config.dim, config.heads, config.ff_dim, config.conv_kernel, 0.0, config.conv_expansion)
    for name, buffer in block.named_buffers():  # real (host) copies of the per-block buffers (rotary tables)
        for meta_block in model.backbone.blocks:
            meta_block.get_submodule(name.rsplit(".", 1)[0]).register_buffer(name.rsplit(".", 1)[1], buffer,
                                                                             persistent=False)
    return model


def measure_activations(config: SoundStormConfig, batch_size: int, num_frames: int, dtype: torch.dtype,
                        checkpointing: bool = False) -> ActivationBytes:
    """Bytes autograd saves in one training forward at ``[batch_size, num_frames]`` (on ``meta``)."""
    if checkpointing and not CHECKPOINT_ON_META:
        raise RuntimeError(f"measuring activations with activation checkpointing needs torch >= 2.5 "
                           f"(torch.utils.checkpoint cannot run on the meta device before); this is torch "
                           f"{torch.__version__}")
    model = meta_model(config, dtype)
    if checkpointing:
        model.backbone.configure(checkpoint=functools.partial(checkpoint, use_reentrant=False))
    codes_BQT = torch.randint(0, config.codebook_size, (batch_size, config.num_levels, num_frames))
    semantic_BS = torch.randint(0, config.semantic_vocab_size, (batch_size, num_frames // config.semantic_upsample))
    corruption = corrupt(codes_BQT, None, torch.Generator().manual_seed(0), mask_id=config.mask_id)
    for name in ("inputs", "loss_mask", "level", "prompt_len", "mask_ratio"):
        setattr(corruption, name, getattr(corruption, name).to("meta"))
    totals = {"all": 0, "scores": 0}

    def pack(tensor):
        size = tensor.numel() * tensor.element_size()
        totals["all"] += size
        if tensor.dim() == 4 and tensor.shape[-2:] == (num_frames, num_frames):
            totals["scores"] += size
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        masked_loss(model, codes_BQT.to("meta"), semantic_BS.to("meta"), None, corruption)
    return ActivationBytes(totals["all"], totals["scores"])


def memory_plan(config: SoundStormConfig, batch_size: int, num_frames: int, dtype: torch.dtype,
                ema: bool) -> dict:
    """Bytes per device: states, and activations with/without checkpointing and flash attention."""
    num_params = _num_params(config)
    states = {"weights (fp32)": 4 * num_params, "gradients (fp32)": 4 * num_params,
              "AdamW moments (fp32, 2 per weight)": 8 * num_params}
    if ema:
        states["EMA weights (fp32)"] = 4 * num_params
    plain = measure_activations(config, batch_size, num_frames, dtype)
    outside = measure_activations(config, batch_size, num_frames, dtype, checkpointing=True)
    block = ActivationBytes(plain.total // config.depth, plain.attention_scores // config.depth)
    activations = {
        "no checkpointing, math attention (SDPA)": plain.total,
        "no checkpointing, flash attention (Pallas)": plain.total - plain.attention_scores,
        "checkpointing, math attention": outside.total + block.total,
        "checkpointing, flash attention": outside.total + block.total - block.attention_scores,
    }
    return {"num_params": num_params, "states": states, "activations": activations}


def _num_params(config: SoundStormConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in SoundStorm(config).parameters())


def _verdict(total: int, capacity: int) -> str:
    share = total / capacity
    return f"{'fits' if share < 0.9 else 'tight' if share <= 1.0 else 'does NOT fit'} ({share:.0%})"


def format_plan(plan: dict, title: str) -> str:
    """A table of the plan against each device in :data:`DEVICES`."""
    states = sum(plan["states"].values())
    lines = [title, f"  parameters: {plan['num_params']:,}"]
    lines += [f"  {name:<44} {size / GiB:7.2f} GiB" for name, size in plan["states"].items()]
    lines += [f"  {'states in all':<44} {states / GiB:7.2f} GiB", "",
              f"  {'activations':<44} {'':>11} {'+ states':>10}   " + "   ".join(name for name, _ in DEVICES)]
    for name, size in plan["activations"].items():
        total = states + size
        verdicts = "   ".join(f"{_verdict(total, cap):<{len(device)}}" for device, cap in DEVICES)
        lines.append(f"  {name:<44} {size / GiB:7.2f} GiB {total / GiB:6.2f} GiB   {verdicts}".rstrip())
    lines.append("  (share of the device's memory; 'tight' = over 90%: XLA and CUDA also need workspace)")
    return "\n".join(lines)
