"""What ties a training run to a Hydra multirun (``soundstorm-train -m``): its folder, its wandb group,
its record, the sweep's summary, and the plugins a sweep needs.

Besides :mod:`soundstorm.builders`, this is the one module that reads Hydra, by nature: it is Hydra's
runtime state (is this a multirun? which job? which sweep folder?) that decides these things.

* Resolvers, registered on import (``builders`` imports this module, so every process that resolves
  a config has them): ``${soundstorm.job_dir:DEFAULT}`` is the job's own folder
  (``hydra.sweep.dir/hydra.sweep.subdir``) in a multirun and ``DEFAULT`` otherwise, so jobs never share
  an ``out_dir`` (and never resume each other's checkpoints); ``${soundstorm.sweep_group:}`` is the
  sweep folder's name in a multirun and null otherwise, the wandb group of all of a sweep's runs.
* :class:`SweepCallback` (``hydra.callbacks`` in ``configs/train.yaml``): each job writes its record
  (:mod:`soundstorm.train.sweep_record`) when it starts and ends, and refreshes the sweep summary
  (:mod:`soundstorm.train.sweep_summary`) when it ends, so a sweep cut short by a failed job or a dead
  launcher still has one; at the end of the multirun the summary is written and printed. Callbacks
  run inside Hydra, where an exception would end the whole sweep, so bookkeeping failures are warnings.
* :func:`missing_plugin`: ``hydra/launcher=submitit_*`` and ``hydra/sweeper=optuna`` come from
  optional plugins; without them Hydra only says the option is not found. The CLI asks this first
  and names the extra to install.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf

from soundstorm.train.sweep_record import FILE_NAME, find_job_records, now, read_job_record, write_job_record
from soundstorm.train.sweep_summary import write_summary

EXTRA = "pip install 'soundstorm[sweep]'"
# (config group, option) → (module under hydra_plugins, PyPI package)
PLUGIN_OPTIONS = {("hydra/launcher", "submitit_local"): ("hydra_submitit_launcher", "hydra-submitit-launcher"),
                  ("hydra/launcher", "submitit_slurm"): ("hydra_submitit_launcher", "hydra-submitit-launcher"),
                  ("hydra/sweeper", "optuna"): ("hydra_optuna_sweeper", "hydra-optuna-sweeper")}


# ---------------------------------------------------------------- this process's place in a multirun
def multirun_job():
    """Hydra's config of the current multirun job, or None (a single run, or no Hydra at all)."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return hydra_cfg if hydra_cfg.get("mode") == RunMode.MULTIRUN else None


def _job_dir(default):
    hydra_cfg = multirun_job()
    return default if hydra_cfg is None else hydra_cfg.runtime.output_dir


def _sweep_group():
    hydra_cfg = multirun_job()
    return None if hydra_cfg is None else Path(str(hydra_cfg.sweep.dir)).resolve().name


OmegaConf.register_new_resolver("soundstorm.job_dir", _job_dir, replace=True)
OmegaConf.register_new_resolver("soundstorm.sweep_group", _sweep_group, replace=True)


def check_own_out_dir(out_dir) -> None:
    """In a multirun, refuse an ``out_dir`` another job of the same sweep recorded: the second job would
    resume the first one's checkpoints and train nothing (an experiment config with a fixed out_dir
    does this). ValueError naming both jobs; a no-op outside a multirun."""
    hydra_cfg = multirun_job()
    if hydra_cfg is None:
        return
    me, target = int(hydra_cfg.job.num), Path(out_dir).resolve()
    for path in find_job_records(hydra_cfg.sweep.dir):
        try:
            record = read_job_record(path)
        except (ValueError, FileNotFoundError):
            continue
        if record["job"] != me and record["out_dir"] and Path(record["out_dir"]).resolve() == target:
            raise ValueError(f"out_dir={str(out_dir)!r} is also the out_dir of job {record['job']} of this sweep "
                             f"({hydra_cfg.sweep.dir}); every job needs its own: leave out_dir unset in a multirun "
                             "(each job then trains in its folder under hydra.sweep.dir) or put the swept values "
                             "in it, e.g. out_dir=outputs/sweep/lr${optim.lr}")


# ---------------------------------------------------------------- the callback
def _warn(what: str, err: Exception) -> None:
    print(f"soundstorm-train: warning: could not {what}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)


def _in_multirun(config) -> bool:
    return config.hydra.get("mode") == RunMode.MULTIRUN


class SweepCallback(Callback):
    """Records every multirun job and writes the sweep summary (see the module docstring); does nothing
    in a single run."""

    def on_job_start(self, config, **kwargs) -> None:
        if not _in_multirun(config):
            return
        try:
            out_dir = str(Path(str(config.out_dir)).resolve())
        except Exception:  # an interpolation that cannot resolve: the task reports it, with its name
            out_dir = None
        try:
            write_job_record(config.hydra.runtime.output_dir, self._base(config, out_dir) | {
                "status": "running", "started": now()})
        except Exception as err:  # noqa: BLE001  (bookkeeping must not end the sweep)
            _warn("write the sweep job record", err)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if not _in_multirun(config):
            return
        completed = job_return.status == JobStatus.COMPLETED
        value = job_return._return_value  # (the public property re-raises a failed job's exception)
        record = self._base(config, None)
        try:  # keep the start time of this job's start record
            record["started"] = read_job_record(Path(config.hydra.runtime.output_dir) / FILE_NAME).get("started")
        except Exception:  # noqa: BLE001
            pass
        try:
            record["out_dir"] = str(Path(str(config.out_dir)).resolve())
        except Exception:  # noqa: BLE001
            pass
        objective = value if completed and isinstance(value, (int, float)) and not isinstance(value, bool) else None
        record |= {"status": "completed" if completed else "failed", "finished": now(),
                   "objective": None if objective is None else float(objective),
                   "error": None if completed else f"{type(value).__name__}: {value}"}
        try:
            write_job_record(config.hydra.runtime.output_dir, record)
            write_summary(config.hydra.sweep.dir, runs_root=os.sep)  # this sweep's own records
        except Exception as err:  # noqa: BLE001
            _warn("update the sweep record and summary", err)

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            markdown = write_summary(sweep_dir, runs_root=os.sep)  # this sweep's own records
        except Exception as err:  # noqa: BLE001
            _warn(f"write the sweep summary of {sweep_dir}", err)
            return
        print(f"\n{markdown}\n(also in {sweep_dir / 'summary.md'} and {sweep_dir / 'summary.csv'})", flush=True)

    @staticmethod
    def _base(config, out_dir) -> dict:
        job_id = OmegaConf.select(config, "hydra.job.id", default=None, throw_on_missing=False)
        return {"job": int(config.hydra.job.num), "overrides": [str(o) for o in config.hydra.overrides.task],
                "out_dir": out_dir, "objective_name": OmegaConf.select(config, "sweep_objective", default=None),
                "scheduler_job_id": None if job_id in (None, "???") else str(job_id), "pid": os.getpid(),
                "objective": None, "error": None}


# ---------------------------------------------------------------- optional plugins
def plugin_installed(module: str) -> bool:
    """Whether ``hydra_plugins.<module>`` can be imported (as Hydra's plugin scan would find it)."""
    try:
        return importlib.util.find_spec(f"hydra_plugins.{module}") is not None
    except ModuleNotFoundError:  # no hydra_plugins package at all
        return False


def _experiment_choices(name: str) -> list[tuple[str, str]]:
    """The ``hydra/...`` options the packaged experiment config ``name`` selects in its defaults list."""
    import importlib.resources

    import yaml

    path = importlib.resources.files("soundstorm.configs").joinpath("experiment", f"{name}.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):  # not ours, or broken: Hydra reports it
        return []
    choices = []
    for entry in (data or {}).get("defaults", []) if isinstance(data, dict) else []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                group = str(key).removeprefix("override").strip().lstrip("/")
                if group.startswith("hydra/") and isinstance(value, str):
                    choices.append((group, value))
    return choices


def missing_plugin(argv: list[str]) -> str | None:
    """The message for a command line that selects a sweep launcher or sweeper (directly, or through an
    ``experiment=`` config) whose Hydra plugin is not installed; None when nothing is missing."""
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        choices = _experiment_choices(value) if key == "experiment" and value else [(key, value)]
        for group, option in choices:
            if (group, option) in PLUGIN_OPTIONS:
                module, package = PLUGIN_OPTIONS[(group, option)]
                if not plugin_installed(module):
                    via = "" if key != "experiment" else f" (through {arg})"
                    return (f"{group}={option}{via} needs the Hydra plugin {package}, which is not installed; "
                            f"install the sweep extra: {EXTRA}")
    return None
