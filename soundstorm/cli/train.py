"""`soundstorm-train`: train SoundStorm on a prepared token folder (Hydra config ``train``).

Single process: ``soundstorm-train data.root=tokens``; several: ``torchrun --nproc_per_node=N -m
soundstorm.cli.train ...`` (DDP; rank 0 logs and checkpoints); on a TPU host it starts one process
per chip itself (``launch: auto``, see :mod:`soundstorm.train.launch`). SIGTERM/SIGINT checkpoint and exit 0;
``resume=auto`` (the default) continues from the newest valid checkpoint under ``out_dir``.
On XLA, batches are padded to a few frame buckets (``data.num_buckets``) unless ``data.frame_buckets``
or ``data.frames_multiple`` is set; the run logs its batch shapes and stops when training compiles
more graphs than they allow (:mod:`soundstorm.train.graphs`).
Exit codes: 0 done or stopped by a signal, 2 bad configuration or data, 3 too many non-finite steps,
4 more compiled graphs than the batch shapes allow (XLA).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from soundstorm import builders
from soundstorm.model import SoundStorm
from soundstorm.train.checkpoint import resolve_resume
from soundstorm.train.eval_hook import TrainingEvaluator
from soundstorm.train.graphs import GraphBudget, GraphBudgetExceeded
from soundstorm.train.launch import ReplicaFailed, processes_per_host, run_replicas
from soundstorm.train.loop import NonFiniteLossError, Trainer
from soundstorm.train.memory_plan import format_plan, memory_plan

RUN_ID_FILE = "wandb_run_id.txt"


def build_training(cfg: DictConfig, backend) -> tuple[Trainer, Path | None]:
    """Every object of a run, from the composed config (through :mod:`soundstorm.builders` only)."""
    seed = int(cfg.seed)
    data_section, train_set, heldout_set = builders.build_datasets(cfg.data, None, seed, backend.static_shapes)
    model_config = builders.build_model_config(cfg.model, train_set.manifest)
    torch.manual_seed(seed)
    model = SoundStorm(model_config).to(backend.device)
    optimizer, scheduler = builders.build_optimizer(cfg.optim, model)
    trainer_config = builders.build_trainer_config(cfg.trainer)
    attention = backend.configure_model(model, trainer_config.activation_checkpointing)
    sampler_config = builders.build_sampler(cfg.sampler, model_config.num_levels)
    evaluation = builders.build_evaluation(cfg.evaluation)
    out_dir = Path(cfg.out_dir)
    resume_from = resolve_resume(cfg.resume, out_dir / "checkpoints")
    run_id_path = out_dir / RUN_ID_FILE
    resume_id = run_id_path.read_text().strip() if resume_from is not None and run_id_path.is_file() else None
    logger = builders.build_logger(cfg.logger, OmegaConf.to_container(cfg, resolve=True), backend.dist.is_main,
                                   resume_id)
    if logger.run_id and backend.dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        run_id_path.write_text(logger.run_id)
    batches = builders.build_batch_source(data_section, train_set, backend, seed, model_config.mask_id)
    evaluate = None
    if heldout_set is not None:
        evaluate = TrainingEvaluator(backend, heldout_set, evaluation, data_section.batch_size,
                                     lambda: builders.build_codec(builders.resolved(cfg.codec)), sampler_config, logger, out_dir)
    if backend.dist.is_main:
        print(f"model: {model.num_parameters():,} parameters {model_config.to_dict()}; train utterances "
              f"{len(train_set)}, held-out {len(heldout_set) if heldout_set else 0}; backend "
              f"{backend.describe()}, {backend.dist.world_size} process(es); attention {attention}, activation "
              f"checkpointing {'on' if trainer_config.activation_checkpointing else 'off'}", flush=True)
    budget = None
    if backend.static_shapes:
        process_batch = data_section.batch_size * backend.devices_per_process
        budget = GraphBudget(tuple(train_set.frame_shapes()), process_batch, trainer_config.grad_accum,
                             trainer_config.max_graphs)
        if backend.dist.is_main:
            print(f"static shapes: {budget.describe()}", flush=True)
    trainer = Trainer(model, backend, optimizer, scheduler, trainer_config, out_dir, batches, logger, evaluate,
                      budget)
    return trainer, resume_from


def train_process(index: int, config) -> int:
    """One training process (the only one, or replica ``index`` of a launch); returns its exit code."""
    cfg = config if isinstance(config, DictConfig) else OmegaConf.create(config)
    backend, trainer, code = None, None, 0
    try:
        backend = builders.build_backend(cfg.backend)
        trainer, resume_from = build_training(cfg, backend)
        if resume_from is not None and backend.dist.is_main:
            print(f"resuming from {resume_from}", flush=True)
        trainer.fit(resume_from)
    except (ValueError, FileNotFoundError) as err:
        print(f"soundstorm-train: error: {err}", file=sys.stderr)
        code = 2
    except NonFiniteLossError as err:
        print(f"soundstorm-train: error: {err}", file=sys.stderr)
        code = 3
    except GraphBudgetExceeded as err:
        print(f"soundstorm-train: error: {err}", file=sys.stderr)
        code = 4
    finally:
        if trainer is not None and trainer.logger is not None:
            trainer.logger.finish()
        if backend is not None:
            backend.shutdown()
    return code


def dry_run(cfg: DictConfig) -> int:
    """Print the per-device memory plan of the configured training step (no data, device or weights)."""
    try:
        plan_inputs = builders.build_dry_run(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"soundstorm-train: error: {err}", file=sys.stderr)
        return 2
    config, dtype = plan_inputs["model_config"], plan_inputs["dtype"]
    plan = memory_plan(config, plan_inputs["batch_size"], plan_inputs["num_frames"], dtype, plan_inputs["ema"])
    title = (f"dry run: per-device memory plan of one training step: batch {plan_inputs['batch_size']} per device x "
             f"{plan_inputs['num_frames']} frames ({plan_inputs['seconds']:g} s at {plan_inputs['frame_rate']:g} Hz), "
             f"activations in {str(dtype).removeprefix('torch.')}, EMA {'on' if plan_inputs['ema'] else 'off'};\n"
             f"this config trains with activation checkpointing {'on' if plan_inputs['checkpointing'] else 'off'} "
             f"(Pallas flash attention on TPU, SDPA elsewhere)")
    print(format_plan(plan, title), flush=True)
    return 0


def run(cfg: DictConfig, launcher=None) -> int:
    """Train in this process, or (XLA on TPU, ``launch: auto``) in one process per local chip."""
    if cfg.get("dry_run"):
        return dry_run(cfg)
    backend = cfg.backend
    try:
        mode = processes_per_host(cfg.launch, backend.name, bool((backend.get("options") or {}).get("spmd", False)),
                                  os.environ.get("PJRT_DEVICE"))
    except ValueError as err:
        print(f"soundstorm-train: error: {err}", file=sys.stderr)
        return 2
    if mode == "single":
        return train_process(0, cfg)
    try:
        run_replicas(train_process, OmegaConf.to_container(cfg, resolve=True), launcher)
    except ReplicaFailed as err:
        return err.code
    return 0


@hydra.main(config_path="pkg://soundstorm.configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    code = run(cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
