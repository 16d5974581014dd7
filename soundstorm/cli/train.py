"""`soundstorm-train`: train SoundStorm on a prepared token folder (Hydra config ``train``).

Single process: ``soundstorm-train data.root=tokens``; several: ``torchrun --nproc_per_node=N -m
soundstorm.cli.train ...`` (DDP; rank 0 logs and checkpoints). SIGTERM/SIGINT checkpoint and exit 0;
``resume=auto`` (the default) continues from the newest intact checkpoint under ``out_dir`` (falling
back past one that cannot be read, and saying so). Exit codes: 0 done or stopped by a signal, 1 an
operating-system error such as a full disk, 2 bad configuration or data (nothing trained), 3 too many
non-finite steps.
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
        trainer.fit(resume_from)
    except (ValueError, FileNotFoundError) as err:
        print(f"soundstorm-train: error: {err}", file=sys.stderr)
        code = 2
    except NonFiniteLossError as err:
        print(f"soundstorm-train: error: {err}", file=sys.stderr)
        code = 3
    except OSError as err:  # e.g. a full disk while checkpointing: what was written before is intact
        print(f"soundstorm-train: error: {err}; every checkpoint already under {cfg.out_dir}/checkpoints is complete "
              "(resume=auto continues from the newest once this is fixed)", file=sys.stderr)
        code = 1
    finally:
        if trainer is not None and trainer.logger is not None:
            trainer.logger.finish()
        if backend is not None:
            backend.shutdown()
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
