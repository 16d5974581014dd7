"""Backend selection and the CPU backend's interface (the XLA one is tested in test_xla.py)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect

import pytest
import torch

from soundstorm.backends import get_backend, resolve_name
from soundstorm.backends.cpu import CPUBackend


def test_auto_without_pjrt_is_cuda_or_cpu(monkeypatch):
    monkeypatch.delenv("PJRT_DEVICE", raising=False)
    assert resolve_name("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(importlib.util.find_spec("torch_xla") is None, reason="torch_xla is not installed")
def test_auto_with_pjrt_is_xla(monkeypatch):
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    assert resolve_name("auto") == "xla"


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="'tpu'"):
        resolve_name("tpu")


def test_xla_backend_is_not_imported_for_cpu():
    """In a fresh interpreter: inside the test session another test may already have imported torch_xla."""
    import subprocess
    import sys

    code = ("import sys; from soundstorm.backends import get_backend; get_backend('cpu'); "
            "print(sorted(m for m in ('torch_xla', 'soundstorm.backends.xla') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def test_cpu_backend_interface(tmp_path):
    backend = get_backend("cpu")
    assert isinstance(backend, CPUBackend) and backend.device == torch.device("cpu")
    assert backend.init_distributed().world_size == 1
    with backend.autocast():
        y = torch.ones(2) * 2
    backend.mark_step()
    backend.sync()
    assert backend.all_reduce_sum(y).tolist() == [2.0, 2.0]
    backend.barrier()
    model = torch.nn.Linear(2, 2)
    assert backend.wrap_model(model) is model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    before = model.weight.detach().clone()
    backend.optimizer_step(optimizer)
    assert not torch.equal(before, model.weight)
    batch = backend.to_device({"x": torch.ones(1), "name": "a"})
    assert batch["name"] == "a" and batch["x"].device.type == "cpu"
    assert list(backend.wrap_dataloader([1, 2])) == [1, 2]
    state = backend.state_dict_to_cpu({"w": model.weight, "steps": [3, torch.ones(2)]})  # what a checkpoint writes
    assert torch.equal(state["w"], model.weight.detach()) and not state["w"].requires_grad
    assert state["steps"][0] == 3 and state["steps"][1].device.type == "cpu"
    assert backend.describe()["backend"] == "cpu"


def test_cpu_peak_memory_sees_a_large_allocation():
    backend = CPUBackend()
    backend.reset_peak_memory()
    base = backend.current_memory_bytes()
    if base is None:
        pytest.skip("no /proc/self/status on this platform")
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    del x
    assert backend.peak_memory_bytes() - base >= 60 * 2**20


def test_cpu_bad_threads_is_a_value_error():
    with pytest.raises(ValueError, match="num_threads"):
        CPUBackend(num_threads=0)


def test_options_of_another_backend_are_dropped_with_a_note(capsys):
    """An experiment written for one backend can be run on another (``experiment=quickstart_cpu backend=...``)."""
    from soundstorm.backends import OPTIONS, backend_options

    assert backend_options("xla", {"num_threads": 1, "dtype": "bfloat16"}) == {"dtype": "bfloat16"}
    assert "backend.options.num_threads=1 applies to backend cpu only, dropped for backend 'xla'" in \
        capsys.readouterr().err
    assert backend_options("cpu", {"num_threads": 2}) == {"num_threads": 2}
    assert backend_options("xla", {"num_threads": None}) == {} and capsys.readouterr().err == ""  # null: no note
    for name, table in OPTIONS.items():  # every option in the table is a constructor argument of its backend
        module = {"cpu": "soundstorm.backends.cpu", "cuda": "soundstorm.backends.cuda",
                  "xla": "soundstorm.backends.xla"}[name]
        if name == "xla":  # importing it here would load torch_xla into this process: checked in xla_checks
            continue
        cls = getattr(importlib.import_module(module), f"{name.upper()}Backend")
        assert set(table) <= set(inspect.signature(cls.__init__).parameters), (name, table)


def test_an_option_of_no_backend_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=r"backend.options.num_thread is not an option of any backend.*'cpu'"):
        get_backend("cpu", num_thread=1)
