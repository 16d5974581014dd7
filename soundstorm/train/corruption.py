"""Per-example training corruption keyed by (seed, epoch, dataset index), for exact resume and DDP.

:func:`soundstorm.masking.corrupt` draws the §3.2 corruption of a whole batch from one generator,
so the masks an example gets depend on which batch and which rank it lands in. Here each example is
corrupted on its own real frames with a generator seeded from ``(seed, epoch, dataset index)``
(an example is seen once per epoch, like its random window):

* two processes on half a batch each produce exactly the masks one process produces on the whole
  batch (the DDP equivalence test relies on this);
* resuming needs no masking RNG state: epoch and indices determine everything;
* the padded length of a batch never changes an example's masks.

It runs on the CPU in the DataLoader's collate function (workers, before the batch moves to the
device), so the training step itself draws no random numbers for masking and has fixed shapes.
"""

from __future__ import annotations

import torch

from soundstorm.masking import corrupt

_MASK64 = (1 << 63) - 1


def example_key(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one example in one epoch (splitmix-style mixing of the three integers)."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + int(index) * 0x94D049BB133111EB)
    x &= (1 << 64) - 1
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    x ^= x >> 29
    return x & _MASK64


def corrupt_batch(codes_BQT: torch.Tensor, lengths_B: torch.Tensor, indices_B: list[int], seed: int, epoch: int,
                  mask_id: int) -> dict[str, torch.Tensor]:
    """Corrupt each example on its real frames; returns ``inputs [B,Q,T]``, ``loss_mask [B,Q,T]``,
    ``level [B]`` (CPU tensors) and the ints ``num_loss_tokens``, ``num_frames``. Padding frames keep their values and are never in the loss."""
    batch_size, num_levels, num_frames = codes_BQT.shape
    if len(indices_B) != batch_size:
        raise ValueError(f"indices has {len(indices_B)} entries, expected one per example (batch {batch_size})")
    inputs_BQT = codes_BQT.clone()
    loss_mask_BQT = torch.zeros(codes_BQT.shape, dtype=torch.bool)
    level_B = torch.zeros(batch_size, dtype=torch.long)
    for b in range(batch_size):
        length = int(lengths_B[b])
        generator = torch.Generator().manual_seed(example_key(seed, epoch, indices_B[b]))
        c = corrupt(codes_BQT[b:b + 1, :, :length], None, generator, mask_id=mask_id)
        inputs_BQT[b, :, :length] = c.inputs[0]
        loss_mask_BQT[b, :, :length] = c.loss_mask[0]
        level_B[b] = c.level[0]
    return {"inputs": inputs_BQT, "loss_mask": loss_mask_BQT, "level": level_B,
            "num_loss_tokens": int(loss_mask_BQT.sum()), "num_frames": int(lengths_B.sum())}
