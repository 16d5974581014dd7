"""`soundstorm-train-t2s`: train the text-to-semantic stage on a token folder (Hydra config ``train_t2s``).

It shares SoundStorm's machinery: the data, optim, trainer, logger and backend config groups, the
:class:`~soundstorm.train.loop.Trainer` (accumulation, clipping, guarded steps, wandb, atomic
safetensors checkpoints, exact ``resume=auto``, SIGTERM/SIGINT → checkpoint and exit 0, DDP under
torchrun). Exit codes (shared with ``soundstorm-train``, :func:`soundstorm.cli._common.run_training`): 0 done or
stopped by a signal, 1 an operating-system error such as a full disk, 2 bad configuration or data, 3
non-finite steps, 4 too many compiled graphs (XLA).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from soundstorm import builders
from soundstorm.cli._common import run_training
from soundstorm.data import TokenManifest
from soundstorm.t2s import builders as t2s_builders
from soundstorm.t2s.model import TextToSemantic
from soundstorm.t2s.train import T2SEvaluator, T2SLoss
from soundstorm.train.checkpoint import resolve_resume
from soundstorm.train.loop import Trainer

RUN_ID_FILE = "wandb_run_id.txt"


def build_t2s_training(cfg: DictConfig, backend) -> tuple[Trainer, Path | None]:
    """Every object of a text-to-semantic run, from the composed config."""
    seed = int(cfg.seed)
    if OmegaConf.is_missing(cfg.data, "root") or not cfg.data.get("root"):
        raise ValueError("data.root is not set; expected data.root=TOKEN_FOLDER (written by soundstorm-prepare)")
    model_config = t2s_builders.build_t2s_config(cfg.t2s_model, TokenManifest.load(cfg.data.root))
    data_section, train_set, heldout_set = t2s_builders.build_t2s_datasets(cfg.data, model_config,
                                                                            float(cfg.prompt_probability), seed)
    torch.manual_seed(seed)
    model = TextToSemantic(model_config).to(backend.device)
    optimizer, scheduler = builders.build_optimizer(cfg.optim, model)
    trainer_config = builders.build_trainer_config(cfg.trainer)
    evaluation = t2s_builders.build_t2s_evaluation(cfg.evaluation)
    out_dir = Path(cfg.out_dir)
    resume_from = resolve_resume(cfg.resume, out_dir / "checkpoints")
    run_id_path = out_dir / RUN_ID_FILE
    resume_id = run_id_path.read_text().strip() if resume_from is not None and run_id_path.is_file() else None
    logger = builders.build_logger(cfg.logger, OmegaConf.to_container(cfg, resolve=True), backend.dist.is_main,
                                   resume_id)
    if logger.run_id and backend.dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        run_id_path.write_text(logger.run_id)
    batches = t2s_builders.build_t2s_batch_source(data_section, train_set, backend, seed, model_config.mask_id)
    evaluate = None
    if heldout_set is not None:
        evaluate = T2SEvaluator(backend, heldout_set, evaluation, data_section.batch_size)
    if backend.dist.is_main:
        with_prompt = sum(1 for others in train_set.same_speaker if others)
        print(f"text-to-semantic model: {model.num_parameters():,} parameters {model_config.to_dict()}; train "
              f"utterances {len(train_set)} ({with_prompt} with another utterance of their speaker for prompts), "
              f"held-out {len(heldout_set) if heldout_set else 0}; backend {backend.describe()}", flush=True)
    trainer = Trainer(model, backend, optimizer, scheduler, trainer_config, out_dir, batches, logger, evaluate,
                      loss=T2SLoss(model))
    return trainer, resume_from


@hydra.main(config_path="pkg://soundstorm.configs", config_name="train_t2s", version_base="1.3")
def main(cfg: DictConfig) -> None:
    code = run_training("soundstorm-train-t2s", cfg, build_t2s_training)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
