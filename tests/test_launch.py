"""The XLA launcher of soundstorm-train: when a host starts one process per chip, and the replica plumbing.

torch_xla on ``PJRT_DEVICE=CPU`` runs launched replicas as threads of one process (no multi-process
run is possible here), so the launch decision and the replica wrapper are tested with a fake launcher.
"""

from __future__ import annotations

import pickle

import pytest
from hydra import compose, initialize_config_module

from soundstorm.cli.train import run
from soundstorm.train.launch import processes_per_host


def test_one_process_per_chip_only_for_multiprocess_xla_on_tpu(monkeypatch):
    monkeypatch.delenv("PJRT_LOCAL_PROCESS_RANK", raising=False)
    assert processes_per_host("auto", "xla", False, "TPU") == "xla"
    assert processes_per_host("auto", "auto", False, "TPU") == "xla"
    assert processes_per_host("auto", "xla", True, "TPU") == "single"  # SPMD: one process sees every chip
    assert processes_per_host("auto", "xla", False, "CPU") == "single"
    assert processes_per_host("auto", "cuda", False, None) == "single"  # torchrun starts CUDA processes
    assert processes_per_host("single", "xla", False, "TPU") == "single"
    monkeypatch.setenv("PJRT_LOCAL_PROCESS_RANK", "0")
    assert processes_per_host("auto", "xla", False, "TPU") == "single"  # inside a launched replica
    with pytest.raises(ValueError, match="launch='spawn'"):
        processes_per_host("spawn", "xla", False, "TPU")


def test_run_launches_picklable_replicas_and_returns_their_exit_code(monkeypatch, tmp_path):
    monkeypatch.setenv("PJRT_DEVICE", "TPU")
    monkeypatch.delenv("PJRT_LOCAL_PROCESS_RANK", raising=False)
    with initialize_config_module("soundstorm.configs", version_base="1.3"):
        cfg = compose("train", overrides=["experiment=paper_librilight_tpu", f"data.root={tmp_path / 'none'}",
                                          f"out_dir={tmp_path / 'run'}", "logger=none"])
    launched = []

    def fake_launch(fn, args):
        fn, args = pickle.loads(pickle.dumps((fn, args)))  # what a spawned process receives
        launched.append(dict(args[0]["backend"], options=dict(args[0]["backend"]["options"])))
        args[0]["backend"] = {"name": "cpu", "options": {}}  # replica 0 here: on the CPU, bad data.root
        fn(0, *args)

    assert run(cfg, launcher=fake_launch) == 2
    assert launched == [{"name": "xla", "options": {"dtype": "bfloat16", "spmd": False}}]  # the recipe: bf16
