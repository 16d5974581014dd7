"""Reading one utterance's tensors from a token shard, and nothing else.

A training item needs the codes and semantic ids of one utterance; a shard holds hundreds or
thousands. Loading the whole shard per item (or per cache miss) reads hundreds of MB per item
when access is random over a large corpus. Here an item reads exactly its own bytes:

* safetensors shards are read with ``os.pread`` at the tensor's byte range. The range comes from
  the manifest (``soundstorm-prepare`` records each utterance's ``tensors``: absolute
  ``[begin, end, dtype]`` per tensor, see :func:`tensor_ranges`), so no shard header is read at all;
  folders prepared before that fall back to parsing the shard's header once (small LRU cache).
  File descriptors are kept in a small LRU and opened with ``POSIX_FADV_RANDOM`` (no readahead
  beyond the requested range);
* npz shards (zip archives) cannot be read partially in a useful way: they are loaded whole, a few
  cached (the small-corpus format; use safetensors at scale), and only when stored uncompressed, as
  ``soundstorm-prepare`` writes them (:func:`soundstorm.data.shards.read_shard`), so no archive can
  decompress into more memory than its size on disk.

A byte range, a header and an array's shape are data from whoever shared the folder: each is checked
against the shard's size before anything is read or allocated, so a manifest or a header that claims
more than the file holds is refused (``ValueError``) instead of allocating it.

The on-disk format stays plain safetensors (readable with ``safetensors.safe_open``); the header
layout (8-byte little-endian length, JSON of ``dtype``, ``shape``, ``data_offsets`` relative to the
end of the header) is the library's documented format.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from soundstorm.data.shards import read_shard
from soundstorm.io import read_safetensors_header

DTYPES = {"I8": np.int8, "U8": np.uint8, "I16": np.int16, "I32": np.int32, "I64": np.int64}


def tensor_ranges(path) -> dict[str, tuple[int, int, str, list[int]]]:
    """``{name: (begin, end, dtype, shape)}`` with absolute byte offsets, from a safetensors header (checked
    against the file, :func:`soundstorm.io.read_safetensors_header`)."""
    return {name: (begin, end, dtype, shape) for name, (dtype, shape, begin, end) in read_safetensors_header(path).items()}


class ShardReader:
    """Reads single tensors of shards by byte range; see the module docstring."""

    def __init__(self, max_open_files: int = 64, max_headers: int = 16, max_npz: int = 4):
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._headers: OrderedDict[str, dict] = OrderedDict()
        self._npz: OrderedDict[str, dict] = OrderedDict()
        self._limits = {"fds": max_open_files, "headers": max_headers, "npz": max_npz}

    def _fd(self, path: str) -> int:
        if path not in self._fds:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"token shard not found: {path}")
            fd = os.open(path, os.O_RDONLY)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            self._fds[path] = fd
            while len(self._fds) > self._limits["fds"]:
                os.close(self._fds.popitem(last=False)[1])
        self._fds.move_to_end(path)
        return self._fds[path]

    def read_range(self, path, begin: int, end: int, dtype: str, shape) -> torch.Tensor:
        """The tensor stored at bytes ``[begin, end)`` of ``path`` as ``torch.long``."""
        if dtype not in DTYPES:
            raise ValueError(f"{path}: tensor dtype {dtype!r} is not an id type, expected one of {sorted(DTYPES)}")
        fd = self._fd(str(path))
        expected, size = math.prod(shape) * np.dtype(DTYPES[dtype]).itemsize, os.fstat(fd).st_size
        if begin < 0 or end - begin != expected or end > size:
            raise ValueError(f"{path}: the byte range [{begin}, {end}) of a {dtype} tensor of shape {list(shape)} does "
                             f"not fit: expected {expected} bytes inside the {size}-byte shard (a manifest that does "
                             "not describe this shard?)")
        data = os.pread(fd, end - begin, begin)
        if len(data) != end - begin:
            raise ValueError(f"{path}: read {len(data)} bytes at {begin}, expected {end - begin} (truncated shard?)")
        return torch.from_numpy(np.frombuffer(data, dtype=np.dtype(DTYPES[dtype]).newbyteorder("<")).astype(np.int64)
                                .reshape(shape))

    def read(self, path, name: str, shape=None, where: list | None = None) -> torch.Tensor:
        """Tensor ``name`` of shard ``path``; ``where = [begin, end, dtype]`` (from the manifest) skips
        the header. ``shape`` is required with ``where``."""
        path = str(path)
        if path.endswith(".npz"):
            return self._npz_tensors(path)[name]
        if where is None:
            begin, end, dtype, shape = self._header(path)[name]
        else:
            begin, end, dtype = where
        return self.read_range(path, begin, end, dtype, shape)

    def _header(self, path: str) -> dict:
        if path not in self._headers:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"token shard not found: {path}")
            self._headers[path] = tensor_ranges(path)
            while len(self._headers) > self._limits["headers"]:
                self._headers.popitem(last=False)
        self._headers.move_to_end(path)
        return self._headers[path]

    def _npz_tensors(self, path: str) -> dict:
        if path not in self._npz:
            self._npz[path] = read_shard(Path(path))
            while len(self._npz) > self._limits["npz"]:
                self._npz.popitem(last=False)
        self._npz.move_to_end(path)
        return self._npz[path]

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])

    def __getstate__(self):  # DataLoader workers get a fresh reader (file descriptors are per process)
        return {"_limits": self._limits}

    def __setstate__(self, state):
        self.__init__(state["_limits"]["fds"], state["_limits"]["headers"], state["_limits"]["npz"])

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
