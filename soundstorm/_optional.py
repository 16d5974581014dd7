"""Optional dependencies: import one, or fail with a message naming the extra that installs it.

Why they are optional: each one ties torch to a version range, so a hard dependency would make
``pip install soundstorm`` replace the torch a researcher already has.

- torchaudio: every release up to 2.10 requires exactly its own torch version, 2.11.1 (the last)
  requires ``torch>=2.11``. Extra ``hubert`` (HuBERT needs its model and pipeline); when it imports
  and works it is also the DSP backend (:mod:`soundstorm.dsp`, which runs without it).
- encodec: requires torchaudio. Extra ``encodec``.
- torch_xla: X.Y runs only with torch X.Y, and its newest is 2.9. Extra ``xla``.

Install the release that matches your torch first (or in the same command as torch), so pip
does not change torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# what each optional module is installed by: (pip package, soundstorm extra)
EXTRAS = {"encodec": ("encodec", "encodec"), "torchaudio": ("torchaudio", "hubert"), "torch_xla": ("torch_xla", "xla")}


def require(module: str, purpose: str) -> ModuleType:
    """``import module``, or an ImportError that says what needs it and which extra installs it."""
    package, extra = EXTRAS[module]
    try:
        return importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - a torchaudio built for another torch raises OSError/RuntimeError too
        raise ImportError(
            f"{purpose} needs the {package!r} package, which {_why(err)}. Install it with "
            f"pip install 'soundstorm[{extra}]' (or pip install {package}); choose the {package} release that "
            "matches your torch, or pip will replace torch to satisfy it") from err


def _why(err: Exception) -> str:
    if isinstance(err, ModuleNotFoundError):
        return "is not installed"
    return f"failed to import ({type(err).__name__}: {err})"
