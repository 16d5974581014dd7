"""A small in-memory token dataset following the data branch's item / collate contract (tests only).

Items: ``{"codes": [Q, T_i], "semantic": [S_i], "utt_id": str}``; ``collate`` pads to the longest
item (a multiple of ``frames_multiple``) and returns ``codes [B,Q,T]``, ``semantic [B,S]``,
``lengths [B]``, ``utt_ids``. Codes are a deterministic function of the semantic ids, so a model
can learn them.
"""

from __future__ import annotations

import torch


class RandomTokens:
    def __init__(self, num_items=32, num_levels=4, codebook_size=32, semantic_vocab=16, upsample=2,
                 min_semantic=4, max_semantic=8, seed=0):
        self.num_levels, self.codebook_size, self.upsample = num_levels, codebook_size, upsample
        g = torch.Generator().manual_seed(seed)
        self.semantic = [torch.randint(0, semantic_vocab, (int(torch.randint(min_semantic, max_semantic + 1, (), generator=g)),),
                                       generator=g) for _ in range(num_items)]
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.semantic)

    def __getitem__(self, i):
        semantic_S = self.semantic[i]
        frames_T = semantic_S.repeat_interleave(self.upsample)
        levels_Q = torch.arange(self.num_levels)[:, None]
        codes_QT = (frames_T[None, :] * (levels_Q + 3) + levels_Q * 5 + torch.arange(frames_T.numel()) % 2) % self.codebook_size
        return {"codes": codes_QT, "semantic": semantic_S, "utt_id": f"utt{i:04d}"}


def collate(items, frames_multiple=1, upsample=2):
    lengths = [it["codes"].shape[1] for it in items]
    step = frames_multiple * upsample
    num_frames = -(-max(lengths) // step) * step
    q = items[0]["codes"].shape[0]
    codes = torch.zeros(len(items), q, num_frames, dtype=torch.long)
    semantic = torch.zeros(len(items), num_frames // upsample, dtype=torch.long)
    for b, it in enumerate(items):
        codes[b, :, :lengths[b]] = it["codes"]
        semantic[b, :it["semantic"].numel()] = it["semantic"]
    return {"codes": codes, "semantic": semantic, "lengths": torch.tensor(lengths), "utt_ids": [it["utt_id"] for it in items]}


def sampler_for(num_items, batch_size, seed=0, rank=0, world_size=1):
    """Per-epoch batches: a permutation from (seed, epoch), global batches of batch × world, rank r
    taking every world-th example."""
    def batches(epoch):
        order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()
        global_batch = batch_size * world_size
        for start in range(0, num_items - global_batch + 1, global_batch):
            yield order[start:start + global_batch][rank::world_size]
    return batches
