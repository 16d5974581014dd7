"""torch_xla on the CPU (``PJRT_DEVICE=CPU``): graphs compile once, nothing falls back to ATen.

Counts come from ``torch_xla.debug.metrics``: ``CompileTime`` samples (one per compiled graph) and
``aten::*`` counters (operations XLA could not lower, run on the CPU instead). Run with ``-s`` to
see the measured numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.xla


try:
    import torch_xla  # noqa: F401
    import torch_xla.debug.metrics as met
except ImportError as exc:  # pragma: no cover - depends on the install
    pytest.skip(f"torch_xla is not importable ({exc}); install the [xla] extra", allow_module_level=True)

from soundstorm import SamplerConfig, SoundStorm, SoundStormConfig, generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def backend():
    """An XLABackend on the PJRT CPU device; PJRT_DEVICE is restored afterwards for other tests."""
    old = os.environ.get("PJRT_DEVICE")
    os.environ["PJRT_DEVICE"] = old or "CPU"
    from soundstorm.backends import get_backend

    try:
        yield get_backend("xla")
    finally:
        if old is None:
            os.environ.pop("PJRT_DEVICE", None)


def num_compiles() -> int:
    data = met.metric_data("CompileTime")
    return 0 if data is None else int(data[0])


def aten_fallbacks() -> dict:
    return {name: met.counter_value(name) for name in met.counter_names() if name.startswith("aten::")}


def tiny_model(device, **overrides):
    torch.manual_seed(0)
    return SoundStorm(SoundStormConfig.tiny(**overrides)).to(device)


def test_training_step_compiles_no_new_graph_after_warmup(backend):
    model = tiny_model(backend.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = model.config
    codes_BQT = torch.randint(0, cfg.codebook_size, (2, cfg.num_levels, 16)).to(backend.device)
    semantic_BS = torch.randint(0, cfg.semantic_vocab_size, (2, 8)).to(backend.device)
    lengths_B = torch.tensor([16, 11]).to(backend.device)

    def step():
        with backend.autocast():
            loss, _ = model.loss(codes_BQT, semantic_BS, lengths_B, validate=False)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        backend.optimizer_step(optimizer)
        backend.mark_step()
        return loss

    met.clear_all()
    for _ in range(2):  # the first step creates the optimizer state: a second graph
        step()
    warm = num_compiles()
    losses = [step() for _ in range(3)]
    after = num_compiles()
    print(f"\n[xla] training step: {warm} graphs in 2 warm-up steps, {after - warm} new in 3 more; "
          f"aten fallbacks {aten_fallbacks()}")
    assert after == warm, f"training step recompiled: {warm} graphs after warm-up, {after} after 3 more steps"
    assert aten_fallbacks() == {}
    assert all(torch.isfinite(loss.cpu()) for loss in losses)


def test_generation_compiles_at_most_three_graphs_and_none_for_a_second_clip(backend):
    model = tiny_model(backend.device, num_levels=12).eval()
    cpu_model = SoundStorm(model.config)
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    config = SamplerConfig(steps=(16,) + (1,) * 11)
    semantic_BS = torch.randint(0, model.config.semantic_vocab_size, (2, 10))
    prompt_BQT = torch.randint(0, model.config.codebook_size, (2, 3, 4))

    met.clear_all()
    first_BQT = generate(model, semantic_BS, prompt=prompt_BQT, config=config,
                         generator=torch.Generator().manual_seed(0), mark_step=backend.mark_step).cpu()
    first = num_compiles()
    second_BQT = generate(model, semantic_BS.flip(0), prompt=prompt_BQT, config=config,
                          generator=torch.Generator().manual_seed(1), mark_step=backend.mark_step).cpu()
    second = num_compiles()
    print(f"\n[xla] generation (16, 1 x 11), Q=12, T=20: {first} graphs for the first clip, "
          f"{second - first} new for a second clip; aten fallbacks {aten_fallbacks()}")
    assert first <= 3, f"one generation compiled {first} graphs, expected at most 3"
    assert second == first, f"a second clip of the same length compiled {second - first} new graphs"
    assert aten_fallbacks() == {}
    # same seed, same tokens as on the CPU
    reference_BQT = generate(cpu_model, semantic_BS, prompt=prompt_BQT, config=config,
                             generator=torch.Generator().manual_seed(0))
    assert torch.equal(first_BQT, reference_BQT)
    assert torch.equal(second_BQT[:, :3, :4], prompt_BQT)


def test_backend_interface(backend, tmp_path):
    assert backend.device.type == "xla"
    info = backend.init_distributed()
    assert info.world_size == 1 and info.is_main
    loader = backend.wrap_dataloader(torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(8.0).view(4, 2)), batch_size=2))
    batches = [batch for (batch,) in loader]
    assert len(batches) == 2 and all(b.device.type == "xla" for b in batches)
    total = backend.all_reduce_sum(torch.ones(3, device=backend.device))
    backend.barrier()
    backend.sync()
    assert total.cpu().tolist() == [1.0, 1.0, 1.0]
    path = tmp_path / "state.pt"
    backend.save({"w": torch.arange(3.0, device=backend.device)}, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["w"].device.type == "cpu" and loaded["w"].tolist() == [0.0, 1.0, 2.0]
    peak = backend.peak_memory_bytes()
    assert peak is None or peak >= 0
    assert backend.describe()["backend"] == "xla"


def test_bad_dtype_is_a_value_error(backend):
    from soundstorm.backends.xla import XLABackend

    with pytest.raises(ValueError, match="dtype"):
        XLABackend(dtype="float16")


SPMD_SCRIPT = textwrap.dedent("""
    import torch, torch_xla.debug.metrics as met
    from soundstorm import SoundStorm, SoundStormConfig
    from soundstorm.backends import get_backend
    torch.manual_seed(0)
    model = SoundStorm(SoundStormConfig.tiny())
    cfg = model.config
    codes = torch.randint(0, cfg.codebook_size, (4, cfg.num_levels, 16))
    semantic = torch.randint(0, cfg.semantic_vocab_size, (4, 8))
    corruption = __import__("soundstorm").corrupt(codes, None, torch.Generator().manual_seed(0), mask_id=cfg.mask_id)
    ref, _ = model.loss_on_corruption(codes, semantic, None, corruption)
    backend = get_backend("xla", spmd=True)
    model.to(backend.device)
    inputs = [backend.shard_batch(t.to(backend.device)) for t in
              (codes, semantic, corruption.inputs, corruption.loss_mask, corruption.level)]
    corruption.inputs, corruption.loss_mask, corruption.level = inputs[2:]
    loss, _ = model.loss_on_corruption(inputs[0], inputs[1], None, corruption)
    loss.backward()
    backend.mark_step()
    import torch_xla.runtime as xr
    print("DEVICES", xr.global_runtime_device_count(), "LOSS", float(loss.cpu()), float(ref))
    assert abs(float(loss.cpu()) - float(ref)) < 1e-4
""")


def test_spmd_data_parallel_on_cpu_devices():
    """SPMD over 4 PJRT CPU devices: the batch is sharded, the loss equals the single-device one."""
    env = {**os.environ, "PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "4", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", SPMD_SCRIPT], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    print("\n[xla] spmd:", [line for line in result.stdout.splitlines() if line.startswith("DEVICES")])
