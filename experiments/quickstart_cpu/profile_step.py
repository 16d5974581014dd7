"""Where a quickstart training step spends its time, for codecs of several level counts (#24).

Builds the quickstart model (configs/experiment/quickstart_cpu.yaml: dim 192, 4 layers, 64 semantic ids;
``--codebook-size`` codes per level, the quickstart's 2048 by default) for each ``--levels`` value, runs
the real ``Trainer.train_step`` (forward, backward, clipping, fused AdamW, schedule) on one repeated
batch of ``--batch`` random windows of ``--seconds`` (collated and corrupted by the training data path,
with the quickstart's coarse-weighted level draw), and profiles ``--steps`` steps after ``--warmup`` with
torch.profiler. Prints, per level count and output-head path, the median step time and the share of self
CPU time by operator group; ``--json`` writes the same.

``--head``: ``loss-tokens`` is what the CPU trainer runs (the output head, its softmax and argmax on the
masked tokens only); ``all-frames`` is the fixed-shape path XLA and CUDA run (every frame's logits, the loss
tokens weighted in), the CPU trainer's path before #24. Both in one run compare them on one machine.

    OMP_NUM_THREADS=1 python experiments/quickstart_cpu/profile_step.py --levels 4 --threads 1 \
        --head all-frames loss-tokens

Data loading is not in the step (it runs in the loader's own process and overlaps); the trainer
reports its share as ``data_s`` in its log lines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict

import torch

from soundstorm.bench.runner import cpu_model
from soundstorm.bench.train_step import _repeating_batches
from soundstorm.data import collate
from soundstorm.model import SoundStorm, SoundStormConfig
from soundstorm.train.data import CorruptingCollate
from soundstorm.train.loop import Trainer, TrainerConfig
from soundstorm.train.optim import OptimConfig, make_optimizer, make_scheduler
from soundstorm.backends import get_backend

# operator-name prefixes of each group (aten ops as the profiler names them)
GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm"),
    "attention": ("aten::_scaled_dot_product", "aten::scaled_dot_product", "aten::_flash", "aten::_efficient"),
    "convolution": ("aten::conv", "aten::_conv", "aten::convolution", "aten::_convolution", "aten::mkldnn_convolution",
                    "aten::slow_conv", "aten::thnn_conv"),
    "normalization": ("aten::native_layer_norm", "aten::layer_norm", "aten::native_batch_norm", "aten::batch_norm",
                      "aten::_batch_norm"),
    "optimizer": ("aten::_fused_adamw", "aten::_foreach", "Optimizer."),
    "embedding/index": ("aten::embedding", "aten::index", "aten::gather", "aten::scatter", "aten::index_select",
                        "aten::take_along_dim"),
    "softmax/loss": ("aten::_log_softmax", "aten::log_softmax", "aten::nll_loss", "aten::cross_entropy",
                     "aten::_softmax"),
}


def group_of(name: str) -> str:
    for group, prefixes in GROUPS.items():
        if name.startswith(prefixes):
            return group
    return "elementwise/other"


def quickstart_config(num_levels: int, codebook_size: int = 2048) -> SoundStormConfig:
    return SoundStormConfig(num_levels=num_levels, codebook_size=codebook_size, semantic_vocab_size=64,
                            semantic_upsample=1, dim=192, depth=4, heads=4, ff_dim=768, conv_kernel=5)


def level_weights(num_levels: int) -> list[float]:
    """The quickstart's draw: [6, 3, 2, 1] on the first four levels, 1 on each finer one."""
    return ([6.0, 3.0, 2.0, 1.0] + [1.0] * num_levels)[:num_levels]


HEADS = ("all-frames", "loss-tokens")


def profile(num_levels: int, batch_size: int, seconds: float, warmup: int, steps: int, backend,
            codebook_size: int = 2048, head: str = "loss-tokens") -> dict:
    config = quickstart_config(num_levels, codebook_size)
    frames = int(round(seconds * 50))
    generator = torch.Generator().manual_seed(0)
    items = [(b, {"codes": torch.randint(0, codebook_size, (num_levels, frames), generator=generator),
                  "semantic": torch.randint(0, 64, (frames,), generator=generator), "utt_id": f"u{b}"})
             for b in range(batch_size)]
    batch = CorruptingCollate(collate, 0, 0, config.mask_id, level_weights(num_levels))(items)
    torch.manual_seed(0)
    model = SoundStorm(config).train()
    optim = OptimConfig(lr=2e-3, warmup_steps=0)
    optimizer = make_optimizer(model, optim)
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = Trainer(model, backend, optimizer, make_scheduler(optimizer, optim),
                          TrainerConfig(max_steps=warmup + 2 * steps, progress=False), out_dir,
                          _repeating_batches(batch))
        trainer.loss_module.loss_tokens_only = head == "loss-tokens"
        trainer._zero_sums()
        for _ in range(warmup):
            trainer.train_step()
        times = []
        for _ in range(steps):  # timed without the profiler's overhead
            start = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - start)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                trainer.train_step()
    self_us = defaultdict(float)
    for event in prof.key_averages():
        self_us[group_of(event.key)] += event.self_cpu_time_total
    total = sum(self_us.values())
    return {"num_levels": num_levels, "codebook_size": codebook_size, "head": head,
            "loss_token_share": float(batch["loss_mask"].sum()) / (batch_size * frames),
            "num_parameters": model.num_parameters(),
            "batch_size": batch_size, "frames": frames, "step_s_median": statistics.median(times), "step_s": times,
            "self_cpu_share": {g: self_us[g] / total for g in sorted(self_us, key=self_us.get, reverse=True)},
            "self_cpu_ms_per_step": {g: self_us[g] / 1000 / steps for g in self_us}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 4])
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--codebook-size", type=int, default=2048, help="codes per level (the quickstart's)")
    parser.add_argument("--seconds", type=float, default=4.5, help="window length (the quickstart's mean is ~4.5 s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--head", nargs="+", choices=HEADS, default=["loss-tokens"],
                        help="output-head path(s): the CPU trainer's (loss-tokens) and/or the fixed-shape one")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    for name in ("levels", "batch", "codebook_size", "warmup", "steps"):
        values = getattr(args, name) if isinstance(getattr(args, name), list) else [getattr(args, name)]
        if any(v < 1 for v in values):
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    backend = get_backend("cpu", num_threads=args.threads)
    results = [profile(q, args.batch, args.seconds, args.warmup, args.steps, backend, args.codebook_size, head)
               for q in args.levels for head in args.head]
    for r in results:
        shares = ", ".join(f"{g} {s:.0%}" for g, s in r["self_cpu_share"].items())
        print(f"Q={r['num_levels']} x {r['codebook_size']} codes, head on {r['head']}: "
              f"{r['num_parameters'] / 1e6:.2f}M parameters, "
              f"batch {r['batch_size']} x {r['frames']} frames, step {r['step_s_median'] * 1000:.0f} ms (median of {len(r['step_s'])}); "
              f"self CPU time: {shares}")
    out = {"threads": torch.get_num_threads(), "processor": cpu_model(), "cpus": os.cpu_count(),
           "torch": torch.__version__, "results": results}
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(out, f, indent=2)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
