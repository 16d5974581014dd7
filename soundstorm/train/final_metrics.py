"""A training run's final numbers on disk: ``final_metrics.json`` in its ``out_dir``.

Written once, atomically, by the main process when :meth:`soundstorm.train.loop.Trainer.fit` returns
(a run that raised leaves none). It is what a sweep reads back: the step reached, why the run stopped
early if it did, and the last value of every logged scalar (``train/*`` from the last log window,
``eval/*`` from the last evaluation, with the step it ran at). The Hydra task returns one of them as
the sweep objective (:func:`objective`), and the sweep summary tabulates them
(:mod:`soundstorm.train.sweep_summary`). The file is data from a run folder: it is parsed as JSON
only and checked before use.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from soundstorm.io import atomic_write_bytes, read_json

FILE_NAME = "final_metrics.json"
FORMAT = "soundstorm-final-metrics/v1"
MAX_BYTES = 1_000_000  # a few hundred metric names; a larger file is not one of ours


def write_final_metrics(out_dir, step: int, max_steps: int, stopped_by: str | None, interrupted: bool,
                        train: dict, eval_metrics: dict, eval_step: int | None) -> Path:
    """Write ``out_dir/final_metrics.json``. ``stopped_by``: why the run ended before ``max_steps``
    (None when it did not); ``interrupted``: by a signal rather than the time limit. ``train`` /
    ``eval_metrics``: flattened scalars (``train/loss``, ``eval/accuracy_level1``, ...); lists and
    non-numbers are left out."""
    scalars = {k: float(v) for k, v in {**train, **eval_metrics}.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    record = {"format": FORMAT, "step": int(step), "max_steps": int(max_steps), "stopped_by": stopped_by,
              "interrupted": bool(interrupted), "eval_step": eval_step, "metrics": scalars}
    path = Path(out_dir) / FILE_NAME
    atomic_write_bytes(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    return path


def read_final_metrics(out_dir) -> dict:
    """The checked record of ``out_dir/final_metrics.json``; missing → FileNotFoundError, malformed →
    ValueError naming the file and the field."""
    path = Path(out_dir) / FILE_NAME
    record = read_json(path, f"the final metrics a finished soundstorm-train run writes ({FILE_NAME})", MAX_BYTES)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{path} has format {found!r}; expected {FORMAT!r}")
    for key in ("step", "max_steps"):
        if isinstance(record.get(key), bool) or not isinstance(record.get(key), int):
            raise ValueError(f"{path}: {key}={record.get(key)!r}; expected an integer")
    metrics = record.get("metrics")
    if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                for v in metrics.values()):
        raise ValueError(f"{path}: metrics must map names to numbers, got {metrics!r:.200}")
    return record


def objective(out_dir, name: str, field: str = "sweep_objective") -> float:
    """The metric ``name`` of the run in ``out_dir`` as a finite float, for a sweeper to optimise.
    Refused with a ValueError naming ``field``: a metric the run did not log (the message lists those it
    did), a non-finite value, and a run stopped before its last step by a signal (a partial run's
    number is not comparable with the others')."""
    record = read_final_metrics(out_dir)
    metrics = record["metrics"]
    if name not in metrics:
        raise ValueError(f"{field}={name!r} is not among the final metrics of {out_dir}; available: "
                         f"{', '.join(sorted(metrics)) or 'none (nothing was logged)'}"
                         + ("" if record["eval_step"] is not None else
                            "; no evaluation ran (is there a held-out set, data.heldout_fraction > 0?)"))
    if record.get("interrupted") is True:
        raise ValueError(f"{field}={name!r}: the run in {out_dir} was stopped at step {record['step']} of "
                         f"{record['max_steps']} ({record['stopped_by']}); its value is not a final one")
    value = float(metrics[name])
    if not math.isfinite(value):
        raise ValueError(f"{field}={name!r} is {value} in {out_dir} (step {record['step']}); expected a finite number")
    return value
