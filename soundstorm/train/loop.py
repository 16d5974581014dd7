"""The training loop: accumulate, clip, step, log, evaluate, checkpoint, resume, stop on signals.

:class:`Trainer` talks to the device only through a :class:`~soundstorm.backends.base.Backend`
(placement, autocast, ``mark_step``, distributed set-up and collectives), so the CPU, CUDA and XLA
backends share this file. One optimizer step:

1. take ``grad_accum`` micro-batches from the data position ``(epoch, batch_in_epoch)``;
2. each example arrives corrupted on the CPU from ``(seed, epoch, dataset index)`` by the data
   path (:mod:`.data`, :func:`soundstorm.masking.corrupt_batch`), with its loss-token count as a Python int;
3. normalise the summed cross-entropy by the *global* number of loss tokens (all ranks, all
   micro-batches), so N processes on B/N examples compute the update of one process on B;
4. clip, then an AdamW step skipped on device when the loss or the gradient norm is not finite
   (:func:`.optim.guarded_step`, no copies of the weights or moments); schedule, EMA.

Nothing in a step reads a device value back to the host (on the CPU, where the device is the host,
the loss computes its output head on the masked tokens only, whose number follows the mask). Metric
sums stay on device and are read, once, every ``log_every`` steps; that is also when non-finite steps
are counted and the stop limit applied, and (multi-process) when a SIGTERM/SIGINT seen by any rank is
agreed on.

A run that reaches ``max_steps`` is evaluated there (``eval_at_end``) if ``eval_every`` did not land
on it, and ends with ``final_metrics.json`` (:mod:`.final_metrics`): the numbers a sweep compares.

Checkpoints and resume (what a checkpoint holds, and restoring it exactly) live in :mod:`.resume`.

``trainer.max_minutes`` bounds a run by time *and* lays its learning-rate schedule out over the steps
that time will give (:mod:`.budget`): the cosine ends when the budget ends, on any machine.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional

import torch
from torch import nn

from soundstorm._checks import check_positive_ints
from soundstorm.masking import Corruption, masked_loss
from soundstorm.quantize import is_quantized
from soundstorm.train import checkpoint as ckpt
from soundstorm.train.budget import TimeBudget
from soundstorm.train.final_metrics import write_final_metrics
from soundstorm.train.graphs import GraphBudget
from soundstorm.train.logging import flatten_levels
from soundstorm.train.optim import EMA, guarded_step, set_total_steps
from soundstorm.train.resume import CheckpointState


@dataclass
class TrainerConfig:
    """Loop settings. Steps count optimizer updates; a global batch is batch × devices × grad_accum."""

    max_steps: int = 1000
    grad_accum: int = 1
    grad_clip: float = 1.0
    log_every: int = 10
    eval_every: int = 500
    ckpt_every: int = 500
    keep_last: int = 3
    max_nonfinite: int = 10
    ema_decay: float = 0.0
    progress: bool = True
    # wall-clock budget of the run (all sessions): the LR schedule ends when it ends (soundstorm.train.budget)
    max_minutes: float | None = None
    max_graphs: int | None = None  # XLA: compiled training graphs allowed (None: from the batch shapes)
    activation_checkpointing: bool = False  # recompute each Conformer block in the backward (less memory)
    # Relative probability of training each level (None: uniform, the paper's §3.2); see masking.corrupt.
    level_weights: Optional[List[float]] = None
    # Evaluate once more at max_steps when eval_every did not land there, so a run's final numbers
    # (final_metrics.json, a sweep's objective) are measured on its final weights.
    eval_at_end: bool = True

    def __post_init__(self):
        check_positive_ints("trainer", self, ("max_steps", "grad_accum", "log_every", "eval_every", "ckpt_every",
                                              "keep_last"))
        if not self.grad_clip > 0:
            raise ValueError(f"trainer.grad_clip must be > 0, got {self.grad_clip!r}")
        if self.max_nonfinite < 0:
            raise ValueError(f"trainer.max_nonfinite must be >= 0, got {self.max_nonfinite!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"trainer.max_minutes must be null or > 0, got {self.max_minutes!r}")
        if self.max_graphs is not None:
            check_positive_ints("trainer", self, ("max_graphs",))
        if self.ema_decay and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"trainer.ema_decay must be 0 (off) or in (0, 1), got {self.ema_decay!r}")


class NonFiniteLossError(RuntimeError):
    """Raised when more than ``trainer.max_nonfinite`` steps had a non-finite loss or gradient."""


TIME_LIMIT = "the time limit"  # how a stop by trainer.max_minutes is worded (not a signal)
CORRUPTION_FIELDS = tuple(f.name for f in dataclasses.fields(Corruption))


class MaskedLoss(nn.Module):
    """:func:`soundstorm.masking.masked_loss` as a module (DDP hooks need the call to go through
    ``forward``). Returns the *summed* cross-entropy over loss tokens, and the per-level metrics.

    ``loss_tokens_only``: compute the output head only where a token is scored (see ``masked_loss``);
    the :class:`Trainer` turns it on where the device is the host (CPU), whose shapes may follow the
    mask at no cost, and leaves the fixed-shape path to XLA and CUDA."""

    batch_keys = ("codes", "semantic", "lengths", *CORRUPTION_FIELDS)  # forward's arguments

    def __init__(self, model: nn.Module, loss_tokens_only: bool = False):
        super().__init__()
        self.model = model
        self.loss_tokens_only = bool(loss_tokens_only)

    def forward(self, codes, semantic, lengths, *corruption_fields):
        corruption = Corruption(*corruption_fields)
        loss, metrics = masked_loss(self.model, codes, semantic, lengths, corruption,
                                    loss_tokens_only=self.loss_tokens_only)
        return loss * metrics["num_tokens"], metrics


# (epoch, batches to skip) -> batches with codes, semantic, lengths and the Corruption's fields (tensors)
# and num_loss_tokens, num_frames (ints); see soundstorm.train.data.
BatchSource = Callable[[int, int], Iterable[dict]]


class Trainer(CheckpointState):
    """Runs the optimisation of one model; see the module docstring."""

    def __init__(self, model, backend, optimizer, scheduler, config: TrainerConfig, out_dir, batches: BatchSource,
                 logger=None, evaluate: Callable | None = None, loss: nn.Module | None = None,
                 graph_budget: GraphBudget | None = None, tokens: dict | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        """``loss``: the module a step calls with the batch tensors named by its ``batch_keys``,
        returning ``(summed loss, metrics)`` with per-level sums over its ``num_levels`` levels
        (default: SoundStorm's masked loss, :class:`MaskedLoss`). A loss with ``extra_metrics`` (names)
        also returns ``metrics["extra"]``, one 0-d value per name and micro-batch; the log reports
        their mean over the window as ``train/<name>``. ``clock``: the time budget's clock (tests
        give every step a known duration)."""
        backend.check_trainable()
        if is_quantized(model):
            raise ValueError("the model has int8 quantised layers (inference only); train the float32 model")
        if getattr(backend, "autocast_dtype", None) == torch.float16:
            raise ValueError("backend.options.dtype='float16': training in float16 needs loss scaling "
                             "(GradScaler), which this trainer does not do; use bfloat16 (same range as "
                             "float32) or float32")
        self.model, self.backend, self.config = model, backend, config
        self.tokens = tokens  # the token folder's record (soundstorm.assets), kept in every checkpoint
        self.optimizer, self.scheduler = optimizer, scheduler
        self.out_dir = Path(out_dir)
        self.ckpt_root = self.out_dir / "checkpoints"
        self.batches, self.logger, self.evaluate = batches, logger, evaluate
        self.dist = backend.dist
        if loss is None:  # on the host, the head is computed on the loss tokens only (MaskedLoss)
            loss = MaskedLoss(model, loss_tokens_only=backend.device.type == "cpu")
        self.batch_keys = tuple(loss.batch_keys)
        self.num_levels = int(getattr(loss, "num_levels", None) or model.config.num_levels)
        self.extra_metrics = tuple(getattr(loss, "extra_metrics", ()))
        self.loss_module = backend.wrap_model(loss)
        self.ema = EMA(model, config.ema_decay) if config.ema_decay else None
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.nonfinite_total, self.tokens_seen = 0, 0
        self.stop_signal: str | None = None
        self.eval_metrics: dict = {}  # the last evaluation's metrics (flattened) and its step
        self.eval_step: int | None = None
        self._iter: Iterator | None = None
        self._sums = None
        self.graph_budget = graph_budget
        self._graphs_not_training = 0  # compiled by evaluation (its own shapes), left out of the budget
        self.batch_shapes_seen: set[tuple[int, ...]] = set()  # codes [B, Q, T] shapes trained on (host metadata)
        self.budget = TimeBudget(60.0 * config.max_minutes, config.max_steps, clock) if config.max_minutes else None

    # ------------------------------------------------------------------ data position
    def _next_batch(self) -> dict:
        for _ in range(2):
            if self._iter is None:
                self._iter = iter(self.batches(self.epoch, self.batch_in_epoch))
            try:
                batch = next(self._iter)
                self.batch_in_epoch += 1
                return batch
            except StopIteration:
                self._iter, self.epoch, self.batch_in_epoch = None, self.epoch + 1, 0
        raise ValueError(f"the data source yielded no batch for epoch {self.epoch}; is the dataset empty or "
                         f"smaller than one batch per rank?")

    # ------------------------------------------------------------------ one step
    def _micro_batches(self) -> tuple[list[dict], int, int]:
        micro, loss_tokens, frames = [], 0, 0
        for _ in range(self.config.grad_accum):
            batch = self._next_batch()
            loss_tokens += batch["num_loss_tokens"]  # Python ints from the collate: no device sync
            frames += batch["num_frames"]
            # the shape of the loss's first input (codes for SoundStorm; the packed sequence for others)
            self.batch_shapes_seen.add(tuple(batch[self.batch_keys[0]].shape))
            micro.append(batch)
        return micro, loss_tokens, frames

    def train_step(self) -> None:
        """One optimizer update over ``grad_accum`` micro-batches (no host sync)."""
        micro, loss_tokens, frames = self._micro_batches()
        device = self.backend.device
        global_tokens = self.backend.all_reduce_sum(torch.tensor(float(loss_tokens), device=device))
        scale = float(self.dist.world_size) / global_tokens.clamp(min=1.0)
        loss_total = torch.zeros((), device=device)
        for i, batch in enumerate(micro):
            batch = self.backend.to_device({k: batch[k] for k in self.batch_keys})
            last = i == len(micro) - 1
            accumulate_only = not last and hasattr(self.loss_module, "no_sync")  # DDP: all-reduce on the last only
            sync = self.loss_module.no_sync() if accumulate_only else contextlib.nullcontext()
            with sync:
                with self.backend.autocast():
                    loss_sum, metrics = self.loss_module(*(batch[k] for k in self.batch_keys))
                (loss_sum * scale).backward()
            loss_total = loss_total + loss_sum.detach()
            self._accumulate(metrics)
            if not last:
                self.backend.mark_step()  # XLA: one graph per micro-batch shape, not one per combination
        self.backend.reduce_gradients(self.optimizer)  # clip the global gradient, not a replica's
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        finite = torch.isfinite(loss_total) & torch.isfinite(grad_norm)
        guarded_step(self.optimizer, finite, self.backend.optimizer_step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self._accumulate_step(loss_total, grad_norm, finite, frames * self.num_levels)
        self.backend.mark_step()
        self.step += 1

    # ------------------------------------------------------------------ metrics on device
    def _zero_sums(self) -> None:
        q = self.num_levels
        self._sums = {k: torch.zeros(n, device=self.backend.device)
                      for k, n in (("ce", q), ("correct", q), ("tokens", q), ("scalars", 4),
                                   ("extra", len(self.extra_metrics)))}
        self._tokens_window, self._window_start, self._steps_window = 0, time.perf_counter(), 0
        self._eval_seconds = 0.0  # evaluation time inside the window, left out of the throughput
        self.backend.mark_step()  # XLA: the sums become device data, so every step of a window traces alike

    def _accumulate(self, metrics: dict) -> None:
        tokens_Q = metrics["tokens_per_level"].detach().float()
        self._sums["ce"] += metrics["loss_per_level"].detach().float() * tokens_Q
        self._sums["correct"] += metrics["accuracy_per_level"].detach().float() * tokens_Q
        self._sums["tokens"] += tokens_Q
        if self.extra_metrics:
            self._sums["extra"] += metrics["extra"].detach().float().reshape(-1)

    def _accumulate_step(self, loss_total, grad_norm, finite, acoustic_tokens: int) -> None:
        # scalars: summed finite loss, finite grad norm, non-finite step count, steps
        ok = finite.float()
        self._sums["scalars"] += torch.stack([torch.where(finite, loss_total, 0.0), torch.where(finite, grad_norm, 0.0),
                                              1.0 - ok, torch.ones_like(ok)]).float()
        self._tokens_window += acoustic_tokens
        self._steps_window += 1

    def _read_metrics(self) -> dict:
        """All-reduce and read the window's sums (the one host sync per log interval)."""
        s = self._sums
        packed = torch.cat([s["ce"], s["correct"], s["tokens"], s["scalars"], s["extra"],
                            torch.tensor([float(self._tokens_window)], device=self.backend.device)])
        values = self.backend.all_reduce_sum(packed).tolist()
        q, ws = self.num_levels, self.dist.world_size
        ce, correct, tokens = values[:q], values[q:2 * q], values[2 * q:3 * q]
        loss_sum, norm_sum, nonfinite, steps = values[3 * q:3 * q + 4]
        extra = values[3 * q + 4:-1]
        micro_batches = steps * self.config.grad_accum  # summed over ranks, like the extra sums
        steps, finite_steps = steps / ws, max(steps / ws - nonfinite / ws, 1.0)
        elapsed = max(time.perf_counter() - self._window_start - self._eval_seconds, 1e-9)
        self.nonfinite_total += int(round(nonfinite / ws))
        self.tokens_seen += int(values[-1])
        graphs = self.backend.compiled_graphs()
        return {
            "train/loss": sum(ce) / max(sum(tokens), 1.0),
            "train/accuracy": sum(correct) / max(sum(tokens), 1.0),
            "train/loss_per_level": [c / t if t else float("nan") for c, t in zip(ce, tokens)],
            "train/accuracy_per_level": [c / t if t else float("nan") for c, t in zip(correct, tokens)],
            "train/grad_norm": norm_sum / ws / finite_steps,
            "train/lr": float(self.scheduler.get_last_lr()[0]),
            "train/tokens_per_s": values[-1] / elapsed,
            "train/steps_per_s": steps / elapsed,
            "train/nonfinite_skipped": self.nonfinite_total,
            "train/epoch": self.epoch,
            **{f"train/{name}": v / max(micro_batches, 1.0) for name, v in zip(self.extra_metrics, extra)},
            **({} if graphs is None else {"train/compiled_graphs": graphs,
                                          "train/batch_shapes_seen": len(self.batch_shapes_seen)}),
        }

    # ------------------------------------------------------------------ signals
    def _on_signal(self, signum, _frame) -> None:
        self.stop_signal = signal.Signals(signum).name

    @contextlib.contextmanager
    def _signals(self):
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _stop_agreed(self, at_log_step: bool) -> bool:
        """Single process: the flag. Several: agreed by all-reduce at log steps, so no rank hangs."""
        if not self.dist.distributed:
            return self.stop_signal is not None
        if not at_log_step:
            return False
        flag = torch.tensor([1.0 if self.stop_signal else 0.0], device=self.backend.device)
        return bool(self.backend.all_reduce_sum(flag).item() > 0)

    # ------------------------------------------------------------------ the run
    def _log_window(self, bar) -> dict:
        metrics = self._read_metrics()
        if self.logger is not None:
            self.logger.log(flatten_levels(metrics), step=self.step)
        if bar is not None:
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", tok_s=f"{metrics['train/tokens_per_s']:.0f}")
        if self.nonfinite_total > self.config.max_nonfinite:
            raise NonFiniteLossError(
                f"{self.nonfinite_total} steps had a non-finite loss or gradient norm (limit trainer.max_nonfinite="
                f"{self.config.max_nonfinite}, counted every trainer.log_every={self.config.log_every} steps); "
                f"stopping at step {self.step}. Lower optim.lr or raise the limit; {self._newest_checkpoint_note()}")
        self._zero_sums()
        return metrics

    def _newest_checkpoint_note(self) -> str:
        """What the newest checkpoint under ``ckpt_root`` holds, read back and scanned (the stop message
        says it, so it must be true): finite weights to resume from, non-finite ones, or none yet."""
        found = ckpt.list_checkpoints(self.ckpt_root)
        if not found:
            return f"no checkpoint was written under {self.ckpt_root} yet"
        try:
            ckpt.check_finite_checkpoint(found[-1])
        except ValueError as err:  # NaN/inf weights, or a file that no longer reads whole
            return f"the newest checkpoint cannot be resumed from: {err}"
        return f"the newest checkpoint, {found[-1]}, holds finite weights (resume=auto continues from it)"

    def fit(self, resume_from: Path | list[Path] | None = None) -> dict:
        """Train to ``max_steps`` (or until a signal) after resuming from the newest intact checkpoint of
        ``resume_from`` (one directory or candidates newest first); returns the last logged metrics."""
        self.resume(resume_from)
        cfg, last = self.config, {}
        if self.step == cfg.max_steps and self.dist.is_main:
            print(f"nothing to train: the restored checkpoint is at trainer.max_steps={cfg.max_steps} already; "
                  "raise trainer.max_steps to train on", flush=True)
        if self.budget is not None:
            self.budget.begin_session()
            if self.budget.expired() and self.dist.is_main:
                print(f"time budget trainer.max_minutes={cfg.max_minutes} was spent by earlier sessions "
                      f"({self.budget.spent() / 60:.1f} min); nothing to train", flush=True)
        self.model.train()
        self._zero_sums()
        bar = None
        if cfg.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", dynamic_ncols=True)
        graphs_before = self.backend.compiled_graphs()
        with self._signals():
            first_window = True
            nothing_left = self.budget is not None and self.budget.expired()  # decided once: same on every rank
            while not nothing_left and self.step < cfg.max_steps and not self._budget_spent():
                self.train_step()
                if self.graph_budget is not None and graphs_before is not None:
                    compiled = self.backend.compiled_graphs() - graphs_before - self._graphs_not_training
                    self.graph_budget.check(compiled, self.step)
                if bar is not None:
                    bar.update(1)
                at_log = self.step % cfg.log_every == 0 or self.step == cfg.max_steps or self._budget_spent()
                if at_log:
                    last = self._log_window(bar)
                    if self.budget is not None:
                        self._follow_budget(first_window)
                        first_window = False
                if self.evaluate is not None and self.step % cfg.eval_every == 0:
                    self._run_eval()
                if self._stop_agreed(at_log):
                    if self.dist.is_main:
                        print(f"stopping at step {self.step} ({self.stop_signal or 'a signal on another rank'}): "
                              "writing a checkpoint and exiting", flush=True)
                    break
                if self.step % cfg.ckpt_every == 0 and self.step < cfg.max_steps:
                    self.save()
        if bar is not None:
            bar.close()
        # every rank takes the same branch: the step count is the same everywhere
        finished = self.step == cfg.max_steps or self._budget_spent()
        if self.evaluate is not None and cfg.eval_at_end and finished and self.eval_step != self.step:
            self._run_eval()
        self.save()
        if self.dist.is_main:
            if self.budget is not None:
                self._report_budget()
            self._write_final_metrics(last)
        return last

    # ------------------------------------------------------------------ the time budget
    def _budget_spent(self) -> bool:
        """The budget's schedule has ended (the same step on every rank: the plan is agreed at log steps)."""
        return self.budget is not None and self.budget.planned_total is not None \
            and self.step >= self.budget.planned_total

    def _follow_budget(self, first_window: bool) -> None:
        """At a log step: start measuring after the session's first window, then re-plan the schedule's
        end from the measured rate (rank 0's plan, shared with every rank), and stop when time is up."""
        if self.budget.expired():
            self.stop_signal = self.stop_signal or f"{TIME_LIMIT} trainer.max_minutes={self.config.max_minutes}"
        if first_window:
            self.budget.start_measuring(self.step)
            return
        if self._budget_spent() or self.budget.expired():  # the end: nothing left to plan
            return
        before = self.budget.planned_total
        planned = self.budget.replan(self.step)
        if self.dist.distributed and planned is not None:  # every rank follows rank 0's plan
            mine = torch.tensor([float(planned) if self.dist.is_main else 0.0], device=self.backend.device)
            planned = self.budget.planned_total = int(self.backend.all_reduce_sum(mine).item())
        if planned is not None and planned != before:
            set_total_steps(self.optimizer, self.scheduler, planned)
            if self.dist.is_main and (before is None or abs(planned - before) > 0.05 * before):
                rate = self.budget.planned_rate or 0.0
                print(f"time budget trainer.max_minutes={self.config.max_minutes}: {rate:.2f} steps/s, "
                      f"{self.budget.remaining() / 60:.1f} min left -> the learning-rate schedule now ends at "
                      f"step {planned} (trainer.max_steps={self.config.max_steps})", flush=True)

    def _report_budget(self) -> None:
        b = self.budget
        ended = "its schedule ended" if self._budget_spent() else (
            "the time limit" if b.expired() else (self.stop_signal or "trainer.max_steps"))
        print(f"time budget trainer.max_minutes={self.config.max_minutes}: expected {b.first_planned} steps at "
              f"the first estimate, planned {b.planned_total} at the last; made {self.step} steps in "
              f"{b.spent() / 60:.1f} min (stopped by {ended})", flush=True)

    def _write_final_metrics(self, last: dict) -> None:
        """``final_metrics.json`` (:mod:`.final_metrics`): where and why the run ended, its last numbers."""
        stopped = None
        if self.step < self.config.max_steps:
            # the plan's end and the limit can fall on one step: the schedule still ended (nothing was cut)
            by_budget = self.stop_signal is None or self.stop_signal.startswith(TIME_LIMIT)
            if self._budget_spent() and by_budget:
                stopped = f"{TIME_LIMIT} trainer.max_minutes={self.config.max_minutes} (its schedule ended)"
            else:
                stopped = self.stop_signal or "a signal on another rank"
        interrupted = stopped is not None and not stopped.startswith(TIME_LIMIT)
        write_final_metrics(self.out_dir, self.step, self.config.max_steps, stopped, interrupted,
                            flatten_levels(last), self.eval_metrics, self.eval_step)

    def _run_eval(self) -> None:
        """Evaluate with the EMA weights when EMA is on (all ranks call; see :mod:`soundstorm.evaluation`)."""
        started, graphs = time.perf_counter(), self.backend.compiled_graphs()
        self.model.eval()
        backup = None
        if self.ema is not None:
            backup = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.ema.copy_to(self.model)
        try:
            metrics = self.evaluate(self.model, self.step) or {}
        finally:
            if backup is not None:
                self.model.load_state_dict(backup)
            self.model.train()
            self._eval_seconds += time.perf_counter() - started
            if graphs is not None:
                self._graphs_not_training += self.backend.compiled_graphs() - graphs
        self.eval_metrics, self.eval_step = flatten_levels(metrics), self.step
        if self.logger is not None and metrics:
            self.logger.log(self.eval_metrics, step=self.step)

