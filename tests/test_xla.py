"""torch_xla on the CPU (``PJRT_DEVICE=CPU``): graphs compile once, nothing falls back to ATen.

Each check runs in a fresh process (``tests/xla_checks.py``; see its docstring for why) with
``PJRT_DEVICE=CPU`` and reports JSON; run pytest with ``-s`` to see the measured numbers.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import textwrap
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


def run_check(name: str, tmp_path) -> dict:
    result = run_python([str(ROOT / "tests" / "xla_checks.py"), name, str(tmp_path)])
    line = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")][-1]
    measured = json.loads(line[len("RESULT "):])
    print(f"\n[xla] {name}: {measured}")
    return measured


def test_training_step_compiles_no_new_graph_after_warmup(tmp_path):
    measured = run_check("training_step", tmp_path)
    assert measured["new_graphs_after_warmup"] == 0, measured
    assert measured["aten_fallbacks"] == {}, measured
    assert all(loss == loss for loss in measured["losses"])  # finite, not NaN


def test_generation_compiles_at_most_three_graphs_and_none_for_a_second_clip(tmp_path):
    measured = run_check("generation", tmp_path)
    assert measured["first_clip_graphs"] <= 3, measured
    assert measured["second_clip_new_graphs"] == 0, measured
    assert measured["aten_fallbacks"] == {}, measured
    assert measured["equal_to_cpu"] and measured["prompt_kept"], measured


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


SPMD_SCRIPT = textwrap.dedent("""
    import torch
    from soundstorm import SoundStorm, SoundStormConfig, corrupt
    from soundstorm.masking import masked_loss
    from soundstorm.backends import get_backend
    torch.manual_seed(0)
    model = SoundStorm(SoundStormConfig.tiny())
    cfg = model.config
    codes = torch.randint(0, cfg.codebook_size, (4, cfg.num_levels, 16))
    semantic = torch.randint(0, cfg.semantic_vocab_size, (4, 8))
    corruption = corrupt(codes, None, torch.Generator().manual_seed(0), mask_id=cfg.mask_id)
    ref, _ = masked_loss(model, codes, semantic, None, corruption)
    backend = get_backend("xla", spmd=True)
    model.to(backend.device)
    inputs = [backend.shard_batch(t.to(backend.device)) for t in
              (codes, semantic, corruption.inputs, corruption.loss_mask, corruption.level)]
    corruption.inputs, corruption.loss_mask, corruption.level = inputs[2:]
    loss, _ = masked_loss(model, inputs[0], inputs[1], None, corruption)
    loss.backward()
    backend.mark_step()
    import torch_xla.runtime as xr
    print("DEVICES", xr.global_runtime_device_count(), "LOSS", float(loss.cpu()), float(ref))
    assert abs(float(loss.cpu()) - float(ref)) < 1e-4
""")


def test_spmd_data_parallel_on_cpu_devices():
    """SPMD over 4 PJRT CPU devices: the batch is sharded, the loss equals the single-device one."""
    result = run_python(["-c", SPMD_SCRIPT], {"CPU_NUM_DEVICES": "4"})
    print("\n[xla] spmd:", [line for line in result.stdout.splitlines() if line.startswith("DEVICES")])
