"""A time budget that anneals: ``trainer.max_minutes`` sets where the learning-rate schedule ends.

A run bounded by time used to stop wherever the clock ran out: on a machine half as fast as the one a
recipe was tuned on, at half the step count its cosine was laid out for, with the learning rate still
near its peak and the model far from where the schedule would have taken it. Here the schedule follows
the budget instead. After a first log window (the slow first steps: allocation, caches, compilation),
the trainer measures its step rate (wall clock, evaluation and checkpoints included: what the rest of
the run will also pay) and sets the schedule's total to the step the budget will reach, never beyond
``trainer.max_steps``; it re-estimates at every log step, so the cosine ends when the budget ends on a
fast machine, a slow one or a busy one. The rate it plans with is the slower of the whole measured
span's and the last log window's: a machine that slows down mid-run (another job starts beside it)
pulls the schedule's end in at once, instead of after its average has caught up, so the decay still
finishes before the time is up (ending a little early costs less than a cosine cut short). The run stops at that step (the decay finished) or when the
time is up, whichever comes first.

The budget is the run's, not a session's: the training seconds spent so far and the planned total are
saved in every checkpoint, so a resumed run continues the same schedule with the time that is left
(exact resume holds: the planned total comes back from the checkpoint, not from the configured
``optim.total_steps``). Without ``trainer.max_minutes`` nothing here runs and a run is reproducible by
steps. The clock is injectable, so tests can give every step a known duration.
"""

from __future__ import annotations

import math
import time
from typing import Callable


class TimeBudget:
    """The schedule's planned total steps under a wall-clock budget of ``seconds`` for the whole run."""

    def __init__(self, seconds: float, max_steps: int, clock: Callable[[], float] = time.perf_counter):
        if not seconds > 0:
            raise ValueError(f"trainer.max_minutes must be > 0, got {seconds / 60!r}")
        self.seconds, self.max_steps, self.clock = float(seconds), int(max_steps), clock
        self.spent_before = 0.0  # training seconds of earlier sessions (from the checkpoint)
        self.planned_total: int | None = None  # None until the first measurement
        self.first_planned: int | None = None  # what the run announced first (printed again at the end)
        self.planned_rate: float | None = None  # steps/s the last plan assumed
        self._session_start = clock()
        self._measure_from: tuple[float, int] | None = None  # (clock, step) where the rate is measured from
        self._last_plan: tuple[float, int] | None = None  # (clock, step) of the previous re-plan: the recent window

    # -- the clock
    def begin_session(self) -> None:
        """The session's clock starts now (the trainer calls this when ``fit`` starts)."""
        self._session_start = self.clock()
        self._measure_from = self._last_plan = None

    def spent(self) -> float:
        """Training seconds of the whole run so far (earlier sessions + this one)."""
        return self.spent_before + self.clock() - self._session_start

    def remaining(self) -> float:
        return max(self.seconds - self.spent(), 0.0)

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    # -- the plan
    def start_measuring(self, step: int) -> None:
        """Called at the end of the session's first log window: the rate is measured from here on."""
        if self._measure_from is None:
            self._measure_from = self._last_plan = (self.clock(), step)

    def rate(self, step: int) -> float | None:
        """Steps per second the plan assumes: the slower of the rate since :meth:`start_measuring` and the
        rate since the previous re-plan (None before anything was timed)."""
        rates = [r for r in (self._rate_since(self._measure_from, step), self._rate_since(self._last_plan, step))
                 if r is not None]
        return min(rates) if rates else None

    def _rate_since(self, mark: tuple[float, int] | None, step: int) -> float | None:
        if mark is None:
            return None
        since, first = mark
        elapsed = self.clock() - since
        return (step - first) / elapsed if step > first and elapsed > 0 else None

    def replan(self, step: int) -> int | None:
        """The total the schedule should end at, from the measured rate and the time left (at least one
        step beyond ``step``, at most ``max_steps``); None while nothing was measured yet."""
        rate = self.rate(step)
        if rate is None:
            return self.planned_total
        self._last_plan, self.planned_rate = (self.clock(), step), rate
        total = step + int(math.floor(rate * self.remaining()))
        self.planned_total = max(step + 1, min(self.max_steps, total))
        if self.first_planned is None:
            self.first_planned = self.planned_total
        return self.planned_total

    def done(self, step: int) -> bool:
        """Stop here: the planned schedule has ended, or the time is up."""
        return self.expired() or (self.planned_total is not None and step >= self.planned_total)

    # -- checkpoints
    def state_dict(self) -> dict:
        return {"seconds": self.seconds, "spent": self.spent(), "planned_total": self.planned_total,
                "first_planned": self.first_planned}

    def load_state_dict(self, state: dict) -> None:
        """Continue a run: its spent seconds and its plan (a changed ``max_minutes`` is this run's new
        budget; the seconds already spent still count against it)."""
        self.spent_before = float(state.get("spent", 0.0))
        self.begin_session()
        planned = state.get("planned_total")
        self.planned_total = None if planned is None else min(int(planned), self.max_steps)
        first = state.get("first_planned")
        self.first_planned = None if first is None else int(first)
