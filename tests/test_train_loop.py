"""The training loop in-process on an in-memory token dataset: learning, exact resume, checkpoints,
non-finite handling."""

import math

import pytest
import torch

from soundstorm import SoundStorm, SoundStormConfig
from soundstorm.backends import get_backend
from soundstorm.train import checkpoint as ckpt
from soundstorm.train.data import make_batch_source
from soundstorm.train.loop import NonFiniteLossError, Trainer, TrainerConfig
from soundstorm.train.optim import OptimConfig, make_optimizer, make_scheduler

from _tokens import RandomTokens, collate, sampler_for


def make_trainer(out_dir, max_steps=6, seed=0, lr=3e-3, total_steps=None, **trainer_overrides):
    torch.manual_seed(seed)
    model = SoundStorm(SoundStormConfig.tiny())
    dataset = RandomTokens(num_items=24)
    backend = get_backend("cpu")
    backend.init_distributed()
    optim_cfg = OptimConfig(lr=lr, warmup_steps=2, total_steps=total_steps or max_steps)
    optimizer = make_optimizer(model, optim_cfg)
    batches = make_batch_source(dataset, sampler_for(len(dataset), 4, seed), collate, seed, model.config.mask_id)
    config = TrainerConfig(**{"max_steps": max_steps, "log_every": 2, "ckpt_every": 1000, "eval_every": 1000,
                              "progress": False, **trainer_overrides})
    return Trainer(model, backend, optimizer, make_scheduler(optimizer, optim_cfg), config, out_dir, batches)


def weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_the_cpu_trainer_computes_the_head_on_loss_tokens_only_and_steps_as_the_fixed_shape_path(tmp_path):
    """On the host the trainer takes masked_loss's loss-token path; one step on the same batch moves
    the weights as the fixed-shape path (the XLA/CUDA one) does, to float rounding."""
    trainer = make_trainer(tmp_path / "a", max_steps=2)
    assert trainer.loss_module.loss_tokens_only
    fixed = make_trainer(tmp_path / "b", max_steps=2)
    fixed.loss_module.loss_tokens_only = False
    for t in (trainer, fixed):
        t.model.train()
        t._zero_sums()
        t.train_step()
    a, b = weights(trainer), weights(fixed)
    assert any(not torch.equal(a[k], v) for k, v in weights(make_trainer(tmp_path / "c")).items())
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k


@pytest.mark.slow  # 60 optimizer steps through the trainer
def test_loss_decreases(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=60, log_every=10)
    first = None
    trainer.model.train()
    trainer._zero_sums()
    for _ in range(10):
        trainer.train_step()
    first = trainer._read_metrics()["train/loss"]
    last = trainer.fit()
    assert last["train/loss"] < first - 0.5, (first, last["train/loss"])
    assert len(last["train/loss_per_level"]) == 4


def test_level_weights_reach_the_training_batches():
    """trainer.level_weights flows through the data path: weight only on the finest level → only it is trained."""
    dataset = RandomTokens(num_items=24)
    weights_Q = torch.tensor([0.0, 0.0, 0.0, 1.0])
    batches = make_batch_source(dataset, sampler_for(len(dataset), 4, 0), collate, 0,
                                SoundStormConfig.tiny().mask_id, level_weights=weights_Q)
    levels = torch.cat([batch["level"] for batch in batches(0, 0)])
    assert levels.numel() == 24 and bool((levels == 3).all())
    uniform = torch.cat([batch["level"] for batch in make_batch_source(
        dataset, sampler_for(len(dataset), 4, 0), collate, 0, SoundStormConfig.tiny().mask_id)(0, 0)])
    assert len(set(uniform.tolist())) > 1


def test_exact_resume(tmp_path):
    straight = make_trainer(tmp_path / "a", max_steps=9, ema_decay=0.9)  # 6 batches per epoch: crosses an epoch
    straight.fit()
    part = make_trainer(tmp_path / "b", max_steps=4, total_steps=9, ema_decay=0.9)
    part.fit()
    assert (tmp_path / "b" / "checkpoints" / "step_00000004" / "ema.safetensors").is_file()
    resumed = make_trainer(tmp_path / "b", max_steps=9, ema_decay=0.9)
    resumed.fit(resume_from=ckpt.resolve_resume("auto", tmp_path / "b" / "checkpoints"))
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(straight.ema.shadow[k], resumed.ema.shadow[k]) for k in a)
    assert resumed.optimizer.state_dict()["state"][0]["step"] == straight.optimizer.state_dict()["state"][0]["step"]


def test_resume_differs_without_state(tmp_path):
    """The exact-resume test can fail: restarting from scratch gives other weights."""
    straight = make_trainer(tmp_path / "a", max_steps=9)
    straight.fit()
    other = make_trainer(tmp_path / "b", max_steps=9, seed=1)
    other.fit()
    assert not all(torch.equal(v, weights(other)[k]) for k, v in weights(straight).items())


def test_keep_last_and_crash_before_rename(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, max_steps=6, ckpt_every=1, keep_last=2)
    trainer.fit()
    root = tmp_path / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000005", "step_00000006"]
    before = weights(trainer)

    def crash(*args, **kwargs):
        raise OSError("simulated crash between writing and renaming")

    trainer.step = 7
    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(OSError):
        trainer.save()
    monkeypatch.undo()
    latest = ckpt.resolve_resume("auto", root)
    assert latest.name == "step_00000006"
    model_state, state, _ = ckpt.load_checkpoint(latest)
    assert state["step"] == 6 and all(torch.equal(model_state[k], before[k]) for k in model_state)
    assert not list(root.glob(".tmp-*"))
    assert SoundStorm.from_pretrained(latest).config == trainer.model.config


def test_half_written_checkpoint_is_ignored(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=2)
    trainer.fit()
    root = tmp_path / "checkpoints"
    broken = root / "step_00000009"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"partial")
    assert ckpt.resolve_resume("auto", root).name == "step_00000002"
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        ckpt.resolve_resume(str(broken), root)
    with pytest.raises(FileNotFoundError, match="resume="):
        ckpt.resolve_resume(str(root / "nope"), root)


def test_nonfinite_steps_skipped_then_stop(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, max_steps=8, log_every=2, max_nonfinite=3)
    import soundstorm.train.loop as loop

    original = loop.masked_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, metrics = original(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] in (2, 3) else loss), metrics

    monkeypatch.setattr(loop, "masked_loss", poisoned)
    trainer.model.train()
    trainer._zero_sums()
    trainer.train_step()
    before = weights(trainer)
    trainer.train_step()  # NaN: skipped, weights unchanged
    assert all(torch.equal(before[k], v) for k, v in weights(trainer).items())
    assert all(torch.isfinite(v).all() for v in trainer.optimizer.state_dict()["state"][0].values())
    metrics = trainer._read_metrics()
    assert metrics["train/nonfinite_skipped"] == 1 and math.isfinite(metrics["train/loss"])
    calls["n"] = 1
    trainer.config.max_nonfinite = 1
    with pytest.raises(NonFiniteLossError, match="max_nonfinite=1"):
        trainer.fit()


class _RecompilingCPU(type(get_backend("cpu"))):
    """A CPU backend that reports one new compiled graph per step cut, as XLA does with a dynamic shape."""

    def __init__(self):
        super().__init__()
        self.graphs = 0

    def mark_step(self):
        self.graphs += 1

    def compiled_graphs(self):
        return self.graphs


def test_graph_guard_stops_a_run_that_compiles_every_step(tmp_path):
    from soundstorm.train.graphs import WARMUP_GRAPHS, GraphBudget, GraphBudgetExceeded

    trainer = make_trainer(tmp_path, max_steps=40)
    trainer.backend = _RecompilingCPU()
    trainer.graph_budget = GraphBudget(shapes=(16,), batch_size=4)
    with pytest.raises(GraphBudgetExceeded, match=r"dynamic shape.*host sync") as err:
        trainer.fit()
    assert trainer.step < 40 and f"more than the {1 + WARMUP_GRAPHS}" in str(err.value)
    assert trainer.batch_shapes_seen  # shapes of codes [B, Q, T] are recorded


def test_graph_guard_counts_accumulation_positions_and_honours_max_graphs():
    from soundstorm.train.graphs import WARMUP_GRAPHS, GraphBudget

    assert GraphBudget((100, 200), 4, grad_accum=1).limit == 2 + WARMUP_GRAPHS
    assert GraphBudget((100, 200), 4, grad_accum=8).limit == 6 + WARMUP_GRAPHS
    budget = GraphBudget((100,), 4, max_graphs=50)
    budget.check(50, step=10)
    with pytest.raises(RuntimeError, match="trainer.max_graphs=50"):
        budget.check(51, step=11)
