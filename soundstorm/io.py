"""File I/O for everything soundstorm writes: atomic files, safetensors tensors, component directories.

One job: no reader ever sees a half-written file, and no weights are ever unpickled. Data shards,
manifests, the corpus, checkpoints, ``SoundStorm.save_pretrained`` and the CLIs write through
:func:`atomic_file`; tensors go through :func:`save_state_dict` / :func:`load_state_dict`
(safetensors only). Fitted codecs and semantic tokenizers are saved as small directories
``config.json`` + ``weights.safetensors`` (:func:`save_component` / :func:`load_component`).
This module imports nothing from soundstorm, so any module may use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

COMPONENT_CONFIG_NAME = "config.json"
COMPONENT_WEIGHTS_NAME = "weights.safetensors"


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
        raise ValueError(
            f"{path} is not a valid safetensors file ({err}); soundstorm never unpickles weights. "
            "Convert a trusted PyTorch checkpoint with safetensors.torch.save_file first."
        ) from err


def read_json(path: Path, what: str):
    """Parse the JSON file ``path``; missing → FileNotFoundError, invalid → ValueError naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected {what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def save_component(directory, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` then ``config`` (the config last, so a directory with one is complete)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_state_dict(tensors, directory / COMPONENT_WEIGHTS_NAME)
    atomic_write_bytes(directory / COMPONENT_CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True).encode())


def load_component(directory, kind: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a directory written by :func:`save_component`; ``kind`` names what is expected."""
    directory = Path(directory)
    config_path = directory / COMPONENT_CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{kind} directory {directory} has no {COMPONENT_CONFIG_NAME}; expected a directory "
                                f"written by save()")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"{config_path} must hold a JSON object with a 'name' field, got {config!r:.200}")
    return config, load_state_dict(directory / COMPONENT_WEIGHTS_NAME)


def weights_fingerprint(module: torch.nn.Module) -> float:
    """A cheap checksum of a module's weights (used to verify a seeded random initialisation)."""
    with torch.no_grad():
        return float(sum(p.detach().double().abs().sum() for p in module.parameters()))


def check_fingerprint(module: torch.nn.Module, expected: float, what: str) -> None:
    got = weights_fingerprint(module)
    if abs(got - expected) > 1e-6 * max(1.0, abs(expected)):
        raise ValueError(f"{what}: the seeded random weights re-created here have fingerprint {got:.6f}, "
                         f"the saved directory expects {expected:.6f} (a different torch version?); "
                         "the saved codebooks would not match these weights")
