"""Golden losses: the tiny preset's first 20 training losses on one fixed batch, stored in the repo.

The whole training path runs (collate → per-example keyed §3.2 corruption → masked loss → AdamW
with warmup-cosine), so a silent change to the masking (delimiter, level, cos(u) ratio), the loss
or the optimizer moves these numbers beyond the tolerance. After an intended change, regenerate
with ``python tests/test_golden.py`` and say why in the commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _tokens import RandomTokens, collate

from soundstorm import SoundStorm, SoundStormConfig
from soundstorm.backends import get_backend
from soundstorm.train.data import make_batch_source
from soundstorm.train.loop import Trainer, TrainerConfig
from soundstorm.train.optim import OptimConfig, make_optimizer, make_scheduler

GOLDEN = Path(__file__).resolve().parent / "golden" / "tiny_losses.json"
NUM_STEPS = 20


def first_losses(out_dir, num_steps: int = NUM_STEPS) -> list[float]:
    """Per-step training loss of a seeded tiny model on the same 4-utterance batch (new masks each step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = SoundStorm(SoundStormConfig.tiny())
        dataset = RandomTokens(num_items=4, seed=1)
        backend = get_backend("cpu")
        backend.init_distributed()
        optim_cfg = OptimConfig(lr=3e-3, warmup_steps=2, total_steps=num_steps)
        optimizer = make_optimizer(model, optim_cfg)
        batches = make_batch_source(dataset, lambda epoch: [[0, 1, 2, 3]], collate, 0, model.config.mask_id)
        config = TrainerConfig(max_steps=num_steps, log_every=1, ckpt_every=1000, eval_every=1000, progress=False)
        trainer = Trainer(model, backend, optimizer, make_scheduler(optimizer, optim_cfg), config, out_dir, batches)
        model.train()
        losses = []
        for _ in range(num_steps):
            trainer._zero_sums()
            trainer.train_step()
            losses.append(trainer._read_metrics()["train/loss"])
        return losses
    finally:
        torch.set_num_threads(threads)


def test_first_training_losses_match_the_golden_file(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    losses = first_losses(tmp_path)
    assert len(golden["losses"]) == NUM_STEPS
    assert losses == pytest.approx(golden["losses"], rel=1e-4, abs=1e-5), (
        "training losses moved: was the masking, the loss or the optimizer changed? "
        f"got {[round(x, 5) for x in losses]}")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        values = first_losses(Path(tmp))
    GOLDEN.write_text(json.dumps({"what": "tests/test_golden.py: tiny preset, seed 0, one fixed batch",
                                  "losses": values}, indent=1) + "\n")
    print(f"wrote {GOLDEN}: {values}")
