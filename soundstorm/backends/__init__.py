"""Where tensors run: CPU, CUDA or TPU (torch_xla), behind one small interface.

``get_backend(name)`` returns a :class:`~soundstorm.backends.base.Backend`; the training loop,
evaluation and the benchmark only talk to that object, so adding a device never touches them.
``auto`` picks torch_xla when it is installed *and* a PJRT device is configured (``PJRT_DEVICE``),
else CUDA when available, else the CPU. torch_xla is imported only inside the xla backend.
"""

from __future__ import annotations

import importlib.util
import os

from soundstorm.backends.base import Backend, DistInfo

NAMES = ("auto", "cpu", "cuda", "xla")


def xla_configured() -> bool:
    """True when torch_xla is importable and ``PJRT_DEVICE`` names a device (TPU, CPU, CUDA)."""
    return bool(os.environ.get("PJRT_DEVICE")) and importlib.util.find_spec("torch_xla") is not None


def resolve_name(name: str) -> str:
    """Map ``auto`` to a concrete backend name; validate the others."""
    if name not in NAMES:
        raise ValueError(f"backend must be one of {NAMES}, got {name!r}")
    if name != "auto":
        return name
    import torch

    if xla_configured():
        return "xla"
    return "cuda" if torch.cuda.is_available() else "cpu"


def get_backend(name: str = "auto", **options) -> Backend:
    """Instantiate a backend by name (``auto``, ``cpu``, ``cuda``, ``xla``)."""
    resolved = resolve_name(name)
    if resolved == "cpu":
        from soundstorm.backends.cpu import CPUBackend

        return CPUBackend(**options)
    if resolved == "cuda":
        from soundstorm.backends.cuda import CUDABackend

        return CUDABackend(**options)
    from soundstorm.backends.xla import XLABackend

    return XLABackend(**options)


__all__ = ["Backend", "DistInfo", "get_backend", "resolve_name", "xla_configured", "NAMES"]
