"""XLA checks run in a fresh process by tests/test_xla.py (``python tests/xla_checks.py NAME DIR``).

A fresh process because torch_xla must be imported before the first backward pass of the process
(autograd sizes its device queues then) and PJRT_DEVICE must be set before torch_xla starts; it
prints one JSON line with what it measured. Counts come from ``torch_xla.debug.metrics``:
``CompileTime`` samples (one per compiled graph) and ``aten::*`` counters (operations XLA could
not lower and ran on the CPU instead).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("PJRT_DEVICE", "CPU")

import torch  # noqa: E402
import torch_xla.debug.metrics as met  # noqa: E402

from soundstorm import SamplerConfig, SoundStorm, SoundStormConfig, generate  # noqa: E402
from soundstorm.backends import get_backend  # noqa: E402


def num_compiles() -> int:
    data = met.metric_data("CompileTime")
    return 0 if data is None else int(data[0])


def aten_fallbacks() -> dict:
    return {name: met.counter_value(name) for name in met.counter_names() if name.startswith("aten::")}


def tiny_model(device, **overrides):
    torch.manual_seed(0)
    return SoundStorm(SoundStormConfig.tiny(**overrides)).to(device)


def training_step(backend, _directory) -> dict:
    """2 warm-up steps (the first creates the optimizer state), then 3 more."""
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
        backend.reduce_gradients(optimizer)  # as the training loop does, before clipping
        backend.optimizer_step(optimizer)
        backend.mark_step()
        return loss

    met.clear_all()
    for _ in range(2):
        step()
    warm = num_compiles()
    losses = [step() for _ in range(3)]
    return {"warmup_graphs": warm, "new_graphs_after_warmup": num_compiles() - warm,
            "aten_fallbacks": aten_fallbacks(), "losses": [float(loss.cpu()) for loss in losses]}


def generation(backend, _directory) -> dict:
    """Two clips of the same length with (16, 1 × 11) on Q = 12; the first compared with the CPU."""
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
    fallbacks = aten_fallbacks()
    reference_BQT = generate(cpu_model, semantic_BS, prompt=prompt_BQT, config=config,
                             generator=torch.Generator().manual_seed(0))
    return {"first_clip_graphs": first, "second_clip_new_graphs": second - first, "aten_fallbacks": fallbacks,
            "equal_to_cpu": bool(torch.equal(first_BQT, reference_BQT)),
            "prompt_kept": bool(torch.equal(second_BQT[:, :3, :4], prompt_BQT))}


def interface(backend, directory) -> dict:
    info = backend.init_distributed()
    loader = backend.wrap_dataloader(torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(8.0).view(4, 2)), batch_size=2))
    devices = [batch.device.type for (batch,) in loader]
    total = backend.all_reduce_sum(torch.ones(3, device=backend.device))
    backend.barrier()
    backend.sync()
    path = os.path.join(directory, "state.pt")
    backend.save({"w": torch.arange(3.0, device=backend.device)}, path)
    loaded = torch.load(path, weights_only=True)
    try:
        from soundstorm.backends.xla import XLABackend

        XLABackend(dtype="float16")
        bad_dtype = "accepted"
    except ValueError as exc:
        bad_dtype = str(exc)
    return {"device": backend.device.type, "world_size": info.world_size, "loader_devices": devices,
            "all_reduce": total.cpu().tolist(), "saved_device": loaded["w"].device.type,
            "saved": loaded["w"].tolist(), "peak_memory_bytes": backend.peak_memory_bytes(),
            "describe": backend.describe(), "bad_dtype_error": bad_dtype}


if __name__ == "__main__":
    name, directory = sys.argv[1], sys.argv[2]
    result = {"training_step": training_step, "generation": generation, "interface": interface}[name](
        get_backend("xla"), directory)
    print("RESULT " + json.dumps(result, default=str))
