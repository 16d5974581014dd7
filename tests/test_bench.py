"""`soundstorm-bench` end to end on a tiny model and 1 s of audio (CPU), plus its FLOP formula."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli import run_cli

from soundstorm import SoundStorm, SoundStormConfig
from soundstorm.bench import BenchConfig, flops_per_pass

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("forward_passes", "latency_s_median", "latency_s_min", "latency_s_max", "rtf", "frames_per_s",
        "flops_per_pass", "achieved_flops_per_s", "matmul_peak_flops_per_s", "mfu", "peak_memory_bytes",
        "device", "dtype", "versions")


def run_bench_cli(tmp_path, *overrides) -> dict:
    out = tmp_path / "bench.json"
    result = run_cli("soundstorm.cli.bench", "model=tiny", "duration_s=1", "runs=2", "matmul_size=256",
                     "backend=cpu", f"output_json={out}", f"hydra.run.dir={tmp_path / 'hydra'}", *overrides,
                     cwd=tmp_path, env={"PJRT_DEVICE": None}, check=True)
    assert "MFU" in result.stdout and "forward passes" in result.stdout
    return json.loads(out.read_text())


@pytest.mark.slow
def test_bench_cli_writes_the_json(tmp_path):
    result = run_bench_cli(tmp_path, "sampler.steps=[3,1,2,1]")
    for key in KEYS:
        assert key in result, key
    assert result["forward_passes"] == 3 + 1 + 2 + 1 == result["expected_forward_passes"]
    assert result["config"]["num_frames"] == 50 and result["config"]["model"]["num_levels"] == 4
    assert len(result["latency_s"]) == 2 and all(t > 0 for t in result["latency_s"])
    assert result["latency_s_min"] == min(result["latency_s"]) and result["latency_s_max"] == max(result["latency_s"])
    assert result["latency_s_median"] == pytest.approx(sum(result["latency_s"]) / 2)  # median of two runs
    assert result["flops_per_pass"] == flops_per_pass(SoundStormConfig.tiny(), 50)
    assert 0 < result["mfu"] and result["matmul_peak_flops_per_s"] > 0
    assert isinstance(result["peak_memory_bytes"], int) and result["peak_memory_bytes"] > 0  # the CPU reports it
    assert result["device"]["backend"] == "cpu" and result["dtype"] == "float32"
    assert "torch" in result["versions"]


@pytest.mark.slow
def test_bench_cli_int8_reports_like_fp32(tmp_path):
    result = run_bench_cli(tmp_path, "sampler.steps=[3,1,2,1]", "backend.options.dtype=int8")
    for key in KEYS:
        assert key in result, key
    assert result["dtype"] == "int8" and result["device"]["dtype"] == "int8"
    assert result["forward_passes"] == 7 == result["expected_forward_passes"]
    assert result["matmul_peak_kind"].startswith("int8") and result["matmul_peak_flops_per_s"] > 0
    assert result["flops_per_pass"] == flops_per_pass(SoundStormConfig.tiny(), 50)
    assert result["config"]["num_parameters"] == SoundStorm(SoundStormConfig.tiny()).num_parameters()
    assert result["weights_bytes"] < result["fp32_weights_bytes"] == 4 * result["config"]["num_parameters"]


@pytest.mark.slow
@pytest.mark.parametrize("overrides, message", [
    (("backend=cuda", "dtype=int8"), "backend.options.dtype='int8' is not supported by the cuda backend"),
    (("dtype=bfloat16",), "dtype='bfloat16' on the cpu backend"),
    (("dtype=bfloat16", "backend.options.dtype=int8"), "disagree"),
])
def test_bench_cli_refuses_a_dtype_the_backend_lacks(tmp_path, overrides, message):
    result = run_cli("soundstorm.cli.bench", "model=tiny", "duration_s=1", "backend=cpu",
                     f"hydra.run.dir={tmp_path}", *overrides, cwd=tmp_path, env={"PJRT_DEVICE": None})
    assert result.returncode == 2 and "soundstorm-bench: error:" in result.stderr, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_bench_cli_paper_schedule_ar_baseline_and_codec(tmp_path):
    result = run_bench_cli(tmp_path, "ar_baseline=true", "codec_decode=true", "warmup_schedule=short")
    assert result["forward_passes"] == 16 + 3
    ar = result["ar_baseline"]
    assert ar["estimate"] is True and ar["sequential_steps"] == 50 * 4
    assert ar["latency_s_estimate"] > 0 and ar["speedup_estimate"] > 0
    assert result["codec_decode_s_median"] > 0


def test_flops_formula_paper_preset():
    cfg = SoundStormConfig.paper()
    t, d, f = 1500, 1024, 4096
    per_layer = 8 * t * d * f + 8 * t * d * d + 4 * t * t * d + 6 * 2 * t * d * d + 2 * t * 2 * d * 5
    assert flops_per_pass(cfg, t) == 12 * per_layer + 2 * t * d * 1024
    assert 1.0e12 < flops_per_pass(cfg, t) < 1.2e12  # ≈ 29 TFLOP for 27 passes
    assert flops_per_pass(cfg, t, batch_size=3) == 3 * flops_per_pass(cfg, t)


@pytest.mark.parametrize("field, value, match", [
    ("duration_s", -1, "duration_s"), ("model", "huge", "BenchConfig.model"), ("runs", 0, "runs"),
    ("sampler", {"steps": [1]}, "BenchConfig.sampler"),
    ("dtype", "float16", "dtype"), ("backend", "tpu", "backend"), ("warmup_schedule", "none", "warmup_schedule"),
    ("compile", "yes", "compile"),
])
def test_bad_bench_config_is_a_value_error(field, value, match):
    with pytest.raises(ValueError, match=match):
        BenchConfig(**{field: value})


def test_duration_must_give_whole_semantic_frames():
    cfg = BenchConfig(model=SoundStormConfig.tiny(), duration_s=0.03)  # 1.5 frames
    with pytest.raises(ValueError, match="duration_s"):
        cfg.num_frames()
    from soundstorm import SamplerConfig

    with pytest.raises(ValueError, match="SamplerConfig.steps has 2 entries"):  # a schedule for another model
        BenchConfig(model=SoundStormConfig.tiny(), sampler=SamplerConfig(steps=(2, 1)))


def test_the_bench_composes_the_model_sampler_and_backend_groups():
    from hydra import compose, initialize_config_module

    from soundstorm import SamplerConfig
    from soundstorm.builders import build_bench_config

    with initialize_config_module("soundstorm.configs", version_base="1.3"):
        cfg = compose("bench", ["model=tiny", "model.depth=1", "sampler=greedy", "backend=cpu", "duration_s=2"])
        with pytest.raises(ValueError, match="unknown bench options"):
            build_bench_config(compose("bench", ["+duration=3"]))
    bench = build_bench_config(cfg)
    assert bench.model == SoundStormConfig.tiny(depth=1) and bench.sampler.resolve(4).steps == (1, 1, 1, 1)
    assert bench.backend == "cpu" and bench.duration_s == 2 and isinstance(bench.sampler, SamplerConfig)


def test_bench_train_mode_times_the_trainers_step():
    from soundstorm.bench import run_bench

    result = run_bench(BenchConfig(mode="train", model=SoundStormConfig.tiny(), duration_s=1, runs=2, warmup=1, backend="cpu",
                                   matmul_size=64, output_json=None))
    assert result["mode"] == "train" and len(result["step_s"]) == 2
    assert result["tokens_per_step"] == 1 * 50 * 4
    assert result["flops_per_step"] == 3 * flops_per_pass(SoundStormConfig.tiny(), 50)
    assert result["tokens_per_s"] == pytest.approx(200 / result["step_s_median"])
    assert result["mfu"] == pytest.approx(result["flops_per_step"] / result["step_s_median"]
                                          / result["matmul_peak_flops_per_s"])
    assert result["nonfinite_steps"] == 0 and result["config"]["num_frames"] == 50


def test_bench_train_mode_refuses_generation_only_options():
    from soundstorm.bench import run_bench

    with pytest.raises(ValueError, match="mode"):
        BenchConfig(mode="serve")
    with pytest.raises(ValueError, match="compile"):
        run_bench(BenchConfig(mode="train", model=SoundStormConfig.tiny(), duration_s=1, backend="cpu", compile=True,
                              matmul_size=64, output_json=None))


def test_gpu_check_script_parses():
    import subprocess  # bash, not a Python child (those go through _cli)

    script = ROOT / "experiments" / "gpu_check" / "run.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
