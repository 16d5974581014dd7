"""Run a few training steps of the tiny model on the in-memory tokens and save the weights.

Usage: python -m torch.distributed.run --nproc_per_node=N tests/_ddp_worker.py OUT GLOBAL_BATCH STEPS
(or plain python for one process). Each rank takes GLOBAL_BATCH / N examples of every global batch.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tokens import RandomTokens, collate, sampler_for  # noqa: E402

from soundstorm import SoundStorm, SoundStormConfig  # noqa: E402
from soundstorm.backends import get_backend  # noqa: E402
from soundstorm.train.data import make_batch_source  # noqa: E402
from soundstorm.train.loop import Trainer, TrainerConfig  # noqa: E402
from soundstorm.train.optim import OptimConfig, make_optimizer, make_scheduler  # noqa: E402


def main(out: str, global_batch: int, steps: int) -> None:
    torch.set_num_threads(1)
    backend = get_backend("cpu")
    info = backend.init_distributed()
    torch.manual_seed(0)
    model = SoundStorm(SoundStormConfig.tiny())
    dataset = RandomTokens(num_items=24)
    optim_cfg = OptimConfig(lr=3e-3, warmup_steps=1, total_steps=steps)
    optimizer = make_optimizer(model, optim_cfg)
    sampler = sampler_for(len(dataset), global_batch // info.world_size, 0, info.rank, info.world_size)
    batches = make_batch_source(dataset, sampler, collate, 0, model.config.mask_id)
    config = TrainerConfig(max_steps=steps, log_every=1, ckpt_every=1000, eval_every=1000, progress=False)
    trainer = Trainer(model, backend, optimizer, make_scheduler(optimizer, optim_cfg), config, out, batches)
    metrics = trainer.fit()
    if info.is_main:
        torch.save({"weights": model.state_dict(), "loss": metrics["train/loss"]}, Path(out) / "weights.pt")
    backend.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
