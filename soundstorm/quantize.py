"""Int8 inference on the CPU: the Conformer's linear layers with int8 weights, activations quantised on the fly.

Why: on a CPU the fp32 model already runs close to the fp32 matmul peak, and ≈ 99 % of a pass's
matmul work is in the linear layers (feed-forward, attention projections, the convolution module's
pointwise layers; see :mod:`soundstorm.bench.flops`). Int8 GEMMs (VNNI / AVX-512 on x86) raise that
ceiling. Everything else stays fp32: embeddings, norms, rotary attention (SDPA), the depthwise
convolution and the Q output heads (one ``[Q, D, V]`` weight used through ``index_select`` + ``bmm``;
one head is ≈ 0.3 % of a pass's FLOPs at the paper size, so quantising it would not pay).

Library: PyTorch's dynamic quantisation (``torch.ao.quantization.quantize_dynamic``, fbgemm/x86
kernels, per-output-channel int8 weights, per-tensor activation scales), chosen because it ran the
paper's feed-forward shape faster than torchao's eager int8 path and needs no new dependency (the
comparison: docs/benchmark.md, "Int8 on the CPU"). ``torch.ao.quantization`` is deprecated upstream
(announced for removal after torch 2.9, the version this project pins because torch_xla stops at
2.9), but it is still there and works on torch 2.15 (the int8 tests pass on both stacks; speed there:
docs/benchmark.md, "On the newest torch"); it is used through :func:`quantize_int8` only, so a move to
torchao touches this module alone. Its deprecation warnings are silenced here for that reason.

Quantised weights are never saved: a model is stored as fp32 safetensors (``save_pretrained``) and
quantised when it is loaded (``SoundStorm.from_pretrained(dir, dtype="int8")``), which is
deterministic, needs no pickled quantised modules and keeps one file format.
"""

from __future__ import annotations

import ctypes
import gc
import warnings

import torch
from torch import nn

INFERENCE_DTYPES = ("float32", "int8")


def _dynamic_linear_cls():
    from torch.ao.nn.quantized.dynamic import Linear

    return Linear


def check_inference_dtype(dtype, where: str = "dtype") -> str:
    """``dtype`` if it is one of :data:`INFERENCE_DTYPES`, else a ValueError naming ``where``."""
    if dtype not in INFERENCE_DTYPES:
        raise ValueError(f"{where}={dtype!r} is not supported; expected one of {INFERENCE_DTYPES}")
    return dtype


def is_quantized(model: nn.Module) -> bool:
    """True when any layer of ``model`` is an int8 dynamically quantised linear layer."""
    linear_cls = _dynamic_linear_cls()
    return any(isinstance(module, linear_cls) for module in model.modules())


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace the linear layers of ``model.backbone`` by int8 ones, in place; return ``model`` in eval mode.

    Weights: int8, one scale per output channel. Activations: quantised per call (dynamic), so no
    calibration data is needed. The model must live on the CPU; it is for inference only (the
    quantised layers have no trainable weights).
    """
    devices = sorted({str(p.device) for p in model.parameters()})
    if devices != ["cpu"]:
        raise ValueError(f"int8 quantisation runs on the cpu backend only; the model's parameters are on {devices}")
    if is_quantized(model):
        return model.eval()
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    target = getattr(model, "backbone", model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        # torch >= 2.10 also warns that quantized-tensor creation (torch.quantize_per_channel) is deprecated
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                                category=UserWarning)
        quantize_dynamic(target.eval(), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    _release_freed_memory()
    return model.eval()


def _release_freed_memory() -> None:
    """Hand the freed fp32 weights' pages back to the OS.

    glibc keeps freed heap blocks resident, and once blocks of a layer's size have been freed it
    serves such sizes from the heap rather than from their own mappings; the replaced fp32 weights
    then stay in the resident set until ``malloc_trim`` (how much for the paper preset:
    docs/benchmark.md, "Int8 on the CPU").
    Elsewhere than glibc this is a no-op."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def quantized_linear(weight_OI: torch.Tensor, bias_O: torch.Tensor | None = None) -> nn.Module:
    """One int8 dynamic linear layer with the given fp32 weight (e.g. for measuring the int8 GEMM peak)."""
    linear = nn.Linear(weight_OI.shape[1], weight_OI.shape[0], bias=bias_O is not None)
    with torch.no_grad():
        linear.weight.copy_(weight_OI)
        if bias_O is not None:
            linear.bias.copy_(bias_O)
    holder = nn.Sequential(linear)
    quantize_int8(holder)
    return holder[0]


def weights_bytes(model: nn.Module) -> int:
    """Bytes held by the model's weights as it runs: fp32 parameters plus int8 weights, their
    per-channel scales and zero points and fp32 biases of the quantised layers."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    linear_cls = _dynamic_linear_cls()
    for module in model.modules():
        if isinstance(module, linear_cls):
            weight, bias = module._weight_bias()
            total += weight.numel() * weight.element_size()
            if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                total += weight.q_per_channel_scales().numel() * 8 + weight.q_per_channel_zero_points().numel() * 8
            if bias is not None:
                total += bias.numel() * bias.element_size()
    return total
