"""One sweep job's record: ``sweep_job.json`` in the job's folder under a Hydra multirun's sweep folder.

The Hydra callback (:mod:`soundstorm.hydra_sweep`) writes it when a job starts (``status: running``,
with the job's overrides and resolved ``out_dir``) and again when it ends (``completed`` with the
objective the sweeper received, or ``failed`` with the error). A job killed outright (out of memory,
a scheduler's time limit) keeps ``running``: the summary says so instead of dropping the row. Hydra's
own ``.hydra/overrides.yaml`` is not relied on: ``soundstorm-train`` turns Hydra's output folder off
for single runs, and this record also holds what Hydra does not (out_dir, objective, error).
Records are data from run folders, so :func:`read_job_record` parses JSON only and checks every field.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from soundstorm.io import atomic_write_bytes, read_json

FILE_NAME = "sweep_job.json"
FORMAT = "soundstorm-sweep-job/v1"
STATUSES = ("running", "completed", "failed")
MAX_BYTES = 1_000_000  # overrides and a few fields; a larger file is not one of ours


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_job_record(job_dir, record: dict) -> Path:
    """Write ``job_dir/sweep_job.json`` atomically (``format`` and ``host`` added)."""
    path = Path(job_dir) / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {"format": FORMAT, "host": socket.gethostname(), **record}
    atomic_write_bytes(path, (json.dumps(full, indent=1, sort_keys=True, default=str) + "\n").encode())
    return path


def read_job_record(path) -> dict:
    """A checked record: ``job`` (int), ``status`` (one of :data:`STATUSES`), ``overrides`` (strings),
    ``out_dir`` (string or null), ``objective`` (number or null), ``error`` (string or null)."""
    path = Path(path)
    record = read_json(path, f"a sweep job record ({FILE_NAME}, written by soundstorm-train -m)", MAX_BYTES)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{path} has format {found!r}; expected {FORMAT!r}")
    checks = {"job": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "status": lambda v: v in STATUSES,
              "overrides": lambda v: isinstance(v, list) and all(isinstance(o, str) for o in v),
              "out_dir": lambda v: v is None or isinstance(v, str),
              "objective": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
              "error": lambda v: v is None or isinstance(v, str)}
    for key, ok in checks.items():
        if not ok(record.get(key)):
            raise ValueError(f"{path}: {key}={record.get(key)!r:.200} is not valid"
                             + (f"; expected one of {STATUSES}" if key == "status" else ""))
    return record


def find_job_records(sweep_dir) -> list[Path]:
    """Every ``sweep_job.json`` under ``sweep_dir`` (job folders may nest, as ``hydra.sweep.subdir``
    allows); submitit's own ``.submitit`` folder is skipped."""
    root = Path(sweep_dir)
    return sorted(p for p in root.rglob(FILE_NAME) if ".submitit" not in p.relative_to(root).parts)
