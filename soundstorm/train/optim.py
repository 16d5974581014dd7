"""Optimisation pieces of the training loop: AdamW, warmup + cosine schedule, EMA, guarded step.

* :func:`make_optimizer` builds AdamW (:class:`~.adamw.SkippableAdamW`) with weight decay on matrices only.
* :class:`WarmupCosine` is the multiplier given to ``torch.optim.lr_scheduler.LambdaLR``: linear
  warmup to 1, then a cosine down to ``min_ratio`` at ``total_steps``. It is a small class (not a
  lambda) so the scheduler's ``state_dict`` holds plain numbers and loads with ``weights_only=True``.
* :class:`EMA` keeps an exponential moving average of the parameters with ``torch._foreach_lerp_``
  (``torch.optim.swa_utils.AveragedModel`` reads its counter back to the host every update).
* :func:`optim_settings` / :func:`apply_optim_settings`: on resume, changed ``optim.*`` settings are
  applied over the checkpoint's (the schedule recomputed at the restored step), not ignored.
* :func:`guarded_step` steps the optimizer with the update skipped on device when ``finite`` is False,
  so a non-finite loss or gradient is skipped without a host sync and without copying any state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from soundstorm.train.adamw import SkippableAdamW


@dataclass
class OptimConfig:
    """AdamW and its schedule. ``total_steps`` is the cosine's length (usually the run's max steps)."""

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_steps: int = 500
    total_steps: int = 10000
    min_lr_ratio: float = 0.1

    def __post_init__(self):
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"optim.lr must be finite and > 0, got {self.lr!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise ValueError(f"optim.warmup_steps must be >= 0 and optim.total_steps >= 1, got "
                             f"{self.warmup_steps!r} and {self.total_steps!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")


def make_optimizer(model: nn.Module, config: OptimConfig) -> SkippableAdamW:
    """AdamW (skippable on device, :mod:`.adamw`); weight decay on parameters with >= 2 dims, none on norms, biases and embeddings."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and "embed" not in name else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return SkippableAdamW(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps)


class WarmupCosine:
    """LR multiplier: ``step / warmup`` during warmup, then cosine from 1 to ``min_ratio``."""

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float):
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min(max(step - self.warmup_steps, 0) / span, 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(config.warmup_steps, config.total_steps, config.min_lr_ratio))


def optim_settings(optimizer, scheduler) -> dict:
    """The ``optim.*`` settings held by an AdamW + ``WarmupCosine`` LambdaLR pair (first group)."""
    group, schedule = optimizer.param_groups[0], scheduler.lr_lambdas[0]
    return {"optim.lr": float(group["initial_lr"]), "optim.betas": tuple(float(b) for b in group["betas"]),
            "optim.eps": float(group["eps"]), "optim.weight_decay": float(group["weight_decay"]),
            "optim.warmup_steps": int(schedule.warmup_steps), "optim.total_steps": int(schedule.total_steps),
            "optim.min_lr_ratio": float(schedule.min_ratio)}


def apply_optim_settings(optimizer, scheduler, configured: dict) -> dict:
    """Make the configured ``optim.*`` settings (:func:`optim_settings` before a resume) win over those
    restored from a checkpoint: the schedule is recomputed at the restored step, moments and step
    counts are kept. Returns ``{setting: (restored, configured)}`` for what changed."""
    restored = optim_settings(optimizer, scheduler)
    changed = {k: (restored[k], v) for k, v in configured.items() if restored[k] != v}
    if not changed:
        return changed
    for schedule in scheduler.lr_lambdas:
        schedule.warmup_steps, schedule.total_steps, schedule.min_ratio = (
            configured["optim.warmup_steps"], configured["optim.total_steps"], configured["optim.min_lr_ratio"])
    scheduler.base_lrs = [configured["optim.lr"]] * len(optimizer.param_groups)
    for i, group in enumerate(optimizer.param_groups):
        factor = scheduler.lr_lambdas[i](scheduler.last_epoch)
        group.update(initial_lr=configured["optim.lr"], lr=configured["optim.lr"] * factor,
                     betas=configured["optim.betas"], eps=configured["optim.eps"])
        if i == 0:  # the decayed group; the other holds norms, biases and embeddings (no decay)
            group["weight_decay"] = configured["optim.weight_decay"]
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return changed


def set_total_steps(optimizer, scheduler, total_steps: int) -> None:
    """Lay the schedule out over ``total_steps`` from here on (a time budget's re-estimate,
    :mod:`.budget`): the multiplier's total changes and the learning rate in force is recomputed at the
    current step, so the next update uses the new schedule."""
    for schedule in scheduler.lr_lambdas:
        schedule.total_steps = int(total_steps)
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = scheduler.base_lrs[i] * scheduler.lr_lambdas[i](scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers, on device."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"trainer.ema_decay must be in (0, 1) to enable EMA, got {decay!r}")
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        state = model.state_dict()
        names = list(self.shadow)
        torch._foreach_lerp_([self.shadow[k] for k in names], [state[k].detach() for k in names], 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"EMA weights are missing {missing[:5]} (and {max(len(missing) - 5, 0)} more)")
        for k in self.shadow:
            self.shadow[k].copy_(state[k])

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (non-float buffers are left as they are)."""
        model.load_state_dict({**model.state_dict(), **self.shadow})


@torch.no_grad()
def guarded_step(optimizer: SkippableAdamW, finite: torch.Tensor, step_fn=None) -> None:
    """``optimizer.step()`` that leaves parameters and moments unchanged where ``finite`` is False.

    ``finite`` is a 0-d bool tensor on the parameters' device; nothing is read back to the host and
    nothing is copied: the flag is folded into the update (:class:`~.adamw.SkippableAdamW`).
    ``step_fn(optimizer)`` performs the step (a backend's ``optimizer_step``), default ``step()``.
    """
    if not isinstance(optimizer, SkippableAdamW):
        raise TypeError(f"guarded_step needs a SkippableAdamW (make_optimizer), got {type(optimizer).__name__}")
    optimizer.skip_unless(finite)
    (step_fn or (lambda opt: opt.step()))(optimizer)
