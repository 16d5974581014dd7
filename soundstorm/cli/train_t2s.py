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

import torch
from omegaconf import DictConfig

from soundstorm import builders
from soundstorm.assets import record_from_manifest
from soundstorm.cli._common import run_training
from soundstorm.cli._hydra import cli_schema, hydra_main
from soundstorm.config_keys import LEAF, dataclass_schema
from soundstorm.t2s import builders as t2s_builders
from soundstorm.t2s.model import T2SConfig, TextToSemantic
from soundstorm.t2s.train import T2SEvaluator, T2SLoss
from soundstorm.train.checkpoint import resume_candidates
from soundstorm.train.loop import Trainer

def build_t2s_training(cfg: DictConfig, backend) -> tuple[Trainer, list[Path]]:
    """Every object of a text-to-semantic run, from the composed config (the out_dir, resume and logging
    steps are SoundStorm training's own)."""
    seed, out_dir = int(cfg.seed), builders.training_out_dir(cfg)
    data = builders.load_data_root(cfg.data)
    model_config = t2s_builders.build_t2s_config(cfg.t2s_model, data.manifest)
    data_section, train_set, heldout_set = t2s_builders.build_t2s_datasets(cfg.data, model_config,
                                                                            float(cfg.prompt_probability), seed)
    trainer_config = builders.build_trainer_config(cfg.trainer)
    evaluation = t2s_builders.build_t2s_evaluation(cfg.evaluation)
    torch.manual_seed(seed)
    model = TextToSemantic(model_config).to(backend.device)
    optimizer, scheduler = builders.build_optimizer(cfg.optim, model)
    resume_from = resume_candidates(cfg.resume, out_dir / "checkpoints")
    builders.check_resume(resume_from, model_config.to_dict(), None)  # refused before config.yaml is written
    logger = builders.start_logging(cfg, backend, out_dir, resume_from)
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
                      loss=T2SLoss(model), tokens=record_from_manifest(data.manifest))  # checked by the dialogue
    return trainer, resume_from


def schema() -> dict:
    """SoundStorm's data, optim, trainer, logger and backend groups, the text-to-semantic model and its
    held-out evaluation section."""
    return cli_schema("train_t2s", ("data", "optim", "trainer", "logger", "backend"),
                      t2s_model=dataclass_schema(T2SConfig, name=LEAF),
                      evaluation=dataclass_schema(t2s_builders.T2SEvalSection))


@hydra_main("soundstorm-train-t2s", "train_t2s", schema)
def main(cfg: DictConfig) -> None:
    code = run_training("soundstorm-train-t2s", cfg, build_t2s_training)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
