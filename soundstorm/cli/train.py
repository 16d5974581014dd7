"""`soundstorm-train`: train SoundStorm on a prepared token folder (Hydra config ``train``).

Single process: ``soundstorm-train data.root=tokens``; several: ``torchrun --nproc_per_node=N -m
soundstorm.cli.train ...`` (DDP; rank 0 logs and checkpoints). SIGTERM/SIGINT checkpoint and exit 0;
``resume=auto`` (the default) continues from the newest valid checkpoint under ``out_dir``.
Exit codes: 0 done or stopped by a signal, 2 bad configuration or data, 3 too many non-finite steps.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from soundstorm import builders
from soundstorm.train.loop import NonFiniteLossError


@hydra.main(config_path="pkg://soundstorm.configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    backend, trainer, code = None, None, 0
    try:
        backend = builders.build_backend(cfg.backend)
        trainer, resume_from = builders.build_training(cfg, backend)
        if resume_from is not None and backend.dist.is_main:
            print(f"resuming from {resume_from}", flush=True)
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
