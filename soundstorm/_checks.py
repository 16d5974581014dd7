"""Input validation shared by the model, masking and sampler.

Every public entry point checks its tensors here, once, before any compiled or hot-path code
runs, so that a bad input fails with a ``ValueError`` that names the argument, the value seen and
what was expected (instead of an index error deep inside an embedding lookup).

Shapes and dtypes are free to check. Values are not: reading a minimum back is a device sync on
CUDA/XLA and a graph break under ``torch.compile``. :func:`values_readable` says where reading them
costs neither (CPU tensors, eager); ``SoundStorm.forward`` checks values only there, and the entry
points that feed it on an accelerator check them once up front (``generate``, ``SoundStorm.loss``,
the token data loader).

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import dataclasses

import torch
from soundstorm.io import nonfinite_tensors

_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def check_int_tensor(name: str, x: object, ndim: int, shape_hint: str) -> torch.Tensor:
    """Check that ``x`` is an integer tensor of rank ``ndim`` (``shape_hint`` like "[B, Q, T]")."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {shape_hint}, got {type(x).__name__}")
    if x.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"{name} must hold integer ids (e.g. torch.long), got dtype {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape_hint} (rank {ndim}), got shape {tuple(x.shape)}")
    return x


def is_compiling() -> bool:
    """Whether torch.compile (dynamo) is tracing the caller."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return bool(compiler.is_compiling())
    return bool(torch._dynamo.is_compiling())


def values_readable(*tensors) -> bool:
    """True where reading tensor values back costs no device sync and no graph break: every tensor is
    on the CPU and no compiler is tracing."""
    return not is_compiling() and all(t.device.type == "cpu" for t in tensors if isinstance(t, torch.Tensor))


def check_range(name: str, x: torch.Tensor, low: int, high: int) -> None:
    """Check ``low <= x < high`` elementwise. Runs once at entry (it reads values back to the host)."""
    if x.numel() == 0:
        return
    lo, hi = int(x.min()), int(x.max())
    if lo < low or hi >= high:
        raise ValueError(f"{name} holds ids in [{lo}, {hi}], expected every id in [{low}, {high - 1}]")


def check_lengths(lengths: object, batch_size: int, num_frames: int, name: str = "lengths",
                  values: bool = True) -> torch.Tensor:
    """Check per-example lengths ``[B]`` with ``1 <= length <= num_frames`` (the values only with ``values``)."""
    lengths_B = check_int_tensor(name, lengths, 1, "[B]")
    if lengths_B.shape[0] != batch_size:
        raise ValueError(f"{name} has {lengths_B.shape[0]} entries, expected one per example (batch {batch_size})")
    if values and lengths_B.numel():
        lo, hi = int(lengths_B.min()), int(lengths_B.max())
        if lo < 1 or hi > num_frames:
            raise ValueError(f"{name} must lie in [1, {num_frames}] (the padded number of frames), got [{lo}, {hi}]")
    return lengths_B


def frame_mask(lengths_B: torch.Tensor | None, batch_size: int, num_frames: int, device) -> torch.Tensor:
    """``valid_BT``: True on real frames, False on padding (all True when ``lengths_B`` is None)."""
    if lengths_B is None:
        return torch.ones(batch_size, num_frames, dtype=torch.bool, device=device)
    frames_T = torch.arange(num_frames, device=device)
    return frames_T[None, :] < lengths_B.to(device)[:, None]


def dataclass_from_dict(cls, data: dict, what: str | None = None):
    """``cls(**data)`` for a dataclass, refusing unknown keys by name (a typo is an error, not a default)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what or cls.__name__ + ' fields'} {unknown}; expected a subset of {sorted(known)}")
    return cls(**data)


def check_positive_ints(owner: str, config: object, names: tuple[str, ...]) -> None:
    """Config validation: each named field of ``config`` must be an int >= 1 (``bool`` is refused)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


def check_level(level: object, num_levels: int, batch_size: int, values: bool = True) -> None:
    """``level`` of ``forward``: a Python int or an integer tensor (scalar or ``[B]``) in ``[0, Q)`` (a
    tensor's values only with ``values``)."""
    if isinstance(level, torch.Tensor):
        if level.dtype not in _INTEGER_DTYPES or level.ndim > 1 or (level.ndim == 1 and level.shape[0] != batch_size):
            raise ValueError(f"level must be an int or an integer tensor of shape [] or [{batch_size}], got "
                             f"{level.dtype} {tuple(level.shape)}")
        if values:
            check_range("level", level, 0, num_levels)
        return
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < num_levels:
        raise ValueError(f"level must be an int in [0, {num_levels - 1}] (0-based; num_levels={num_levels}), "
                         f"got {level!r}")


def check_mask_id(mask_id: object) -> int:
    """``mask_id`` of the §3.2 corruption: a non-negative int (the model uses ``codebook_size``)."""
    if isinstance(mask_id, bool) or not isinstance(mask_id, int) or mask_id < 0:
        raise ValueError(f"mask_id must be a non-negative int (the codebook size), got {mask_id!r}")
    return mask_id


def check_finite_weights(module: torch.nn.Module, what: str) -> None:
    """Refuse a model whose weights hold NaN/inf (it would decode to all-zero codes without a word).

    The scan reads every weight back to the host, so a model that passed is remembered by its weights'
    storage and in-place version counters (an optimizer step, ``load_state_dict`` or ``.to()`` changes
    them): generating again with unchanged weights (long-form windows, a benchmark's timed runs) costs
    no scan and no device sync."""
    params = dict(module.named_parameters())
    key = tuple((p.data_ptr(), p._version) for p in params.values())
    if getattr(module, "_finite_weights_key", None) == key:
        return
    bad = nonfinite_tensors(params)
    if bad:
        raise ValueError(f"{what} has non-finite (NaN or inf) weights in {len(bad)} tensors, e.g. {bad[:3]}; "
                         "expected finite weights (a diverged run? use an earlier checkpoint)")
    object.__setattr__(module, "_finite_weights_key", key)
