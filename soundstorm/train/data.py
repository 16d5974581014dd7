"""The training data path: (epoch, batches to skip) → collated, corrupted batches for one rank.

:func:`make_batch_source` turns a map-style token dataset (``set_epoch``, items ``{"codes": [Q, T_i],
"semantic": [S_i], "utt_id"}``), a per-epoch batch sampler for this rank and a ``collate`` function
into the :data:`~soundstorm.train.loop.BatchSource` the trainer consumes. The data position is
``(epoch, batch_in_epoch)``: the sampler's order is a pure function of (seed, epoch), so resuming
rebuilds the epoch's batch list and skips the batches already consumed.

The §3.2 corruption is applied here, in the collate function (so in DataLoader workers), keyed by
(seed, epoch, dataset index); see :func:`soundstorm.masking.corrupt_batch`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from torch.utils.data import DataLoader, Dataset

import dataclasses

from soundstorm.masking import corrupt_batch


class IndexedDataset(Dataset):
    """Yields ``(index, item)`` so the collate function knows each example's dataset index."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return index, self.dataset[index]


class CorruptingCollate:
    """``collate`` + dataset indices + the per-example corruption (picklable for worker processes)."""

    def __init__(self, collate: Callable, seed: int, epoch: int, mask_id: int, level_weights=None):
        self.collate, self.seed, self.epoch, self.mask_id = collate, seed, epoch, mask_id
        self.level_weights = level_weights

    def __call__(self, indexed_items):
        indices = [int(i) for i, _ in indexed_items]
        batch = self.collate([item for _, item in indexed_items])
        batch["indices"] = indices
        corruption = corrupt_batch(batch["codes"], batch["lengths"], indices, self.seed, self.epoch, self.mask_id,
                                    self.level_weights)
        batch.update(dataclasses.asdict(corruption))  # inputs, loss_mask, level, prompt_len, mask_ratio
        batch["num_loss_tokens"] = int(corruption.loss_mask.sum())  # Python ints: the trainer needs no sync
        batch["num_frames"] = int(batch["lengths"].sum())
        return batch


def make_batch_source(dataset, batch_sampler_for_epoch: Callable[[int], Iterable[Sequence[int]]],
                      collate: Callable, seed: int, mask_id: int, num_workers: int = 0,
                      wrap: Callable | None = None, pin_memory: bool = False, level_weights=None):
    """``batches(epoch, skip)``: this rank's batches of ``epoch`` from the ``skip``-th on.

    ``batch_sampler_for_epoch(epoch)`` returns this rank's batches of dataset indices for that epoch
    (deterministic). ``wrap`` is the backend's ``wrap_dataloader`` (device loaders on XLA).
    ``pin_memory`` (the backend's; True on CUDA) pins each batch's tensors in page-locked host
    memory, so the trainer's ``non_blocking`` host→device copies really overlap with compute.
    ``level_weights`` (``trainer.level_weights``; None: uniform, the paper) see :func:`~soundstorm.masking.corrupt`.
    """
    if num_workers < 0:
        raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")

    def batches(epoch: int, skip: int):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        index_batches = [list(b) for b in batch_sampler_for_epoch(epoch)][skip:]
        loader = DataLoader(IndexedDataset(dataset), batch_sampler=index_batches, num_workers=num_workers,
                            collate_fn=CorruptingCollate(collate, seed, epoch, mask_id, level_weights),
                            persistent_workers=False, pin_memory=pin_memory)
        return wrap(loader) if wrap is not None else loader

    return batches
