"""Directories of fitted components: ``config.json`` + ``weights.safetensors`` (never pickle).

One job: write, read and fingerprint (sha256) the small directories that codecs and semantic
tokenizers are saved to, atomically, reusing :mod:`soundstorm.pretrained`'s safetensors helpers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from soundstorm.pretrained import atomic_write_bytes, load_state_dict, save_state_dict

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.safetensors"
FINGERPRINT_FILES = (CONFIG_NAME, WEIGHTS_NAME)


def save_component(directory, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` then ``config`` (the config last, so a directory with one is complete)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_state_dict(tensors, directory / WEIGHTS_NAME)
    atomic_write_bytes(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True).encode())


def load_component(directory, kind: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a directory written by :func:`save_component`; ``kind`` names what is expected."""
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{kind} directory {directory} has no {CONFIG_NAME}; expected a directory "
                                f"written by save()")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"{config_path} must hold a JSON object with a 'name' field, got {config!r:.200}")
    return config, load_state_dict(directory / WEIGHTS_NAME)


def component_fingerprint(directory) -> str:
    """sha256 of a saved component folder (its ``config.json`` and ``weights.safetensors``)."""
    digest = hashlib.sha256()
    for name in FINGERPRINT_FILES:
        path = Path(directory) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; expected a folder saved by soundstorm-prepare")
        digest.update(name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


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
