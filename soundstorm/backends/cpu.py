"""The CPU backend: fp32, gloo for multi-process jobs, peak memory from the process's max RSS."""

from __future__ import annotations

import resource
import sys

import torch

from soundstorm.backends.base import Backend


class CPUBackend(Backend):
    name = "cpu"
    dist_backend = "gloo"
    autocast_dtype = None

    def __init__(self, num_threads: int | None = None):
        super().__init__()
        if num_threads is not None:
            if num_threads < 1:
                raise ValueError(f"num_threads must be >= 1, got {num_threads}")
            torch.set_num_threads(num_threads)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def peak_memory_bytes(self) -> int | None:
        """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)
