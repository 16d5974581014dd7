"""Saving and loading model weights: safetensors + a JSON config, never pickle.

A directory written by :func:`save_pretrained` holds ``config.json`` (the ``SoundStormConfig``
fields plus a format tag) and ``model.safetensors``. Loading refuses anything that is not a
safetensors file, so a checkpoint from an untrusted source cannot execute code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from soundstorm._checks import nonfinite_tensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "soundstorm/v1"


class CorruptFileError(ValueError):
    """A file that exists but cannot be read whole (truncated by a full disk, a killed copy, ...)."""


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc; elsewhere a set-and-restore)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: Path):
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    A crash or an exception at any point leaves ``path`` as it was (old content or absent) and
    removes the temporary file, so a reader never sees a half-written file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp (and safetensors' writer) make 0600; honour the umask
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def save_state_dict(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    """Save tensors as safetensors atomically (contiguous CPU copies; shared storage is fine)."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_state_dict(path: Path, device="cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing file or a non-safetensors file (e.g. a pickle) is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] == b"PK" or head[:1] == b"\x80":  # a zip (torch.save) or a bare pickle
            raise ValueError(f"{path} is not a valid safetensors file but a pickle (torch.save); soundstorm never "
                             "unpickles weights. Convert a trusted checkpoint with safetensors.torch.save_file first.") from err
        raise CorruptFileError(f"{path} is truncated or corrupt ({path.stat().st_size} bytes; safetensors says: "
                               f"{err}); copy it again, or use another checkpoint") from err


def save_pretrained(model, directory) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, **model.config.to_dict()}
    atomic_write_bytes(directory / CONFIG_NAME, json.dumps(config, indent=2).encode())
    save_state_dict(model.state_dict(), directory / WEIGHTS_NAME, metadata={"format": FORMAT})


def load_pretrained(model_cls, directory, map_location="cpu"):
    from soundstorm.model import SoundStormConfig

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"pretrained directory not found: {directory}")
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found; expected a directory written by save_pretrained()")
    try:
        config_data = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from err
    config_data.pop("tokens", None)  # what the model was trained on (soundstorm.assets), not a model size
    fmt = config_data.pop("format", None)
    if fmt != FORMAT:
        raise ValueError(f"{config_path} has format {fmt!r}, expected {FORMAT!r}")
    missing = [f.name for f in dataclasses.fields(SoundStormConfig) if f.name not in config_data]
    if missing:
        raise ValueError(f"{config_path} lacks {', '.join(missing)}; expected every SoundStormConfig field "
                         f"({', '.join(f.name for f in dataclasses.fields(SoundStormConfig))}), none is guessed")
    model = model_cls(SoundStormConfig.from_dict(config_data))
    state = load_state_dict(directory / WEIGHTS_NAME, device=map_location)
    bad = nonfinite_tensors(state)
    if bad:
        raise ValueError(f"{directory / WEIGHTS_NAME} holds NaN or inf in {len(bad)} tensors, e.g. {bad[:3]}; "
                         "expected finite weights (a diverged run? use an earlier checkpoint)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{directory / WEIGHTS_NAME} does not match the config: missing {missing}, unexpected {unexpected}")
    return model.to(map_location)
