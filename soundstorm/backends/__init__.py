"""Where tensors run: CPU, CUDA or TPU (torch_xla), behind one small interface.

``get_backend(name, **options)`` returns a :class:`~soundstorm.backends.base.Backend`; the training
loop, evaluation and the benchmark only talk to that object, so adding a device never touches them.
``auto`` picks torch_xla when it is installed *and* a PJRT device is configured (``PJRT_DEVICE``),
else CUDA when available, else the CPU. torch_xla is imported only inside the xla backend.

Options are checked against :data:`OPTIONS`, one line per (backend, option): an option that
belongs to *another* backend (an experiment written for the CPU, run with ``backend=xla``) is
dropped with a note on stderr, so ``backend=`` can be switched from any experiment; an option no
backend takes is a ``ValueError`` naming it. Values are checked by each backend's constructor.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from soundstorm.backends.base import Backend, DistInfo

NAMES = ("auto", "cpu", "cuda", "xla")

# backend -> {option: what it sets}. Adding an option to a backend = one line here + its constructor argument.
OPTIONS: dict[str, dict[str, str]] = {
    "cpu": {
        "num_threads": "torch intra-op threads (null: torch's default)",
        "dtype": "float32, or int8 for inference (int8 linear layers)",
    },
    "cuda": {
        "dtype": "autocast dtype: bfloat16, float16 or float32",
    },
    "xla": {
        "dtype": "autocast dtype: bfloat16 or float32",
        "spmd": "one process, the batch sharded over every device",
    },
}


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


def backend_options(resolved: str, options: dict) -> dict:
    """The options of ``options`` that backend ``resolved`` takes (see the module docstring)."""
    taken = OPTIONS[resolved]
    unknown = sorted(k for k in options if not any(k in table for table in OPTIONS.values()))
    if unknown:
        described = "; ".join(f"{name}: {', '.join(sorted(table))}" for name, table in OPTIONS.items())
        raise ValueError(f"backend.options.{unknown[0]} is not an option of any backend (backend {resolved!r} takes "
                         f"{sorted(taken)}; all options: {described})")
    dropped = sorted(k for k in options if k not in taken and options[k] is not None)  # null: nothing to drop
    if dropped:
        owners = {k: [name for name, table in OPTIONS.items() if k in table] for k in dropped}
        print("note: " + "; ".join(f"backend.options.{k}={options[k]!r} applies to backend {'/'.join(owners[k])} "
                                   f"only, dropped for backend {resolved!r}" for k in dropped), file=sys.stderr)
    return {k: v for k, v in options.items() if k in taken}


def get_backend(name: str = "auto", **options) -> Backend:
    """Instantiate a backend by name (``auto``, ``cpu``, ``cuda``, ``xla``) with its options."""
    resolved = resolve_name(name)
    options = backend_options(resolved, options)
    if resolved == "cpu":
        from soundstorm.backends.cpu import CPUBackend

        return CPUBackend(**options)
    if resolved == "cuda":
        from soundstorm.backends.cuda import CUDABackend

        return CUDABackend(**options)
    from soundstorm._optional import require

    require("torch_xla", "backend=xla")
    from soundstorm.backends.xla import XLABackend

    return XLABackend(**options)


__all__ = ["Backend", "DistInfo", "OPTIONS", "backend_options", "get_backend", "resolve_name", "xla_configured",
           "NAMES"]
