"""The peak-memory estimate of a generation (:mod:`soundstorm.resources`): measured against a real run, and
the refusals of soundstorm-bench and soundstorm-generate when a request does not fit.

How the peak is measured (``measure_generation``): a fresh Python process builds the model, warms every
kernel up on a two-frame clip, then restarts the kernel's resident-set high-water mark
(``/proc/self/clear_refs``, 5) and runs the generation; the measured peak is ``VmHWM`` minus the
``VmRSS`` just before, i.e. what the generation added to the process at its worst. tracemalloc cannot
see torch's allocations, and ``ru_maxrss`` cannot be restarted, so it would include the import and
the weights. The child runs with glibc's mmap threshold pinned (``MALLOC_MMAP_THRESHOLD_=131072``):
every tensor above 128 KiB is then its own mapping, returned to the kernel when freed, so the resident
set follows the live tensors, which is what the estimate counts. With glibc's default, the threshold
rises to 32 MiB after the first large free and smaller freed tensors stay in the heap: at these small
sizes the resident set then reaches up to twice the live tensors; at the sizes where the refusal matters (tensors of tens of MiB and more) blocks are mapped either way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _cli import run_python
from soundstorm import SoundStorm, SoundStormConfig
from soundstorm.bench import BenchConfig, run_bench
from soundstorm.sampler import SamplerConfig
from soundstorm import resources
from soundstorm.resources import MemoryEstimate, check_memory, estimate_generation, weights_bytes

GiB = 2**30
MEASURE = r"""
import json, sys, torch
torch.set_num_threads(1)
from soundstorm import SoundStorm, SoundStormConfig
from soundstorm.sampler import SamplerConfig, generate

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

case = json.loads(sys.argv[1])
config, sampler = SoundStormConfig(**case["model"]), SamplerConfig(**case["sampler"])
torch.manual_seed(0)
model = SoundStorm(config).eval()
generate(model, torch.zeros(1, 1, dtype=torch.long), config=sampler)  # warm-up: kernels, libraries
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
semantic = torch.randint(0, config.semantic_vocab_size, (case["batch"], case["frames"] // config.semantic_upsample))
generate(model, semantic, config=sampler)
print(json.dumps({"growth": status("VmHWM") - before}))
"""
PINNED = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # see the module docstring

# three small sizes (a few seconds each on one thread), each with another part of the peak dominant
CASES = [
    dict(model=dict(num_levels=4, codebook_size=256, semantic_vocab_size=64, semantic_upsample=2, dim=128, depth=2,
                    heads=4, ff_dim=512, conv_kernel=5), batch=2, frames=2000, sampler=dict(steps=[2, 1, 1, 1])),
    dict(model=dict(num_levels=8, codebook_size=1024, semantic_vocab_size=256, semantic_upsample=2, dim=256, depth=1,
                    heads=4, ff_dim=1024, conv_kernel=5), batch=1, frames=3000, sampler=dict(greedy=True)),
    dict(model=dict(num_levels=4, codebook_size=512, semantic_vocab_size=256, semantic_upsample=2, dim=256, depth=1,
                    heads=4, ff_dim=1024, conv_kernel=5), batch=8, frames=1000,
         sampler=dict(steps=[2, 1, 1, 1], top_k=20)),
]


def measure_generation(case: dict, env: dict | None = None) -> int:
    """Bytes a generation adds to a fresh process's resident set at its peak (see the module docstring)."""
    result = run_python(["-c", MEASURE, json.dumps(case)], env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["growth"]


@pytest.mark.slow  # three generations in child processes, ≈ 30 s
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_the_estimate_is_within_25_percent_of_the_measured_peak(capsys):
    rows = []
    for case in CASES:
        config = SoundStormConfig(**case["model"])
        estimate = estimate_generation(config, batch_size=case["batch"], num_frames=case["frames"],
                                       sampler=SamplerConfig(**case["sampler"]))
        assert estimate.weights == sum(p.numel() * 4 for p in SoundStorm(config).parameters())
        rows.append((case, estimate.activations, measure_generation(case, PINNED)))
    with capsys.disabled():
        for case, estimated, measured in rows:
            print(f"\nB={case['batch']} T={case['frames']} Q={case['model']['num_levels']} "
                  f"V={case['model']['codebook_size']} D={case['model']['dim']} sampler={case['sampler']}: estimated "
                  f"{estimated / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB")
    for case, estimated, measured in rows:
        assert abs(estimated - measured) <= 0.25 * measured, (case, estimated, measured)


def test_the_estimate_follows_the_shapes():
    config = SoundStormConfig.tiny()
    one = estimate_generation(config, batch_size=1, num_frames=400)
    assert estimate_generation(config, batch_size=2, num_frames=400).activations > 1.5 * one.activations
    windowed = [estimate_generation(config, batch_size=1, num_frames=n, window_frames=100) for n in (400, 4000)]
    assert windowed[0].activations == windowed[1].activations  # one window's sampler tensors, whatever the clip
    assert windowed[1].buffers == 10 * windowed[0].buffers  # the whole clip's codes grow with it
    scores = estimate_generation(config, batch_size=1, num_frames=400, attention_scores=True)
    # the math attention path holds scores and their softmax, [B, H, T, T] float32 each
    assert scores.activations > one.activations and scores.activations >= 2 * config.heads * 400 * 400 * 4
    assert weights_bytes(config, "int8") < weights_bytes(config) < weights_bytes(config, "bfloat16")


def test_a_request_that_does_not_fit_is_refused_with_both_numbers():
    estimate = MemoryEstimate(weights=GiB, activations=3 * GiB, buffers=0, decode=0, batch_size=1,
                              frames_per_call=1000, num_frames=1000, attention_scores=False)
    fits = check_memory(estimate, torch.device("cpu"), "this run", "do less", {"host": (8 * GiB, "test")})
    assert fits.startswith("memory: estimated peak 4.00 GiB of 8.00 GiB host RAM available (50%)")
    with pytest.raises(ValueError, match=r"this run needs an estimated 4.00 GiB of host RAM \(weights 1.00 GiB, "
                                         r"activations .* 3.00 GiB\), but 2.00 GiB is available \(test\); do less"):
        check_memory(estimate, torch.device("cpu"), "this run", "do less", {"host": (2 * GiB, "test")})
    with pytest.raises(ValueError, match=r"needs an estimated 4.00 GiB of cuda:0 .* but 3.00 GiB is available"):
        check_memory(estimate, torch.device("cuda", 0), "this run", "do less",
                     {"host": (8 * GiB, "test"), "device": (3 * GiB, "test")})


def test_bench_refuses_the_paper_preset_at_an_hour_before_allocating(monkeypatch, capsys):
    """The issue's case: refused in seconds with the estimate, never reaching an allocation."""
    import soundstorm.bench.runner as runner
    from test_reliability import run_main

    monkeypatch.setattr(resources, "host_available", lambda: (8 * GiB, "MemAvailable in /proc/meminfo"))
    monkeypatch.setattr(runner, "measure_matmul_peak", lambda *a, **k: pytest.fail("allocated before the check"))
    code, _, err = run_main(capsys, "soundstorm.cli.bench", "backend=cpu", "duration_s=3600", "output_json=null")
    assert code == 2 and "soundstorm-bench: error: soundstorm-bench duration_s=3600 batch_size=1 (180000 frames of " \
                         "the paper model) needs an estimated" in err, err
    assert "but 8.00 GiB is available (MemAvailable in /proc/meminfo); expected a run that fits: a shorter " \
           "duration_s" in err and "memory_check=false" in err, err


def test_bench_records_its_estimate_beside_the_measured_peak():
    result = run_bench(BenchConfig(model=SoundStormConfig.tiny(), duration_s=1, runs=1, warmup=0, backend="cpu",
                                   matmul_size=64, sampler=SamplerConfig(greedy=True), output_json=None))
    estimate = result["peak_memory_estimate"]
    assert estimate["bytes"]["host"] == estimate["weights"] + estimate["activations"] > 0


def test_generate_refuses_an_input_that_does_not_fit(monkeypatch, capsys, espeak_tokens, tmp_path):
    from test_reliability import FAST_GEN, make_checkpoint, run_main

    checkpoint = make_checkpoint(tmp_path / "ckpt", espeak_tokens)
    np.save(tmp_path / "long.npy", np.arange(750) % 32)  # 30 s of semantic ids at 25 Hz
    monkeypatch.setattr(resources, "host_available", lambda: (2**20, "test"))
    common = (f"checkpoint={checkpoint}", f"assets={espeak_tokens}", f"inputs=[{tmp_path / 'long.npy'}]", *FAST_GEN)
    code, _, err = run_main(capsys, "soundstorm.cli.generate", *common, f"out_dir={tmp_path / 'a'}")
    assert code == 2 and "soundstorm-generate: error: generating 30.0 s (the longest input) needs an estimated" in err
    assert "but 0.00 GiB is available (test); expected a smaller request: a lower window_seconds (now 1;" in err, err
    assert "codec decode of 1500 frames" in err and not list((tmp_path / "a").glob("long*")), err
    code, out, err = run_main(capsys, "soundstorm.cli.generate", *common, "memory_check=false", f"out_dir={tmp_path / 'b'}")
    assert code == 0 and (tmp_path / "b" / "long.wav").is_file() and "memory:" not in out, err
