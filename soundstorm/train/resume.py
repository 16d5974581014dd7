"""Checkpoints of a training run, and resuming one exactly.

:class:`CheckpointState` is the part of :class:`~soundstorm.train.loop.Trainer` that writes and restores
everything a run needs to continue as if it had never stopped: weights, optimizer and scheduler state, the
RNG, the data position ``(epoch, batch_in_epoch)``, the counters, the EMA and the time budget's plan (its
derived schedule total is saved, so a resumed time-bounded run anneals to the same step). The files and
their checks are :mod:`.checkpoint`'s; this module decides what goes into them and how a run takes it back.
"""

from __future__ import annotations

from pathlib import Path

from soundstorm.train import checkpoint as ckpt
from soundstorm.train.optim import apply_optim_settings, optim_settings, set_total_steps


class CheckpointState:
    """Mixed into :class:`~soundstorm.train.loop.Trainer`, whose attributes it reads and sets: ``model``,
    ``optimizer``, ``scheduler``, ``ema``, ``budget``, ``config``, ``dist``, ``backend``, ``logger``, ``tokens``,
    ``ckpt_root``, the data position and the counters."""

    def training_state(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": ckpt.capture_rng(), "nonfinite_skipped": self.nonfinite_total,
                "tokens_seen": self.tokens_seen, "world_size": self.dist.world_size,
                "wandb_id": getattr(self.logger, "run_id", None) or "",
                **({"budget": self.budget.state_dict()} if self.budget is not None else {})}

    def save(self) -> Path | None:
        """Rank 0 writes the checkpoint; every rank waits for it."""
        path = None
        if self.dist.is_main:
            ema_state = self.ema.state_dict() if self.ema is not None else None
            path = ckpt.save_checkpoint(self.ckpt_root, self.step, self.model, self.training_state(), ema_state,
                                        self.config.keep_last, self.tokens)
        self.backend.barrier()
        return path

    def load(self, directory: Path) -> None:
        """Restore weights, optimizer, scheduler, RNG, data position and counters from one checkpoint."""
        self._restore(directory, ckpt.load_checkpoint(directory, map_location=self.backend.device))

    def resume(self, candidates) -> Path | None:
        """Restore the newest intact checkpoint of ``candidates`` (newest first); returns the one used."""
        candidates = [candidates] if isinstance(candidates, (str, Path)) else list(candidates or [])
        if not candidates:
            return None
        directory, loaded = ckpt.load_newest_intact(candidates, map_location=self.backend.device)
        self._restore(directory, loaded)
        if self.dist.is_main:
            print(f"resuming from {directory} (step {self.step})", flush=True)
        return directory

    def _restore(self, directory: Path, loaded: tuple) -> None:
        model_state, state, ema_state = loaded
        ckpt.check_resumable(directory, self.model.config.to_dict(), self.tokens,
                             getattr(self.model, "checkpoint_format", None))
        if state["step"] > self.config.max_steps:  # nothing would be trained, and the run would say nothing
            raise ValueError(f"trainer.max_steps={self.config.max_steps} is below step {state['step']}, where "
                             f"{directory} stopped; set trainer.max_steps above {state['step']} to train on, or "
                             "start fresh with resume=none and a new out_dir")
        configured = optim_settings(self.optimizer, self.scheduler)
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        changed = apply_optim_settings(self.optimizer, self.scheduler, configured)
        if self.budget is not None and "budget" in state:  # the time budget owns the schedule's total
            changed.pop("optim.total_steps", None)
        if changed and self.dist.is_main:
            print(f"resume: applying the changed optimizer settings over those of {directory}: "
                  + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()), flush=True)
        ckpt.restore_rng(state["rng"])
        if self.ema is not None:
            if ema_state is None:
                raise ValueError(f"{directory} has no ema.safetensors but trainer.ema_decay={self.config.ema_decay}")
            self.ema.load_state_dict(ema_state)
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        if self.budget is not None and "budget" in state:  # its seconds and plan continue (see .budget)
            self.budget.load_state_dict(state["budget"])
            if self.budget.planned_total is not None:
                set_total_steps(self.optimizer, self.scheduler, self.budget.planned_total)
        self.nonfinite_total, self.tokens_seen = state["nonfinite_skipped"], state["tokens_seen"]
        if state["world_size"] != self.dist.world_size and self.dist.is_main:
            print(f"warning: {directory} was written by {state['world_size']} processes, resuming with "
                  f"{self.dist.world_size}: the data order is not the one of the original run", flush=True)
        self._iter = None
