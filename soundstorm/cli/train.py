"""`soundstorm-train`: train SoundStorm on a prepared token folder (Hydra config ``train``).

Single process: ``soundstorm-train data.root=tokens``; several: ``torchrun --nproc_per_node=N -m
soundstorm.cli.train ...`` (DDP; rank 0 logs and checkpoints). SIGTERM/SIGINT checkpoint and exit 0;
``resume=auto`` (the default) continues from the newest valid checkpoint under ``out_dir``.
Exit codes: 0 done or stopped by a signal, 2 bad configuration or data, 3 too many non-finite steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from soundstorm import builders
from soundstorm.model import SoundStorm
from soundstorm.pretrained import atomic_write_bytes
from soundstorm.cli._common import check_output_dir
from soundstorm.train.checkpoint import resume_candidates
from soundstorm.train.eval_hook import TrainingEvaluator
from soundstorm.train.loop import NonFiniteLossError, Trainer

RUN_ID_FILE = "wandb_run_id.txt"
CONFIG_FILE = "config.yaml"  # the composed config of the latest session in out_dir


def check_out_dir(out_dir: Path) -> None:
    """``out_dir`` and ``out_dir/checkpoints`` must be (or become) writable folders, checked before training."""
    check_output_dir(out_dir, "out_dir")
    checkpoints = out_dir / "checkpoints"
    if checkpoints.exists() and not checkpoints.is_dir():
        raise ValueError(f"{checkpoints} is a file, but training writes its checkpoints in that folder; move the "
                         "file away or choose another out_dir")


def build_training(cfg: DictConfig, backend) -> tuple[Trainer, list[Path]]:
    """Every object of a run, from the composed config (through :mod:`soundstorm.builders` only);
    with the checkpoints to resume from, newest first."""
    seed, out_dir = int(cfg.seed), Path(cfg.out_dir)
    check_out_dir(out_dir)
    trainer_config = builders.build_trainer_config(cfg.trainer)  # before optim: its total_steps follows max_steps
    data_section, train_set, heldout_set = builders.build_datasets(cfg.data, None, seed)
    assets = builders.build_assets(data_section.root, "data.root", cfg.get("codec"), cfg.get("semantic"))
    model_config = builders.build_model_config(cfg.model, train_set.manifest)
    torch.manual_seed(seed)
    model = SoundStorm(model_config).to(backend.device)
    optimizer, scheduler = builders.build_optimizer(cfg.optim, model)
    sampler_config = builders.build_sampler(cfg.sampler, model_config.num_levels)
    evaluation = builders.build_evaluation(cfg.evaluation)
    resume_from = resume_candidates(cfg.resume, out_dir / "checkpoints")
    run_id_path = out_dir / RUN_ID_FILE
    resume_id = run_id_path.read_text().strip() if resume_from and run_id_path.is_file() else None
    logger = builders.build_logger(cfg.logger, OmegaConf.to_container(cfg, resolve=True), backend.dist.is_main,
                                   resume_id)
    if backend.dist.is_main:
        atomic_write_bytes(out_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg).encode())
        if logger.run_id:
            atomic_write_bytes(run_id_path, logger.run_id.encode())
    batches = builders.build_batch_source(data_section, train_set, backend, seed, model_config.mask_id)
    evaluate = None
    if heldout_set is not None:
        evaluate = TrainingEvaluator(backend, heldout_set, evaluation, data_section.batch_size, lambda: assets.codec,
                                     sampler_config, logger, out_dir)
    if backend.dist.is_main:
        print(f"model: {model.num_parameters():,} parameters {model_config.to_dict()}; train utterances "
              f"{len(train_set)}, held-out {len(heldout_set) if heldout_set else 0}; backend "
              f"{backend.describe()}, {backend.dist.world_size} process(es)", flush=True)
    trainer = Trainer(model, backend, optimizer, scheduler, trainer_config, out_dir, batches, logger, evaluate,
                      tokens=assets.record)
    return trainer, resume_from


@hydra.main(config_path="pkg://soundstorm.configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    backend, trainer, code = None, None, 0
    try:
        backend = builders.build_backend(cfg.backend)
        trainer, resume_from = build_training(cfg, backend)
        trainer.fit(resume_from)
    except (ValueError, FileNotFoundError) as err:
        print(f"soundstorm-train: error: {err}", file=sys.stderr)
        code = 2
    except NonFiniteLossError as err:
        print(f"soundstorm-train: error: {err}", file=sys.stderr)
        code = 3
    finally:
        if trainer is not None and trainer.logger is not None:
            trainer.logger.finish()
        if backend is not None:
            backend.shutdown()
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
