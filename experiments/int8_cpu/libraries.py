"""Which int8 library for CPU inference: times the Conformer's feed-forward shape in fp32 and int8.

Why: :mod:`soundstorm.quantize` had to pick between PyTorch's dynamic quantisation
(``torch.ao.quantization.quantize_dynamic``, what it uses) and torchao's
``Int8DynamicActivationInt8WeightConfig`` (eager mode). This script reruns that measurement on
any machine: the paper preset's feed-forward (T frames × 1024 → 4096 → 1024, Swish), best of
``--repeats`` calls each, interleaved in one process, with the output's relative error to fp32.
torchao is optional (``pip install torchao``, 0.14/0.15 for torch 2.9); without it its rows are skipped.

    OMP_NUM_THREADS=2 python experiments/int8_cpu/libraries.py --threads 2 --frames 1500
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
from torch import nn

from soundstorm.quantize import quantize_int8


def best_seconds(module: nn.Module, x_BTD: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        module(x_BTD)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            module(x_BTD)
            best = min(best, time.perf_counter() - start)
    return best


def candidates(ff: nn.Module) -> dict:
    """fp32, soundstorm.quantize (torch.ao dynamic, per-channel weights) and torchao when installed."""
    out = {"fp32": ff, "torch.ao quantize_dynamic (soundstorm.quantize)": quantize_int8(copy.deepcopy(ff))}
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_
    except ImportError:
        print("torchao is not installed: its rows are skipped")
        return out
    for name, config in (("torchao int8 dynamic activations + int8 weights", Int8DynamicActivationInt8WeightConfig()),
                         ("torchao int8 weight-only", Int8WeightOnlyConfig())):
        module = copy.deepcopy(ff)
        quantize_(module, config)
        out[name] = module
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", DeprecationWarning)
    torch.manual_seed(0)
    dim, ff_dim = 1024, 4096
    ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.SiLU(), nn.Linear(ff_dim, dim)).eval()
    x_BTD = torch.randn(1, args.frames, dim)
    with torch.no_grad():
        ref_BTD = ff(x_BTD)
    ops = 2 * 2 * args.frames * dim * ff_dim
    rows = []
    for name, module in candidates(ff).items():
        seconds = best_seconds(module, x_BTD, args.repeats)
        with torch.no_grad():
            error = float((module(x_BTD) - ref_BTD).norm() / ref_BTD.norm())
        rows.append((name, seconds, error))
    fp32_seconds = rows[0][1]
    print(f"torch {torch.__version__}, {args.threads} thread(s), feed-forward {args.frames} × {dim} → {ff_dim} → {dim}")
    for name, seconds, error in rows:
        print(f"{name:<50} {seconds * 1e3:8.1f} ms  {ops / seconds / 1e9:7.1f} G(FL)OP/s  "
              f"{fp32_seconds / seconds:5.2f}× fp32  relative error {error:.4f}")


if __name__ == "__main__":
    main()
