"""Bounds on sizes read from shared files, checked before any memory or time is spent on them.

A token folder, a checkpoint or a fitted codec comes with settings (an FFT size, a number of Griffin-Lim
iterations, an utterance length, a safetensors header length) that decide how much memory and time the
library spends before it can tell whether the file makes sense. Settings that the weights' shapes
cannot confirm are bounded here, far above any real use, so that a hostile or corrupt file is refused
in seconds instead of allocating terabytes or running for hours.

A user who needs more raises a bound, for a process with the environment variable
``SOUNDSTORM_LIMITS="max_n_fft=65536,max_utterance_seconds=7200"`` (read at import) or in Python with
:func:`override` (a context manager) / :func:`set_limits`. Every refusal names the bound and both ways.
This module imports nothing from soundstorm, so any module may use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass

ENV_VAR = "SOUNDSTORM_LIMITS"


@dataclass(frozen=True)
class Limits:
    """The accepted maxima (see the module docstring for why each exists and how to raise it)."""

    # safetensors: the JSON header before the tensors (a real one is a few KB to a few MB)
    max_header_bytes: int = 100_000_000
    # token folders: the longest utterance a manifest may describe (prepare cuts at 30 s by default)
    max_utterance_seconds: float = 3600.0
    # DSP settings of fitted codecs and tokenizers (filterbanks are n_fft/2+1 × n_mels; time is per iteration)
    max_sample_rate: int = 192_000
    max_n_fft: int = 16_384
    max_n_mels: int = 512
    max_griffin_lim_iters: int = 1000
    # RVQ and vocabulary sizes (a codebook or an embedding table per level)
    max_num_levels: int = 64
    max_codebook_size: int = 65_536
    # the text-to-semantic length predictor: semantic frames per text symbol (50 = 1 s at 50 frames/s,
    # about ten times the slowest speech)
    max_frames_per_symbol: int = 50


_current = Limits()


def current() -> Limits:
    """The limits in force in this process."""
    return _current


def _coerce(name: str, value) -> int | float:
    fields = {f.name: f for f in dataclasses.fields(Limits)}
    if name not in fields:
        raise ValueError(f"unknown limit {name!r}; expected one of {sorted(fields)}")
    kind = float if fields[name].type in (float, "float") else int
    try:
        number = kind(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"limit {name}={value!r} is not a number") from err
    if not number > 0:
        raise ValueError(f"limit {name}={value!r} must be > 0")
    return number


def set_limits(**values) -> Limits:
    """Replace the named limits for the rest of the process; returns the previous limits."""
    global _current
    previous = _current
    _current = dataclasses.replace(_current, **{k: _coerce(k, v) for k, v in values.items()})
    return previous


@contextlib.contextmanager
def override(**values):
    """``with override(max_n_fft=65536): ...``: the named limits raised (or lowered) inside the block."""
    global _current
    previous = set_limits(**values)
    try:
        yield _current
    finally:
        _current = previous


def parse_env(text: str) -> dict:
    """``"a=1,b=2"`` (the format of :data:`ENV_VAR`) → ``{"a": "1", "b": "2"}``."""
    values = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"{ENV_VAR}={text!r}: expected comma-separated name=value pairs, got {part!r}")
        values[name.strip()] = value.strip()
    return values


def how_to_raise(name: str) -> str:
    return f"raise it with {ENV_VAR}={name}=VALUE (or soundstorm.limits.override({name}=VALUE)) if this is intended"


def check_at_most(value, name: str, where: str) -> None:
    """Refuse ``value`` above the limit ``name``; ``where`` names the file and field it came from."""
    limit = getattr(_current, name)
    if value > limit:
        raise ValueError(f"{where}={value!r} is above the accepted maximum {limit} (limit {name}); {how_to_raise(name)}")


if os.environ.get(ENV_VAR):
    set_limits(**parse_env(os.environ[ENV_VAR]))
