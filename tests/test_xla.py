"""torch_xla on the CPU (``PJRT_DEVICE=CPU``): graphs compile once, nothing falls back to ATen.

Each check runs in a fresh process (``tests/xla_checks.py``; see its docstring for why) with
``PJRT_DEVICE=CPU`` and reports JSON; run pytest with ``-s`` to see the measured numbers.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
from pathlib import Path

import _cli
import pytest

pytestmark = [
    pytest.mark.xla,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("torch_xla") is None,
                       reason="torch_xla is not installed (pip install '.[xla]')"),
]

ROOT = Path(__file__).resolve().parents[1]


def run_python(args: list, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    return _cli.run_python(args, env={"PJRT_DEVICE": "CPU", **(extra_env or {})},
                           timeout=600, check=True)


def run_check(name: str, tmp_path, extra_env: dict | None = None) -> dict:
    result = run_python([str(ROOT / "tests" / "xla_checks.py"), name, str(tmp_path)], extra_env)
    line = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")][-1]
    measured = json.loads(line[len("RESULT "):])
    print(f"\n[xla] {name}: {measured}")
    return measured


def test_training_step_compiles_no_new_graph_after_warmup(tmp_path):
    measured = run_check("training_step", tmp_path)
    assert measured["new_graphs_after_warmup"] == 0, measured
    assert measured["aten_fallbacks"] == {}, measured
    assert measured["losses"] and all(math.isfinite(loss) for loss in measured["losses"]), measured["losses"]


def test_generation_compiles_at_most_three_graphs_and_none_for_a_second_clip(tmp_path):
    measured = run_check("generation", tmp_path)
    assert measured["first_clip_graphs"] <= 3, measured
    assert measured["second_clip_new_graphs"] == 0, measured
    assert measured["aten_fallbacks"] == {}, measured
    assert measured["equal_to_cpu"] and measured["prompt_kept"], measured


def test_evaluation_and_windowed_generation_compile_nothing_after_warmup(tmp_path):
    """Step cuts in teacher-forced evaluation and long-form generation: a second run compiles no graph,
    one graph serves every level and ratio (16 passes, 2 batch shapes), windows match the CPU."""
    measured = run_check("evaluation", tmp_path)
    assert measured["eval_new_graphs"] == 0 and measured["long_new_graphs"] == 0, measured
    assert measured["eval_graphs"] <= 6 and measured["long_graphs"] <= 5, measured
    assert measured["eval_equal"] and measured["long_equal_to_cpu"], measured
    assert measured["aten_fallbacks"] == {}, measured


def test_backend_interface(tmp_path):
    measured = run_check("interface", tmp_path)
    assert measured["device"] == "xla" and measured["world_size"] == 1
    assert measured["loader_devices"] == ["xla", "xla"]
    assert measured["all_reduce"] == [1.0, 1.0, 1.0]
    assert measured["saved_device"] == "cpu" and measured["saved"] == [0.0, 1.0, 2.0]
    # PJRT's CPU client has no allocator statistics (GetAllocatorStats: UNIMPLEMENTED): the backend must
    # say "unknown", not invent a number (a TPU reports peak_bytes_used).
    assert measured["peak_memory_bytes"] is None
    assert measured["describe"]["backend"] == "xla"
    assert "dtype" in measured["bad_dtype_error"] and "float16" in measured["bad_dtype_error"]
    assert measured["attention"] == "sdpa"  # Pallas flash attention on a TPU only
    assert measured["options_taken"] == ["dtype", "spmd"]  # every xla option of the table is an XLABackend argument


def test_spmd_trainer_shards_the_batch_and_matches_one_device(tmp_path):
    """SPMD over 4 PJRT CPU devices through the real Trainer (loader, clipping, non-finite guard, EMA):
    each device holds 1/4 of the global batch of 8, and 4 steps (one skipped) give the CPU backend's
    weights and EMA on the same global batches."""
    measured = run_check("spmd_trainer", tmp_path, {"CPU_NUM_DEVICES": "4"})
    assert measured["num_devices"] == 4
    for name, shapes in measured["shards"].items():
        assert len(shapes) == 4 and all(shape[0] == 2 for shape in shapes), (name, shapes)
    assert measured["grad_norm"][0] > 0.05  # above trainer.grad_clip: clipping was active
    assert measured["nonfinite_skipped"] == [1, 1]
    assert measured["param_max_diff"] < 1e-4 < measured["param_max_change"], measured
    assert measured["ema_max_diff"] < 1e-4, measured
    assert measured["aten_fallbacks"] == {}, measured


@pytest.mark.slow
def test_train_cli_on_xla_compiles_one_graph_per_bucket(espeak_tokens, tmp_path):
    """``soundstorm-train experiment=quickstart_cpu backend=xla`` over variable-length windows: the CPU
    experiment's ``num_threads`` is dropped, batches come in the derived frame buckets, every bucket is
    trained on and the compiled graphs stay within buckets + warm-up."""
    from soundstorm.train.graphs import WARMUP_GRAPHS

    tiny = ("model.dim=32", "model.depth=1", "model.heads=2", "model.ff_dim=64", "model.conv_kernel=3",
            "semantic.vocab_size=32", "data.batch_size=4", "data.max_seconds=3.0",  # the espeak test tokens:
            "codec.num_levels=4", "codec.codebook_size=64", "semantic=mfcc_kmeans", "semantic.frame_rate=25.0",
            "trainer.level_weights=[6,3,2,1]")  # the quickstart's coarse-weighted draw, on 4 levels
    result = run_python(["-m", "soundstorm.cli.train", "experiment=quickstart_cpu", "backend=xla",
                         f"data.root={espeak_tokens}", f"out_dir={tmp_path / 'run'}", "logger=none",
                         "trainer.max_steps=32", "trainer.log_every=16", "trainer.progress=false", *tiny],
                        {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})
    assert "num_threads" not in result.stderr  # the quickstart leaves it null: nothing for XLA to drop
    shapes = re.search(r"static shapes: (\d+) batch shape\(s\) \[B=4, T in \[([\d, ]+)\]\] -> at most (\d+)",
                       result.stdout)
    assert shapes, result.stdout[-2000:]
    num_shapes, limit = int(shapes.group(1)), int(shapes.group(3))
    last = [line for line in result.stdout.splitlines() if line.startswith("step 32 ")][0]
    graphs = int(re.search(r"compiled_graphs=(\d+)", last).group(1))
    seen = int(re.search(r"batch_shapes_seen=(\d+)", last).group(1))
    print(f"\n[xla] train CLI: {num_shapes} buckets ({shapes.group(2)}), {seen} seen, {graphs} graphs, limit {limit}")
    assert num_shapes == 4 and seen == num_shapes, last
    assert graphs <= num_shapes + WARMUP_GRAPHS, last
