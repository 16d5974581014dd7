"""A sweep's runs as one table: ``summary.md`` and ``summary.csv`` in the sweep folder.

One row per job record found under the sweep folder (:mod:`.sweep_record`), sorted by job number:
its status, the overrides that differ between jobs (one column per key; those every job shares are
listed once above the markdown table), the step reached, and the final held-out loss, accuracy and
accuracy per level read from its run's ``final_metrics.json`` (:mod:`.final_metrics`), the objective
the sweeper received and the wandb run id. A job that failed, was killed (its record still says
``running``) or left no metrics is a row that says so. When Hydra's Optuna sweeper has written
``optimization_results.yaml``, its best value and parameters follow the table.

Both files hold the same columns and rows: the CSV with full-precision numbers (for pandas), the
markdown rounded to four significant digits. Everything read from run folders is parsed as JSON or
with ``yaml.safe_load``, size-capped and checked. A sweep folder may come from someone else, so a
record's ``out_dir`` is followed (to read its ``final_metrics.json`` and wandb run id, nothing else)
only when it lies under the sweep folder or under ``runs_root`` (symlinks resolved); the sweep's own
Hydra callback passes ``/``, as it reads what its jobs just wrote.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from soundstorm.io import atomic_write_bytes
from soundstorm.paths import is_under
from soundstorm.train.final_metrics import read_final_metrics
from soundstorm.train.sweep_record import find_job_records, read_job_record

MARKDOWN_NAME, CSV_NAME = "summary.md", "summary.csv"
OPTUNA_RESULTS = "optimization_results.yaml"


@dataclass
class Row:
    """One job of the sweep, as read from its record and its run's final metrics."""

    job: int | None
    status: str
    overrides: dict[str, str | None] = field(default_factory=dict)  # key → value (None: ``~key``, a deletion)
    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None
    accuracy: float | None = None
    accuracy_per_level: list[float] = field(default_factory=list)
    objective: float | None = None
    wandb_run: str | None = None
    out_dir: str | None = None


def split_override(override: str) -> tuple[str, str | None]:
    """``"optim.lr=0.001"`` → ``("optim.lr", "0.001")``; ``"~key"`` (a deletion) → ``("~key", None)``."""
    key, equals, value = override.partition("=")
    return key.strip(), value.strip() if equals else None


def join_override(key: str, value: str | None) -> str:
    return key if value is None else f"{key}={value}"


def _status(record: dict, final: dict | None, problem: str | None) -> str:
    if record["status"] == "running":
        status = "no end record: still running, or killed (out of memory, time limit)"
    elif record["status"] == "failed":
        status = "failed: " + " ".join((record["error"] or "unknown error").split())[:200]
    elif problem:
        status = "completed, " + problem
    else:
        status = "completed"
    if final is not None and final["stopped_by"]:
        status += f"; stopped at step {final['step']} of {final['max_steps']} ({final['stopped_by']})"
    if final is not None and final["eval_step"] is not None and final["eval_step"] != final["step"]:
        status += f"; held-out numbers from step {final['eval_step']}"
    return status


WANDB_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789")


def read_row(record_path: Path, sweep_dir: Path, runs_root: Path | None = None) -> Row:
    """The row of one job record (an unreadable record is a row saying why); its run folder is read only
    under ``sweep_dir`` or ``runs_root``."""
    try:
        record = read_job_record(record_path)
    except (ValueError, FileNotFoundError) as err:
        return Row(job=None, status=f"unreadable job record: {err}", out_dir=str(record_path.parent))
    out_dir = Path(record["out_dir"]) if record["out_dir"] else None
    final, problem = None, None
    if out_dir is None:
        problem = "no out_dir recorded"
    elif not (is_under(out_dir, sweep_dir) or (runs_root is not None and is_under(out_dir, runs_root))):
        problem = (f"out_dir {out_dir} is outside the sweep folder, not read (soundstorm-sweep-summary "
                   "--runs-root FOLDER reads run folders under FOLDER)")
        out_dir = None
    else:
        try:
            final = read_final_metrics(out_dir)
        except FileNotFoundError:
            problem = f"no final_metrics.json in {out_dir}"
        except ValueError as err:
            problem = f"unreadable final metrics: {err}"
    row = Row(job=record["job"], status=_status(record, final, problem),
              overrides=dict(split_override(o) for o in record["overrides"]), objective=record["objective"])
    row.out_dir = record["out_dir"]
    if out_dir is not None:
        row.out_dir = str(out_dir.relative_to(sweep_dir)) if out_dir.is_relative_to(sweep_dir) else str(out_dir)
        run_id = out_dir / "wandb_run_id.txt"
        if run_id.is_file() and run_id.stat().st_size <= 64:
            text = run_id.read_text(errors="replace").strip()
            row.wandb_run = text if text and set(text) <= WANDB_ID_CHARS else None
    if final is not None:
        metrics = final["metrics"]
        row.step, row.max_steps = final["step"], final["max_steps"]
        row.loss, row.accuracy = metrics.get("eval/loss"), metrics.get("eval/accuracy")
        level = 1
        while f"eval/accuracy_level{level}" in metrics:
            row.accuracy_per_level.append(metrics[f"eval/accuracy_level{level}"])
            level += 1
    return row


def collect(sweep_dir, runs_root=None) -> list[Row]:
    """Every job's row, by job number; a folder without job records is a FileNotFoundError."""
    root = Path(sweep_dir).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"sweep folder {root} does not exist; expected the hydra.sweep.dir of a "
                                "soundstorm-train -m run (e.g. multirun/2024-01-31_12-00-00)")
    paths = find_job_records(root)
    if not paths:
        raise FileNotFoundError(f"no sweep_job.json under {root}; expected the hydra.sweep.dir of a soundstorm-train "
                                "-m run (each job writes one into its folder when it starts)")
    rows = [read_row(p, root, None if runs_root is None else Path(runs_root)) for p in paths]
    return sorted(rows, key=lambda r: (r.job is None, r.job if r.job is not None else 0, r.out_dir or ""))


def shared_and_varying(rows: list[Row]) -> tuple[list[str], list[str]]:
    """Overrides every readable job has with the same value (``key=value``), and the keys that differ."""
    jobs = [r for r in rows if r.job is not None]
    keys = list(dict.fromkeys(k for r in jobs for k in r.overrides))
    shared = [k for k in keys if len(jobs) > 1 and all(k in r.overrides and r.overrides[k] == jobs[0].overrides[k]
                                                       for r in jobs)]
    return [join_override(k, jobs[0].overrides[k]) for k in shared], [k for k in keys if k not in shared]


def table(rows: list[Row]) -> tuple[list[str], list[list]]:
    """Column names and cell values (numbers stay numbers; None where there is nothing)."""
    _, varying = shared_and_varying(rows)
    num_levels = max((len(r.accuracy_per_level) for r in rows), default=0)
    columns = (["job", "status", *varying, "step", "max_steps", "heldout_loss", "heldout_accuracy"]
               + [f"accuracy_level{q + 1}" for q in range(num_levels)] + ["objective", "wandb_run", "out_dir"])
    cells = []
    for r in rows:
        levels = r.accuracy_per_level + [None] * (num_levels - len(r.accuracy_per_level))
        cells.append([r.job, r.status, *(r.overrides.get(k) for k in varying), r.step, r.max_steps, r.loss,
                      r.accuracy, *levels, r.objective, r.wandb_run, r.out_dir])
    return columns, cells


def _markdown_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(columns: list[str], cells: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_markdown_cell(v) for v in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def to_csv(columns: list[str], cells: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if v is None else repr(v) if isinstance(v, float) else v for v in row] for row in cells])
    return out.getvalue()


def optuna_result(sweep_dir: Path) -> str | None:
    """One line from the Optuna sweeper's ``optimization_results.yaml``, when there is one."""
    import yaml

    path = sweep_dir / OPTUNA_RESULTS
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        return f"Optuna: {path.name} is not valid YAML ({err})"
    if not isinstance(data, dict):
        return f"Optuna: {path.name} holds {type(data).__name__}, not a mapping"
    if "best_value" in data:
        return f"Optuna ({path.name}): best value {data['best_value']!r} with {data.get('best_params')!r}"
    return f"Optuna ({path.name}): Pareto front {data.get('solutions')!r:.500}"


def summarize(sweep_dir, runs_root=None) -> tuple[str, str]:
    """``(markdown, csv)`` of the sweep in ``sweep_dir`` (not written); see the module docstring for
    ``runs_root``."""
    root = Path(sweep_dir).resolve()
    rows = collect(root, runs_root)
    shared, _ = shared_and_varying(rows)
    columns, cells = table(rows)
    done = sum(r.status.startswith("completed") for r in rows)
    objectives = [r.objective for r in rows if r.objective is not None]
    head = [f"# Sweep {root}", "",
            f"{len(rows)} jobs: {done} completed, {len(rows) - done} not "
            f"(jobs that never started have no folder and no row). heldout_*: the final held-out "
            f"teacher-forced loss and accuracy (eval/loss, eval/accuracy, pooled over mask ratios); "
            f"objective: what the job returned to the sweeper"
            + (f" (lowest {min(objectives):.6g}, highest {max(objectives):.6g})." if objectives else ".")]
    if shared:
        head += ["", "Overrides of every job: " + " ".join(f"`{o}`" for o in shared)]
    tail = optuna_result(root)
    markdown = "\n".join(head) + "\n\n" + to_markdown(columns, cells) + (f"\n{tail}\n" if tail else "")
    return markdown, to_csv(columns, cells)


def write_summary(sweep_dir, runs_root=None) -> str:
    """Write ``summary.md`` and ``summary.csv`` into ``sweep_dir`` (atomically); returns the markdown."""
    root = Path(sweep_dir).resolve()
    markdown, table_csv = summarize(root, runs_root)
    atomic_write_bytes(root / MARKDOWN_NAME, markdown.encode())
    atomic_write_bytes(root / CSV_NAME, table_csv.encode())
    return markdown
