"""Token shards on disk: one file of per-utterance tensors (safetensors or npz), written atomically.

A shard holds ``codes.{j}`` (``[Q, T]``) and ``semantic.{j}`` (``[S]``) for its j-th stored
utterance, as int16 when ids fit, else int32; reading returns ``torch.long``. Files are written to a
temporary name, fsynced and renamed, so a shard is either complete or absent.

npz shards are read only when their arrays are stored uncompressed (``np.savez``, as written here):
a compressed member could expand a small file into gigabytes (a zip bomb), and each array's header is
checked against the bytes it holds before anything is allocated.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import io
import math
import zipfile
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
        tensors = {k: torch.from_numpy(v) for k, v in read_npz(path).items()}
    return {k: v.long() for k, v in tensors.items()}


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The integer arrays of an uncompressed npz archive, each checked before it is allocated: stored (not
    deflated), its header's shape × itemsize equal to the bytes it holds, an integer dtype, no pickles."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                where = f"{path}: member {info.filename!r}"
                if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                    raise ValueError(f"{where} is compressed; soundstorm reads npz shards only uncompressed "
                                     "(np.savez, as soundstorm-prepare writes them), so that no archive can expand "
                                     "beyond its size on disk")
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"{where} is not a .npy array")
                with archive.open(info) as member:
                    data = member.read(info.file_size + 1)
                arrays[info.filename[:-4]] = _npy_array(data, where)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path} is not a readable npz archive ({err})") from err
    return arrays


def _npy_array(data: bytes, where: str) -> np.ndarray:
    buffer = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buffer)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = read_header[version](buffer, max_header_size=10_000)
    except (ValueError, TypeError, SyntaxError) as err:
        raise ValueError(f"{where} has no valid .npy header ({err})") from err
    body = data[buffer.tell():]
    if dtype.kind not in "iu" or fortran or len(body) != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"{where}: header says {dtype} {shape}{' (Fortran order)' if fortran else ''}, holding "
                         f"{len(body)} bytes; expected a C-ordered integer array of exactly that size")
    return np.frombuffer(body, dtype=dtype).reshape(shape).copy()
