"""Token shards on disk: one file of per-utterance tensors (safetensors or npz), written atomically.

A shard holds ``codes.{j}`` (``[Q, T]``) and ``semantic.{j}`` (``[S]``) for its j-th stored
utterance, as int16 when ids fit, else int32; reading returns ``torch.long``. Files are written to a
temporary name, fsynced and renamed, so a shard is either complete or absent.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from soundstorm.io import atomic_file, load_state_dict, save_state_dict

SUFFIX = {"safetensors": ".safetensors", "npz": ".npz"}


def shard_path(root, name: str, shard_format: str) -> Path:
    if shard_format not in SUFFIX:
        raise ValueError(f"shard_format={shard_format!r}, expected one of {sorted(SUFFIX)}")
    return Path(root) / f"{name}{SUFFIX[shard_format]}"


def _compact(ids: torch.Tensor) -> torch.Tensor:
    small = ids.numel() == 0 or int(ids.max()) < 2**15
    return ids.to(torch.int16 if small else torch.int32).contiguous()


def write_shard(path: Path, codes: list[torch.Tensor], semantic: list[torch.Tensor]) -> None:
    """Atomically write per-utterance ``codes [Q, T]`` and ``semantic [S]`` lists."""
    tensors = {}
    for j, (codes_QT, semantic_S) in enumerate(zip(codes, semantic, strict=True)):
        tensors[f"codes.{j}"] = _compact(codes_QT)
        tensors[f"semantic.{j}"] = _compact(semantic_S)
    path = Path(path)
    if path.suffix == ".safetensors":
        save_state_dict(tensors, path, metadata={"format": "soundstorm-tokens/v1"})
        return
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: v.numpy() for k, v in tensors.items()})


def read_shard(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a shard as ``torch.long`` (npz is read with ``allow_pickle=False``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token shard not found: {path}")
    if path.suffix == ".safetensors":
        tensors = load_state_dict(path)
    else:
        with np.load(path, allow_pickle=False) as data:
            tensors = {k: torch.from_numpy(data[k]) for k in data.files}
    return {k: v.long() for k, v in tensors.items()}
