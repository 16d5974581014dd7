"""XLA checks run in a fresh process by tests/test_xla.py (``python tests/xla_checks.py NAME DIR``).

A fresh process because torch_xla must be imported before the first backward pass of the process
(autograd sizes its device queues then) and PJRT_DEVICE must be set before torch_xla starts; it
prints one JSON line with what it measured. Counts come from ``torch_xla.debug.metrics``:
``CompileTime`` samples (one per compiled graph) and ``aten::*`` counters (operations XLA could
not lower and ran on the CPU instead).
"""

from __future__ import annotations

import inspect
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
    loaded = backend.state_dict_to_cpu({"w": torch.arange(3.0, device=backend.device)})  # what checkpoints write
    from soundstorm.backends import OPTIONS
    from soundstorm.backends.xla import XLABackend

    try:
        XLABackend(dtype="float16")
        bad_dtype = "accepted"
    except ValueError as exc:
        bad_dtype = str(exc)
    return {"device": backend.device.type, "world_size": info.world_size, "loader_devices": devices,
            "all_reduce": total.cpu().tolist(), "saved_device": loaded["w"].device.type,
            "saved": loaded["w"].tolist(), "peak_memory_bytes": backend.peak_memory_bytes(),
            "describe": backend.describe(), "bad_dtype_error": bad_dtype,
            "attention": backend.configure_model(tiny_model(backend.device), activation_checkpointing=True),
            "options_taken": sorted(set(OPTIONS["xla"]) & set(inspect.signature(XLABackend.__init__).parameters))}


def evaluation(backend, _directory) -> dict:
    """Teacher-forced evaluation (2 ratios × Q levels × 2 batch shapes) and windowed long-form generation,
    each run twice: the second run must compile nothing. Windowed output compared with the CPU."""
    from soundstorm.evaluation.teacher_forced import teacher_forced_sums
    from soundstorm.longform import generate_windowed

    model = tiny_model(backend.device).eval()
    cpu_model = SoundStorm(model.config)
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    batches = [{"codes": torch.randint(0, cfg.codebook_size, (b, cfg.num_levels, t), generator=g).to(backend.device),
                "semantic": torch.randint(0, cfg.semantic_vocab_size, (b, t // 2), generator=g).to(backend.device),
                "lengths": torch.tensor([t] * (b - 1) + [t - 2]).to(backend.device)} for b, t in ((2, 16), (1, 24))]
    met.clear_all()
    first = teacher_forced_sums(model, batches, [0.5, 1.0], mark_step=backend.mark_step)
    warm = num_compiles()
    second = teacher_forced_sums(model, batches, [0.5, 1.0], mark_step=backend.mark_step)
    eval_new = num_compiles() - warm
    config = SamplerConfig(steps=(4, 1, 1, 1))
    semantic_S = torch.randint(0, cfg.semantic_vocab_size, (20,), generator=g)  # 40 frames: windows of 16, prompt 4
    kwargs = dict(window_frames=16, prompt_frames=4, config=config, mark_step=backend.mark_step)
    before = num_compiles()
    long_QT = generate_windowed(model, semantic_S, generator=torch.Generator().manual_seed(0), **kwargs)
    long_graphs = num_compiles() - before
    generate_windowed(model, semantic_S.flip(0), generator=torch.Generator().manual_seed(1), **kwargs)
    long_new = num_compiles() - before - long_graphs
    reference_QT = generate_windowed(cpu_model, semantic_S, window_frames=16, prompt_frames=4, config=config,
                                     generator=torch.Generator().manual_seed(0))
    return {"eval_graphs": warm, "eval_new_graphs": eval_new, "eval_equal": bool(torch.equal(first.cpu(), second.cpu())),
            "long_graphs": long_graphs, "long_new_graphs": long_new,
            "long_equal_to_cpu": bool(torch.equal(long_QT, reference_QT)), "aten_fallbacks": aten_fallbacks()}


def _trainer(backend, out_dir, per_device_batch: int):
    """The real Trainer on in-memory tokens: clipping active, EMA on, step 2's loss made NaN (skipped)."""
    import functools

    from _tokens import RandomTokens, collate, sampler_for
    from soundstorm.train.data import make_batch_source
    from soundstorm.train.loop import Trainer, TrainerConfig
    from soundstorm.train.optim import OptimConfig, make_optimizer, make_scheduler

    model = tiny_model(backend.device)
    dataset = RandomTokens(num_items=32)
    process_batch = per_device_batch * backend.devices_per_process
    batches = make_batch_source(dataset, sampler_for(len(dataset), process_batch), functools.partial(
        collate, frames_multiple=8), 0, model.config.mask_id, wrap=backend.wrap_dataloader)
    optim_cfg = OptimConfig(lr=3e-3, warmup_steps=1, total_steps=4)
    optimizer = make_optimizer(model, optim_cfg)
    config = TrainerConfig(max_steps=4, grad_clip=0.05, ema_decay=0.9, log_every=4, ckpt_every=1000,
                           eval_every=1000, progress=False)
    trainer = Trainer(model, backend, optimizer, make_scheduler(optimizer, optim_cfg), config, out_dir, batches)
    inner, calls = trainer.loss_module, []

    def nan_on_second_step(*args):
        loss, metrics = inner(*args)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 2 else loss), metrics

    trainer.loss_module = nan_on_second_step
    return trainer


def spmd_trainer(backend, directory) -> dict:
    """SPMD over every device through the real Trainer vs. the CPU backend on the same global batch."""
    import torch_xla

    backend.init_distributed()
    num_devices = backend.devices_per_process
    trainer = _trainer(backend, os.path.join(directory, "spmd"), 8 // num_devices)
    batch = next(iter(trainer.batches(0, 0)))
    shards = {k: [list(t.shape) for t, _ in torch_xla._XLAC._get_local_shards([batch[k]])[0]]
              for k in ("codes", "semantic", "lengths", "inputs", "loss_mask", "level")}
    met.clear_all()
    spmd_metrics = trainer.fit()
    cpu = get_backend("cpu")
    cpu.init_distributed()
    reference = _trainer(cpu, os.path.join(directory, "cpu"), 8)
    cpu_metrics = reference.fit()
    params = {k: v.cpu() for k, v in trainer.model.state_dict().items()}
    ema = {k: v.cpu() for k, v in trainer.ema.state_dict().items()}
    changed = max((params[k] - v).abs().max().item() for k, v in tiny_model("cpu").state_dict().items())
    return {"num_devices": num_devices, "shards": shards, "param_max_diff": max(
                (params[k] - v).abs().max().item() for k, v in reference.model.state_dict().items()),
            "ema_max_diff": max((ema[k] - v).abs().max().item() for k, v in reference.ema.state_dict().items()),
            "param_max_change": changed, "grad_norm": [spmd_metrics["train/grad_norm"], cpu_metrics["train/grad_norm"]],
            "loss": [spmd_metrics["train/loss"], cpu_metrics["train/loss"]],
            "nonfinite_skipped": [spmd_metrics["train/nonfinite_skipped"], cpu_metrics["train/nonfinite_skipped"]],
            "aten_fallbacks": aten_fallbacks()}


if __name__ == "__main__":
    name, directory = sys.argv[1], sys.argv[2]
    checks = {"training_step": training_step, "generation": generation, "interface": interface,
              "evaluation": evaluation, "spmd_trainer": spmd_trainer}
    result = checks[name](get_backend("xla", spmd=name.startswith("spmd")), directory)
    print("RESULT " + json.dumps(result, default=str))
