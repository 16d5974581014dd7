"""Length-bucketed batches for distributed training, and a deterministic held-out split.

:class:`LengthBucketSampler` is a batch sampler: each epoch it shuffles the items with
``(seed, epoch)``, sorts groups of ``batch_size × bucket_batches`` items by window length, cuts
them into batches (similar lengths → little padding), shuffles the batch order, and deals batches
round-robin to ``num_replicas`` ranks, every rank getting the same number of batches.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from torch.utils.data import Sampler


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of indices of similar length; pass ``dataset`` (uses its epoch's window lengths) or ``lengths``."""

    def __init__(self, dataset=None, batch_size: int = 8, *, lengths: list[int] | None = None, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, shuffle: bool = True, drop_last: bool = False,
                 bucket_batches: int = 50):
        if (dataset is None) == (lengths is None):
            raise ValueError("LengthBucketSampler needs exactly one of dataset= or lengths=")
        if batch_size < 1 or bucket_batches < 1:
            raise ValueError(f"batch_size={batch_size} and bucket_batches={bucket_batches} must be >= 1")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas})")
        self.dataset, self.lengths = dataset, lengths
        self.batch_size, self.seed, self.shuffle, self.drop_last = batch_size, seed, shuffle, drop_last
        self.num_replicas, self.rank, self.bucket_batches, self.epoch = num_replicas, rank, bucket_batches, 0

    def set_epoch(self, epoch: int) -> None:
        """Sets this sampler's epoch and the dataset's (so window lengths match the batches)."""
        self.epoch = int(epoch)
        if self.dataset is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def _lengths(self) -> list[int]:
        if self.dataset is None:
            return list(self.lengths)
        if hasattr(self.dataset, "window_lengths"):
            return self.dataset.window_lengths(self.epoch)
        return [1] * len(self.dataset)

    def _all_batches(self) -> list[list[int]]:
        lengths = np.asarray(self._lengths())
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(lengths)) if self.shuffle else np.arange(len(lengths))
        group = self.batch_size * self.bucket_batches
        batches = []
        for lo in range(0, len(order), group):
            chunk = order[lo: lo + group]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i: i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __len__(self) -> int:
        num = len(self._all_batches())
        return num // self.num_replicas if self.drop_last else math.ceil(num / self.num_replicas)

    def __iter__(self):
        batches = self._all_batches()
        per_rank = len(batches) // self.num_replicas if self.drop_last else math.ceil(len(batches) / self.num_replicas)
        total = per_rank * self.num_replicas
        if batches and total > len(batches):  # pad by repeating the first batches, like DistributedSampler
            batches = batches + batches[: total - len(batches)]
        yield from batches[self.rank: total: self.num_replicas]


def split_heldout(utt_ids: list[str], heldout_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train_ids, heldout_ids)``: the ``round(fraction × n)`` ids (at least 1 when fraction > 0) with
    the smallest ``sha1(seed:utt_id)`` are held out. Stable across runs and machines; order kept."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction={heldout_fraction} must be in [0, 1)")
    if len(set(utt_ids)) != len(utt_ids):
        raise ValueError("utt_ids must be unique")
    num_heldout = 0 if heldout_fraction == 0 else max(1, round(heldout_fraction * len(utt_ids)))
    if utt_ids and num_heldout >= len(utt_ids):
        raise ValueError(f"heldout_fraction={heldout_fraction} leaves no training utterances out of {len(utt_ids)}")
    ranked = sorted(utt_ids, key=lambda u: hashlib.sha1(f"{seed}:{u}".encode()).hexdigest())
    heldout = set(ranked[:num_heldout])
    return [u for u in utt_ids if u not in heldout], [u for u in utt_ids if u in heldout]
