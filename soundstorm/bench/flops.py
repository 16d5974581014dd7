"""Work counts and the device's matmul peak: the two halves of model FLOPs utilisation (MFU).

FLOPs per forward pass count the matrix multiplications of one sampler pass (multiply-add = 2
FLOPs), for B examples of T frames, model dim D, FFN width F, conv expansion E, kernel K, L layers
and codebook V (one head, as the sampler computes only the current level's):

    per layer   8·T·D·F        two half-step feed-forwards (D→F→D each)
              + 8·T·D²         attention projections (q, k, v and out)
              + 4·T²·D         attention scores Q·Kᵀ and the weighted sum A·V
              + 6·E·T·D²       convolution module pointwise in (D→2·E·D) and out (E·D→D)
              + 2·T·E·D·K      depthwise convolution
    head        2·T·D·V
    total       B · (L · per layer + head)

Embedding look-ups, norms, activations and the sampler's element-wise work are not counted (they
are not matmuls), so MFU is a conservative measure. The peak is measured, not looked up: the best
rate of a large square GEMM in the benchmark's dtype on the same device and threads. For int8 it is
the int8 linear layer the quantised model runs (:func:`soundstorm.quantize.quantized_linear`: fp32
input quantised on the fly, int8 GEMM, fp32 output), so MFU compares like with like; its unit is
int8 operations per second (multiply-add = 2 ops).

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import time

import torch

from soundstorm.model import SoundStormConfig
from soundstorm.quantize import quantized_linear


def flops_per_pass(config: SoundStormConfig, num_frames: int, batch_size: int = 1) -> int:
    """Matmul FLOPs of one forward pass that computes one level's head (see the module docstring)."""
    t, d, f = num_frames, config.dim, config.ff_dim
    e, k, v = config.conv_expansion, config.conv_kernel, config.codebook_size
    per_layer = 8 * t * d * f + 8 * t * d * d + 4 * t * t * d + 6 * e * t * d * d + 2 * t * e * d * k
    return batch_size * (config.depth * per_layer + 2 * t * d * v)


def measure_matmul_peak(backend, dtype: torch.dtype | str = torch.float32, size: int = 4096,
                        repeats: int = 3) -> float:
    """Best FLOP/s of a ``size``×``size`` GEMM on ``backend.device`` (after one warm-up product).

    ``dtype="int8"``: the int8 dynamically quantised linear layer on the CPU (ops/s)."""
    if size < 64:
        raise ValueError(f"matmul peak size must be >= 64, got {size}")
    device = backend.device
    if dtype == "int8":
        a_NN = torch.randn(size, size, device=device)
        product = quantized_linear(torch.randn(size, size, device=device))
    else:
        a_NN = torch.randn(size, size, device=device, dtype=dtype)
        b_NN = torch.randn(size, size, device=device, dtype=dtype)

        def product(x_NN):
            return x_NN @ b_NN
    with torch.no_grad():
        return _best_rate(backend, product, a_NN, size, repeats)


def _best_rate(backend, product, a_NN: torch.Tensor, size: int, repeats: int) -> float:
    c_NN = product(a_NN)
    backend.mark_step()
    backend.sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        c_NN = product(a_NN)
        backend.mark_step()
        backend.sync()
        best = min(best, time.perf_counter() - start)
    del c_NN
    return 2.0 * size**3 / best
