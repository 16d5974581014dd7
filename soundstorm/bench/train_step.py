"""Training throughput: the real :class:`~soundstorm.train.loop.Trainer` step timed at a recipe's shapes.

``soundstorm-bench mode=train`` builds a randomly initialised model, AdamW with the warmup-cosine
schedule, and a :class:`Trainer` whose data source repeats one batch of ``batch_size`` windows of
``duration_s`` seconds (random codes, collated and corrupted by the training data path's own
:class:`~soundstorm.train.data.CorruptingCollate`).
After ``warmup`` untimed steps it times ``runs`` calls of ``Trainer.train_step`` (forward,
backward, gradient reduction, clipping, guarded AdamW step, schedule, EMA when
``train_ema_decay`` > 0), each followed by ``backend.sync()``.

Work per step is counted as 3 × the forward pass's matmul FLOPs (:func:`flops_per_pass`; the
backward pass computes two products per forward product), and the step's acoustic tokens are
``B × T × Q`` (what the trainer's ``tokens/s`` counts). MFU is against the matmul peak measured
in the same run, peak memory the growth of the device's high-water mark over the baseline before
the model is built (as for generation).
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from soundstorm.bench.flops import flops_per_pass, measure_matmul_peak
from soundstorm.data import collate
from soundstorm.model import SoundStorm
from soundstorm.train.data import CorruptingCollate
from soundstorm.train.loop import Trainer, TrainerConfig
from soundstorm.train.optim import OptimConfig, make_optimizer, make_scheduler

BACKWARD_FACTOR = 3  # forward + backward (two products per forward product)


def _repeating_batches(batch: dict):
    """A trainer data source yielding the same prepared batch forever."""

    def batches(epoch: int, skip: int):
        while True:
            yield batch

    return batches


def _synthetic_batch(model_cfg, batch_size: int, num_frames: int, seed: int) -> dict:
    """``batch_size`` random full-length windows, collated and corrupted as the trainer receives them."""
    generator = torch.Generator().manual_seed(seed)
    items = [(b, {"codes": torch.randint(0, model_cfg.codebook_size, (model_cfg.num_levels, num_frames),
                                         generator=generator),
                  "semantic": torch.randint(0, model_cfg.semantic_vocab_size,
                                            (num_frames // model_cfg.semantic_upsample,), generator=generator),
                  "utt_id": f"synthetic{b}"}) for b in range(batch_size)]
    return CorruptingCollate(collate, seed, 0, model_cfg.mask_id)(items)


def run_train_bench(cfg, backend) -> dict:
    """Time ``cfg.runs`` training steps after ``cfg.warmup``; the mode-specific half of the JSON."""
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    peaks = [measure_matmul_peak(backend, dtype, cfg.matmul_size)]
    model_cfg = cfg.model
    num_frames = cfg.num_frames()
    backend.sync()
    baseline_bytes = backend.current_memory_bytes()
    backend.reset_peak_memory()
    torch.manual_seed(cfg.seed)
    model = SoundStorm(model_cfg).to(backend.device).train()
    optimizer = make_optimizer(model, OptimConfig(warmup_steps=0))
    scheduler = make_scheduler(optimizer, OptimConfig(warmup_steps=0))
    batch = _synthetic_batch(model_cfg, cfg.batch_size, num_frames, cfg.seed)
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = Trainer(model, backend, optimizer, scheduler,
                          TrainerConfig(max_steps=cfg.warmup + cfg.runs, progress=False,
                                        ema_decay=cfg.train_ema_decay), out_dir, _repeating_batches(batch))
        trainer._zero_sums()
        for _ in range(cfg.warmup):
            trainer.train_step()
        backend.sync()
        latencies = []
        for _ in range(cfg.runs):
            start = time.perf_counter()
            trainer.train_step()
            backend.sync()
            latencies.append(time.perf_counter() - start)
    peak_bytes = backend.peak_memory_bytes()
    peaks.append(measure_matmul_peak(backend, dtype, cfg.matmul_size))
    median = statistics.median(latencies)
    step_flops = BACKWARD_FACTOR * flops_per_pass(model_cfg, num_frames, cfg.batch_size)
    tokens = cfg.batch_size * num_frames * model_cfg.num_levels
    state_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    peak_growth = None if peak_bytes is None else peak_bytes - (baseline_bytes or 0)
    return {
        "mode": "train",
        "num_frames": num_frames,
        "num_parameters": model.num_parameters(),
        "step_s": latencies,
        "step_s_median": median,
        "step_s_min": min(latencies),
        "step_s_max": max(latencies),
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / median,
        "frames_per_s": cfg.batch_size * num_frames / median,
        "flops_per_step": step_flops,
        "flops_definition": f"{BACKWARD_FACTOR} x matmul FLOPs of one forward pass (soundstorm.bench.flops)",
        "achieved_flops_per_s": step_flops / median,
        "matmul_peak_flops_per_s": max(peaks),
        "matmul_peak_samples_flops_per_s": peaks,
        "mfu": step_flops / median / max(peaks),
        "peak_memory_bytes": peak_growth,
        "weights_bytes": state_bytes,
        "peak_memory_over_weights": None if peak_growth is None else peak_growth / state_bytes,
        "nonfinite_steps": int(round(trainer._sums["scalars"][2].item())),  # read once, after the timing
    }
