"""`soundstorm-train`: train SoundStorm on a prepared token folder (Hydra config ``train``).

Single process: ``soundstorm-train data.root=tokens``; several: ``torchrun --nproc_per_node=N -m
soundstorm.cli.train ...`` (DDP; rank 0 logs and checkpoints); on a TPU host it starts one process
per chip itself (``launch: auto``, see :mod:`soundstorm.train.launch`). SIGTERM/SIGINT checkpoint
and exit 0; ``resume=auto`` (the default) continues from the newest intact checkpoint under ``out_dir``
(falling back past one that cannot be read, and saying so).
On XLA, batches are padded to a few frame buckets (``data.num_buckets``) unless ``data.frame_buckets``
or ``data.frames_multiple`` is set; the run logs its batch shapes and stops when training compiles
more graphs than they allow (:mod:`soundstorm.train.graphs`). ``dry_run=true`` prints the per-device
memory plan of a training step (:mod:`soundstorm.train.memory_plan`) and exits.
Exit codes: 0 done or stopped by a signal, 1 an operating-system error such as a full disk, 2 bad
configuration or data (nothing trained), 3 too many non-finite steps, 4 more compiled graphs than the
batch shapes allow (XLA).

Sweeps (``soundstorm-train -m``, :mod:`soundstorm.hydra_sweep`): each job trains in its own folder
under the sweep folder and joins the sweep's wandb group; the task returns the final value of
``sweep_objective`` (default ``eval/loss``, the held-out loss) for a sweeper such as Optuna, and a
failed job raises instead of exiting, so the sweeper records the failure. ``hydra/launcher=submitit_*``
and ``hydra/sweeper=optuna`` need the ``sweep`` extra; without it the CLI says so (exit 2).
"""

from __future__ import annotations

import os
import sys

from omegaconf import DictConfig, OmegaConf

from soundstorm import builders, hydra_sweep
from soundstorm.cli._common import run_training
from soundstorm.cli._hydra import cli_schema, hydra_main
from soundstorm.train.launch import ReplicaFailed, processes_per_host, run_replicas
from soundstorm.train.memory_plan import format_plan, memory_plan


def train_process(index: int, config, errors: list | None = None) -> int:
    """One training process (the only one, or replica ``index`` of a launch); returns its exit code
    (its error message appended to ``errors`` when given)."""
    cfg = config if isinstance(config, DictConfig) else OmegaConf.create(config)
    return run_training("soundstorm-train", cfg, builders.build_training, errors)


def dry_run(cfg: DictConfig) -> int:
    """Print the per-device memory plan of the configured training step (no data, device or weights)."""
    try:
        inputs = builders.build_dry_run(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"soundstorm-train: error: {err}", file=sys.stderr)
        return 2
    dtype = inputs["dtype"]
    plan = memory_plan(inputs["model_config"], inputs["batch_size"], inputs["num_frames"], dtype, inputs["ema"])
    title = (f"dry run: per-device memory plan of one training step: batch {inputs['batch_size']} per device x "
             f"{inputs['num_frames']} frames ({inputs['seconds']:g} s at {inputs['frame_rate']:g} Hz), "
             f"activations in {str(dtype).removeprefix('torch.')}, EMA {'on' if inputs['ema'] else 'off'};\n"
             f"this config trains with activation checkpointing {'on' if inputs['checkpointing'] else 'off'} "
             f"(Pallas flash attention on TPU, SDPA elsewhere)")
    print(format_plan(plan, title), flush=True)
    return 0


def run(cfg: DictConfig, launcher=None, errors: list | None = None) -> int:
    """Train in this process, or (XLA on TPU, ``launch: auto``) in one process per local chip; the error
    message of a failure in this process is appended to ``errors`` when given."""
    if cfg.get("dry_run"):
        return dry_run(cfg)
    backend = cfg.backend
    try:
        mode = processes_per_host(cfg.launch, backend.name, bool((backend.get("options") or {}).get("spmd", False)),
                                  os.environ.get("PJRT_DEVICE"))
    except ValueError as err:
        print(f"soundstorm-train: error: {err}", file=sys.stderr)
        if errors is not None:
            errors.append(str(err))
        return 2
    if mode == "single":
        return train_process(0, cfg, errors)
    try:
        run_replicas(train_process, OmegaConf.to_container(cfg, resolve=True), launcher)
    except ReplicaFailed as err:
        return err.code
    return 0


EXIT_CODES = {1: "an operating-system error such as a full disk", 2: "bad configuration or data",
              3: "too many non-finite steps", 4: "more compiled graphs than the batch shapes allow"}


class SweepJobFailed(RuntimeError):
    """A multirun job's training ended with a non-zero exit code (its error is in the job's log)."""


# the config groups of its closed schema (soundstorm.cli._hydra)
SECTIONS = ("model", "codec", "semantic", "data", "optim", "sampler", "evaluation", "trainer", "logger", "backend")


@hydra_main("soundstorm-train", "train", lambda: cli_schema("train", SECTIONS))
def train_task(cfg: DictConfig) -> float | None:
    """Hydra's task. A single run exits with the training's code. A multirun job returns the final
    ``sweep_objective`` (None when it is null, or for a dry run), or raises so the sweeper counts a failure."""
    if hydra_sweep.multirun_job() is None:
        code = run(cfg)
        if code:
            sys.exit(code)
        return None
    builders.check_sweep_objective(cfg)
    hydra_sweep.check_own_out_dir(cfg.out_dir)
    errors: list[str] = []
    code = run(cfg, errors=errors)
    if code:
        raise SweepJobFailed(f"soundstorm-train exit code {code} ({EXIT_CODES.get(code, 'see the job log')}): "
                             + (errors[-1] if errors else "the error is in the job's log"))
    return None if cfg.get("dry_run") else builders.sweep_objective(cfg)


def main() -> None:
    """``soundstorm-train``: say which extra to install before Hydra fails on a missing sweep plugin."""
    message = hydra_sweep.missing_plugin(sys.argv[1:])
    if message:
        print(f"soundstorm-train: error: {message}", file=sys.stderr)
        sys.exit(2)
    train_task()


if __name__ == "__main__":
    main()
