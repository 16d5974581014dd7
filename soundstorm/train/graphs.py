"""The recompilation guard: stop an XLA run that compiles more graphs than its batch shapes allow.

On XLA every distinct trace of a training step is compiled once. With batches padded to a fixed set
of shapes (:mod:`soundstorm.data.buckets`) a run needs at most

    num_shapes × min(grad_accum, 3)  +  WARMUP_GRAPHS

graphs for its training steps: one step graph per shape (with gradient accumulation, the first,
middle and last micro-batch of a step trace differently), plus a few shape-independent ones (the
first step that creates the optimizer state, zeroing and reading the logged metric sums).
Anything beyond that means the trace changes from step to step (a dynamic shape, or a host read
that cuts the step), and on a TPU each new compile costs minutes and host memory until the process
dies. :meth:`GraphBudget.check` turns that into a clear error at the first graph too many.
"""

from __future__ import annotations

from dataclasses import dataclass

# First step (creates the AdamW moments; also a first-step variant per micro-batch position), zeroing
# the metric sums, reading them at a log step, and slack for a checkpoint's host copies.
WARMUP_GRAPHS = 6


class GraphBudgetExceeded(RuntimeError):
    """Raised when a run compiles more graphs than its shape set allows."""


@dataclass(frozen=True)
class GraphBudget:
    """How many graphs the training steps of a run may compile (``limit``); ``max_graphs`` overrides it."""

    shapes: tuple[int, ...]
    batch_size: int
    grad_accum: int = 1
    max_graphs: int | None = None

    @property
    def per_shape(self) -> int:
        return min(self.grad_accum, 3)

    @property
    def limit(self) -> int:
        if self.max_graphs is not None:
            return self.max_graphs
        return len(self.shapes) * self.per_shape + WARMUP_GRAPHS

    def describe(self) -> str:
        return (f"{len(self.shapes)} batch shape(s) [B={self.batch_size}, T in {list(self.shapes)}] -> at most "
                f"{self.limit} compiled training graphs")

    def check(self, num_graphs: int, step: int) -> None:
        """Raise :class:`GraphBudgetExceeded` when ``num_graphs`` (compiled by training so far) is over the limit."""
        if num_graphs <= self.limit:
            return
        how = (f"trainer.max_graphs={self.max_graphs}" if self.max_graphs is not None else
               f"{len(self.shapes)} batch shape(s) × {self.per_shape} + {WARMUP_GRAPHS} warm-up graphs")
        raise GraphBudgetExceeded(
            f"XLA compiled {num_graphs} graphs in {step} training steps, more than the {self.limit} this run "
            f"allows ({how}). Every new trace of a step is compiled again: either a tensor shape changes between "
            f"steps (a dynamic shape: a batch or frame count outside [B={self.batch_size}, T in {list(self.shapes)}], "
            f"boolean indexing, a data-dependent size) or a value is read back to the host inside a step (a host "
            f"sync: .item(), .tolist(), print or a Python `if` on a tensor), which cuts the step into changing "
            f"pieces. Stopping now rather than compiling until memory runs out. PT_XLA_DEBUG_LEVEL=2 prints the "
            f"cause of each compile; trainer.max_graphs raises the limit.")
