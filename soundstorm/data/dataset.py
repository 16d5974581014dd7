"""TokenDataset: random windows of prepared token shards, and ``collate`` into padded batches.

Each item is a window of one utterance whose length (uniform in [min_seconds, max_seconds]) and
start are a pure function of ``(seed, epoch, index)``, so any sampler (including a distributed
one) and any resume point give the same data. Windows start on a semantic-frame boundary, so
``T_i == S_i * semantic_upsample``. ``collate`` pads T up to the smallest of ``frame_buckets`` that
fits, or a multiple of ``frames_multiple``, to keep the number of distinct shapes small (static
shapes for XLA; see :mod:`soundstorm.data.buckets`); :meth:`TokenDataset.frame_shapes` lists them.

An item reads only its own tensors (:class:`~soundstorm.data.reader.ShardReader`: a byte-range
read per tensor, at the offsets the manifest records), never a whole shard, so random access over
a LibriLight-size corpus reads about the item's size per item. A shard is opened only if it lies in
the token folder (a link that leads elsewhere is refused, :func:`soundstorm.paths.inside`), and source
audio only through :meth:`TokenDataset.audio_path` (:meth:`TokenManifest.audio_path`'s rule).

With ``cross_prompt_fraction > 0`` a share of the items is *spliced*: the first ``cross_prompt_seconds``
(2-4 s by default) of another
utterance of the same speaker, then the start of the item's own utterance, in a window of the same length
(so bucketing and shapes do not change). Training windows otherwise always continue their own recording,
while the speech table (and the paper's prompted generation) continues a prompt cut from *another*
recording; the splice shows the model that junction. It is data only: §3.2's masking (a prompt delimiter
anywhere in the window) is applied to the spliced window as to any other.

The epoch lives on the dataset (``set_epoch``); with ``DataLoader(persistent_workers=True)`` the
workers keep their own copy, so use non-persistent workers (the default) to see new epochs.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from soundstorm.data.buckets import check_frame_buckets, padded_length, possible_frame_shapes, window_frame_range
from soundstorm.data.manifest import TokenManifest
from soundstorm.data.reader import ShardReader
from soundstorm.data.shards import shard_path
from soundstorm.paths import inside


class TokenDataset(Dataset):
    """Map-style dataset over ``root/manifest.json`` + shards; ``len`` = number of utterances."""

    def __init__(self, root, min_seconds: float = 0.0, max_seconds: float = 30.0, seed: int = 0,
                 frames_multiple: int | None = None, utt_ids: list[str] | None = None, model_config=None,
                 cache_shards: int = 4, frame_buckets: list[int] | None = None, audio_root=None,
                 manifest: TokenManifest | None = None, cross_prompt_fraction: float = 0.0,
                 cross_prompt_seconds: tuple[float, float] = (2.0, 4.0)):
        self.root = Path(root)
        self.audio_root = audio_root  # data.audio_root: where source audio may be read (None: the manifest's rule)
        # manifest: the folder's manifest when the caller has read it already (a large one takes seconds)
        self.manifest = TokenManifest.load(self.root) if manifest is None else manifest
        if model_config is not None:
            self.manifest.check_compatible(model_config)
        if not 0.0 <= min_seconds <= max_seconds or max_seconds <= 0:
            raise ValueError(f"need 0 <= min_seconds <= max_seconds and max_seconds > 0, got min_seconds={min_seconds}, "
                             f"max_seconds={max_seconds}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.upsample = self.manifest.semantic_upsample
        self.frames_multiple = self.upsample if frames_multiple is None else frames_multiple
        check_frames_multiple(self.frames_multiple, self.upsample)
        self.frame_buckets = None if frame_buckets is None else check_frame_buckets(frame_buckets, self.upsample)
        self.min_seconds, self.max_seconds, self.seed, self.epoch = float(min_seconds), float(max_seconds), int(seed), 0
        by_id = {u["utt_id"]: u for u in self.manifest.utterances}
        if utt_ids is None:
            self.utterances = list(self.manifest.utterances)
        else:
            unknown = [u for u in utt_ids if u not in by_id]
            if unknown:
                raise ValueError(f"utt_ids not in {self.root / 'manifest.json'}: {unknown[:5]}")
            self.utterances = [by_id[u] for u in utt_ids]
        self.cross_prompt_fraction, self.cross_prompt_seconds = check_cross_prompt(cross_prompt_fraction,
                                                                                   cross_prompt_seconds)
        # speaker → indices of this dataset's utterances (the candidates for a spliced prefix), and each
        # utterance's place in its speaker's list (so a draw skips the item itself without a scan)
        self._by_speaker: dict[str, list[int]] = {}
        self._speaker_slot: dict[int, int] = {}
        for i, u in enumerate(self.utterances):
            if u.get("speaker"):
                group = self._by_speaker.setdefault(str(u["speaker"]), [])
                self._speaker_slot[i] = len(group)
                group.append(i)
        self._reader = ShardReader(max_npz=cache_shards)
        self._shard_paths: dict[str, Path] = {}

    def __len__(self) -> int:
        return len(self.utterances)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def window(self, index: int, epoch: int | None = None) -> tuple[int, int]:
        """``(start, length)`` in semantic frames of item ``index`` at ``epoch`` (default: current)."""
        num_semantic = self.utterances[index]["num_semantic_frames"]
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])
        seconds = rng.uniform(self.min_seconds, self.max_seconds)
        length = int(min(num_semantic, max(1, round(seconds * self.manifest.semantic_frame_rate))))
        start = int(rng.integers(0, num_semantic - length + 1))
        return start, length

    def splice(self, index: int, epoch: int | None = None) -> tuple[int, int] | None:
        """``(other index, prefix length in semantic frames)`` when item ``index`` at ``epoch`` is spliced
        (see the module docstring), else None. A pure function of ``(seed, epoch, index)``, like :meth:`window`;
        an item is never spliced when its speaker has no other utterance here or its window cannot hold the
        prefix plus 1 s of its own utterance."""
        if self.cross_prompt_fraction == 0.0:
            return None
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index, 1])
        if rng.uniform() >= self.cross_prompt_fraction:
            return None
        if index not in self._speaker_slot:
            return None
        group = self._by_speaker[str(self.utterances[index]["speaker"])]
        if len(group) < 2:
            return None
        slot = int(rng.integers(len(group) - 1))  # any other utterance of the speaker, uniformly
        other = group[slot + (slot >= self._speaker_slot[index])]
        rate = self.manifest.semantic_frame_rate
        prefix = int(round(rng.uniform(*self.cross_prompt_seconds) * rate))
        prefix = min(prefix, self.utterances[other]["num_semantic_frames"])
        _, length = self.window(index, epoch)
        if prefix < 1 or length - prefix < round(rate):
            return None
        return other, prefix

    def window_lengths(self, epoch: int | None = None) -> list[int]:
        """Codec frames ``T_i`` of every item's window (what a length-bucketing sampler needs)."""
        return [self.window(i, epoch)[1] * self.upsample for i in range(len(self))]

    def frame_range(self) -> tuple[int, int, int]:
        """``(shortest window any item can have, shortest full-length window, longest window)``, codec frames."""
        return window_frame_range([u["num_semantic_frames"] for u in self.utterances], self.min_seconds,
                                  self.max_seconds, self.manifest.semantic_frame_rate, self.upsample)

    def frame_shapes(self) -> list[int]:
        """Every padded frame count ``T`` a batch of this dataset can have (see :meth:`collate`)."""
        shortest, _, longest = self.frame_range()
        return possible_frame_shapes(shortest, longest, self.frames_multiple, self.frame_buckets)

    def _shard(self, name: str) -> Path:
        """The shard file ``name`` (a plain name, checked by the manifest) if it lies in the token folder."""
        if name not in self._shard_paths:
            path = shard_path(self.root, name, self.manifest.shard_format)
            # absolute: inside() reads a relative path as relative to the root, and self.root may be relative
            inside(self.root, os.path.abspath(path), f"{self.root / 'manifest.json'}: shard {name!r}",
                   "the token folder")
            self._shard_paths[name] = path
        return self._shard_paths[name]

    def audio_path(self, utt: dict) -> Path:
        """The source audio of ``utt`` (one of this dataset's utterance records or items), checked."""
        return self.manifest.audio_path(utt, self.audio_root)

    def _tensors(self, utt: dict) -> tuple[torch.Tensor, torch.Tensor]:
        path = self._shard(utt["shard"])
        j, ranges = utt["index"], utt.get("tensors", {})
        codes_QT = self._reader.read(path, f"codes.{j}", (self.manifest.num_levels, utt["num_frames"]),
                                     ranges.get("codes"))
        semantic_S = self._reader.read(path, f"semantic.{j}", (utt["num_semantic_frames"],), ranges.get("semantic"))
        if tuple(codes_QT.shape) != (self.manifest.num_levels, utt["num_frames"]) or \
                tuple(semantic_S.shape) != (utt["num_semantic_frames"],):
            raise ValueError(f"{path}: utterance {utt['utt_id']!r} holds codes {tuple(codes_QT.shape)} and semantic "
                             f"{tuple(semantic_S.shape)}, the manifest says [{self.manifest.num_levels}, "
                             f"{utt['num_frames']}] and [{utt['num_semantic_frames']}]")
        # the data loader is where ids are checked once (the model's forward reads no values on a device)
        for name, ids, size in (("codes", codes_QT, int(self.manifest.codec["codebook_size"])),
                                ("semantic", semantic_S, int(self.manifest.semantic["vocab_size"]))):
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
                raise ValueError(f"{path}: utterance {utt['utt_id']!r} holds {name} ids in [{int(ids.min())}, "
                                 f"{int(ids.max())}], but the manifest's vocabulary has {size}; a shard that does not "
                                 "belong to this manifest?")
        return codes_QT, semantic_S

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} utterances")
        utt = self.utterances[index]
        codes_QT, semantic_S = self._tensors(utt)
        start, length = self.window(index)
        up = self.upsample
        spliced = self.splice(index)
        if spliced is None:
            return {"codes": codes_QT[:, start * up: (start + length) * up].clone(),
                    "semantic": semantic_S[start: start + length].clone(), "utt_id": utt["utt_id"]}
        # the other utterance's first `prefix` frames, then this utterance from its start: the speech
        # table's prompted layout (a prompt cut from another recording, then the target sentence)
        other, prefix = spliced
        other_codes_QT, other_semantic_S = self._tensors(self.utterances[other])
        own = length - prefix
        return {"codes": torch.cat([other_codes_QT[:, : prefix * up], codes_QT[:, : own * up]], dim=1),
                "semantic": torch.cat([other_semantic_S[:prefix], semantic_S[:own]]), "utt_id": utt["utt_id"],
                "prefix_utt_id": self.utterances[other]["utt_id"]}

    def utterance(self, index: int) -> dict:
        """The full, unwindowed item plus ``text``, ``speaker``, source ``path`` and ``duration`` (for evaluation)."""
        utt = self.utterances[index]
        codes_QT, semantic_S = self._tensors(utt)
        return {"codes": codes_QT.clone(), "semantic": semantic_S.clone(), "utt_id": utt["utt_id"],
                "text": utt["text"], "speaker": utt.get("speaker", ""), "path": utt["path"],
                "duration": utt["duration"]}

    def collate(self, items: list[dict]) -> dict:
        """:func:`collate` with this dataset's ``frames_multiple`` and ``frame_buckets``."""
        return collate(items, self.frames_multiple, self.frame_buckets)


def check_cross_prompt(fraction, seconds) -> tuple[float, tuple[float, float]]:
    """``data.cross_prompt_fraction`` in [0, 1] and ``data.cross_prompt_seconds`` ``[min, max]`` with 0 < min <= max."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"data.cross_prompt_fraction must be a number in [0, 1], got {fraction!r}")
    try:
        low, high = (float(v) for v in seconds)
    except (TypeError, ValueError):
        raise ValueError(f"data.cross_prompt_seconds must be [min, max] seconds, got {seconds!r}") from None
    if not 0.0 < low <= high < float("inf"):
        raise ValueError(f"data.cross_prompt_seconds must be [min, max] with 0 < min <= max (finite), got "
                         f"{list(seconds)!r}")
    return float(fraction), (low, high)


def check_frames_multiple(frames_multiple: int, upsample: int) -> None:
    if isinstance(frames_multiple, bool) or not isinstance(frames_multiple, int) or frames_multiple < 1 \
            or frames_multiple % upsample:
        raise ValueError(f"frames_multiple={frames_multiple!r} must be a positive multiple of the semantic upsample "
                         f"{upsample} (frames are padded to it and semantic frames must stay whole)")


def collate(items: list[dict], frames_multiple: int | None = None, frame_buckets: list[int] | None = None) -> dict:
    """Pad a list of items to ``codes [B, Q, T]``, ``semantic [B, S]`` (pad id 0), ``lengths [B]``.

    ``T`` is the smallest of ``frame_buckets`` holding the longest item when buckets are given, else
    the longest item rounded up to a multiple of ``frames_multiple`` (codec frames, a multiple of the
    upsample ratio ``T_i / S_i``; None → the ratio itself, i.e. no extra padding); ``lengths`` holds
    the real frames per item.
    """
    if not items:
        raise ValueError("collate needs at least one item")
    upsample = items[0]["codes"].shape[1] // max(1, items[0]["semantic"].shape[0])
    frames_multiple = upsample if frames_multiple is None else frames_multiple
    check_frames_multiple(frames_multiple, upsample)
    lengths = [item["codes"].shape[1] for item in items]
    for item, length in zip(items, lengths):
        if length != item["semantic"].shape[0] * upsample:
            raise ValueError(f"item {item.get('utt_id')!r}: {length} codec frames != {item['semantic'].shape[0]} "
                             f"semantic frames × {upsample}")
    if frame_buckets is not None:
        frame_buckets = check_frame_buckets(frame_buckets, upsample)
    num_frames = padded_length(max(lengths), frames_multiple, frame_buckets)
    num_levels = items[0]["codes"].shape[0]
    codes_BQT = torch.zeros(len(items), num_levels, num_frames, dtype=torch.long)
    semantic_BS = torch.zeros(len(items), num_frames // upsample, dtype=torch.long)
    for b, item in enumerate(items):
        codes_BQT[b, :, : lengths[b]] = item["codes"]
        semantic_BS[b, : item["semantic"].shape[0]] = item["semantic"]
    return {"codes": codes_BQT, "semantic": semantic_BS, "lengths": torch.tensor(lengths, dtype=torch.long),
            "utt_ids": [item["utt_id"] for item in items]}
