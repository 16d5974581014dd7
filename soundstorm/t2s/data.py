"""Training data of the text-to-semantic stage, read from a token folder written by soundstorm-prepare.

Each item is one whole utterance: its transcript as symbol ids (:mod:`soundstorm.t2s.text`), its
semantic tokens, and, with probability ``prompt_probability``, a voice prompt: a crop of at most
``max_prompt_frames`` semantic tokens from *another* utterance of the same speaker (the record's
``speaker``, else ``voice``). A prompt from another utterance carries the voice and pace but not the
content, as at inference, where the prompt is a different recording. Utterances without a speaker,
or whose speaker has no other utterance, get no prompt. Every random choice, and the masking of the
targets, is a pure function of ``(seed, epoch, index)``, so resumes reproduce the data exactly.

``aligned=True`` (the default, for an aligned model, ``T2SConfig.aligned``): each text is framed by a
space at both ends (where the leading and trailing silence align) and each item carries its symbols'
durations in frames, found once per dataset by :func:`soundstorm.t2s.align.fit_durations` (a few
seconds for 1000 utterances); a held-out set reuses the training set's emission table
(``emission=``) instead of fitting its own.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from soundstorm.data import TokenDataset
from soundstorm.t2s.align import align_durations, fit_durations, with_boundaries
from soundstorm.t2s.batch import mask_targets, pack
from soundstorm.t2s.text import VOCAB_SIZE, encode
from soundstorm.train.data import IndexedDataset


def speaker_of(utterance: dict) -> str | None:
    """The utterance record's speaker id (``speaker``, else the synthesis ``voice``), or None."""
    value = utterance.get("speaker", utterance.get("voice"))
    return None if value in (None, "") else str(value)


class T2SDataset(Dataset):
    """Map-style dataset of ``{text_ids, semantic, prompt, index}`` over a token folder."""

    def __init__(self, root, utt_ids: list[str] | None = None, frontend: str = "phonemes", seed: int = 0,
                 prompt_probability: float = 0.8, max_prompt_frames: int = 75, max_seconds: float | None = None,
                 semantic_vocab_size: int | None = None, aligned: bool = True, emission=None, manifest=None):
        if not 0.0 <= prompt_probability <= 1.0:
            raise ValueError(f"prompt_probability must be in [0, 1], got {prompt_probability!r}")
        self.tokens = TokenDataset(root, utt_ids=utt_ids, manifest=manifest)
        self.manifest = self.tokens.manifest
        vocab = int(self.manifest.semantic["vocab_size"])
        if semantic_vocab_size is not None and semantic_vocab_size != vocab:
            raise ValueError(f"token manifest and text-to-semantic model disagree on semantic_vocab_size: manifest "
                             f"has {vocab} ({self.manifest.semantic['name']}), model config has {semantic_vocab_size}")
        keep = []
        for i, utt in enumerate(self.tokens.utterances):
            if not str(utt.get("text", "")).strip():
                raise ValueError(f"utterance {utt['utt_id']!r} in {root} has no text; the text-to-semantic stage "
                                 f"needs transcripts (a JSONL manifest with 'text' given to soundstorm-prepare)")
            if max_seconds is None or utt["duration"] <= max_seconds:
                keep.append(i)
        if not keep:
            raise ValueError(f"no utterance of {root} is at most max_seconds={max_seconds} long")
        self.indices = keep
        self.records = [self.tokens.utterances[i] for i in keep]
        self.text_ids = [encode(utt["text"], frontend) for utt in self.records]
        self.aligned, self.durations, self.emission = bool(aligned), None, None
        if self.aligned:
            self.text_ids = [with_boundaries(ids) for ids in self.text_ids]
            semantic = [self.semantic(j).numpy() for j in range(len(self.records))]
            if emission is None:
                self.durations, self.emission = fit_durations(self.text_ids, semantic, VOCAB_SIZE, vocab)
            else:
                self.emission = emission
                self.durations = align_durations(self.text_ids, semantic, emission)
        by_speaker = defaultdict(list)
        for j, utt in enumerate(self.records):
            if speaker_of(utt) is not None:
                by_speaker[speaker_of(utt)].append(j)
        self.same_speaker = [[k for k in by_speaker.get(speaker_of(u), []) if k != j]
                             for j, u in enumerate(self.records)]
        self.seed, self.epoch = int(seed), 0
        self.prompt_probability, self.max_prompt_frames = float(prompt_probability), int(max_prompt_frames)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def prompt_choice(self, index: int, epoch: int | None = None) -> tuple[int, int, int] | None:
        """``(item, start, length)`` of item ``index``'s prompt at ``epoch``, or None (no prompt)."""
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index, 7])
        others = self.same_speaker[index]
        if not others or rng.random() >= self.prompt_probability:
            return None
        other = others[int(rng.integers(len(others)))]
        num_frames = self.records[other]["num_semantic_frames"]
        length = min(num_frames, self.max_prompt_frames)
        return other, int(rng.integers(0, num_frames - length + 1)), length

    def window_lengths(self, epoch: int | None = None) -> list[int]:
        """Packed sequence length per item (for length-bucketed batches)."""
        out = []
        for j, utt in enumerate(self.records):
            prompt = self.prompt_choice(j, epoch)
            out.append(len(self.text_ids[j]) + utt["num_semantic_frames"] + (prompt[2] if prompt else 0))
        return out

    def semantic(self, index: int) -> torch.Tensor:
        return self.tokens.utterance(self.indices[index])["semantic"]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} utterances")
        choice = self.prompt_choice(index)
        prompt = None if choice is None else self.semantic(choice[0])[choice[1]: choice[1] + choice[2]]
        return {"text_ids": self.text_ids[index], "semantic": self.semantic(index), "prompt": prompt,
                "durations": None if self.durations is None else self.durations[index],
                "index": index, "utt_id": self.records[index]["utt_id"]}


class T2SCollate:
    """Pack items and mask their targets keyed by ``(seed, epoch, index)`` (picklable for workers)."""

    def __init__(self, seed: int, epoch: int, mask_id: int):
        self.seed, self.epoch, self.mask_id = seed, epoch, mask_id

    def __call__(self, indexed_items) -> dict:
        items = [item for _, item in indexed_items]
        batch = pack([it["text_ids"] for it in items], [it["prompt"] for it in items],
                     [it["semantic"] for it in items], self.mask_id, [it.get("durations") for it in items])
        keys = [(self.seed, self.epoch, int(i)) for i, _ in indexed_items]
        batch.update(mask_targets(batch, keys, self.mask_id))
        batch["num_loss_tokens"] = int(batch["loss_mask"].sum())
        batch["num_frames"] = int(batch["target_frames"].sum())
        batch["utt_ids"] = [it["utt_id"] for it in items]
        return batch


def make_t2s_batch_source(dataset: T2SDataset, batch_sampler_for_epoch, seed: int, mask_id: int,
                          num_workers: int = 0, wrap=None):
    """The trainer's ``batches(epoch, skip)`` for the text-to-semantic stage."""
    if num_workers < 0:
        raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")

    def batches(epoch: int, skip: int):
        dataset.set_epoch(epoch)
        index_batches = [list(b) for b in batch_sampler_for_epoch(epoch)][skip:]
        loader = DataLoader(IndexedDataset(dataset), batch_sampler=index_batches, num_workers=num_workers,
                            collate_fn=T2SCollate(seed, epoch, mask_id))
        return wrap(loader) if wrap is not None else loader

    return batches
