"""Training checkpoints: written atomically, kept K at a time, found again by ``resume=auto``.

A checkpoint is a directory ``<root>/step_00001234/`` holding

* ``config.json`` + ``model.safetensors`` (what :meth:`SoundStorm.from_pretrained` reads),
* ``ema.safetensors`` when EMA is on,
* ``state.pt``: optimizer, scheduler, RNG states (as tensors), data position and counters; only
  tensors, numbers, strings, lists and dicts, loaded with ``torch.load(..., weights_only=True)``,
* ``meta.json``: the step and the file list, written last inside the directory.

Every file is written into a temporary sibling directory and fsynced; the directory is then renamed
into place (``os.replace``, atomic on POSIX) and the parent fsynced. A crash at any point leaves either
the new complete checkpoint or none, never a half-written one, and older checkpoints untouched.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from soundstorm.io import atomic_write_bytes, load_state_dict, save_state_dict
from soundstorm.model import CONFIG_NAME, EMA_WEIGHTS_NAME, WEIGHTS_NAME

STEP_DIR = re.compile(r"^step_(\d{8})$")
META_NAME = "meta.json"
STATE_NAME = "state.pt"
EMA_NAME = EMA_WEIGHTS_NAME
REQUIRED = (CONFIG_NAME, WEIGHTS_NAME, STATE_NAME, META_NAME)


# ---------------------------------------------------------------------- RNG states
def capture_rng() -> dict:
    """Torch (CPU and CUDA), NumPy and Python RNG states as tensors and plain values."""
    np_name, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_gauss), "cached_gaussian": float(np_cached)},
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------- writing
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(root: Path, step: int, model, state: dict, ema_state: dict | None = None,
                    keep_last: int = 3) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically, then prune to the newest ``keep_last``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    if is_valid(final):  # this step is already saved (a stop signal right after a periodic save)
        return final
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model.save_pretrained(tmp)
        if ema_state is not None:
            save_state_dict(ema_state, tmp / EMA_NAME)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(tmp / STATE_NAME, buffer.getvalue())
        files = sorted(p.name for p in tmp.iterdir()) + [META_NAME]
        atomic_write_bytes(tmp / META_NAME, json.dumps({"step": step, "files": files}, indent=2).encode())
        _fsync_dir(tmp)
        if final.exists():  # an invalid leftover of this step (never a complete checkpoint)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune(root, keep_last)
    return final


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` valid checkpoints, and stale temporary directories."""
    if keep_last < 1:
        raise ValueError(f"trainer.keep_last must be >= 1, got {keep_last}")
    for stale in Path(root).glob(".tmp-step_*"):
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------- finding and loading
def is_valid(directory: Path) -> bool:
    """A directory with every required file and a meta.json naming its own step."""
    directory = Path(directory)
    match = STEP_DIR.match(directory.name)
    if not match or not all((directory / name).is_file() for name in REQUIRED):
        return False
    try:
        meta = json.loads((directory / META_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("step") == int(match.group(1)) and all((directory / f).is_file() for f in meta.get("files", []))


def list_checkpoints(root: Path) -> list[Path]:
    """Valid checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and is_valid(p)), key=lambda p: p.name)


def resolve_resume(resume: str | None, root: Path) -> Path | None:
    """``auto`` → newest valid checkpoint under ``root`` (None when there is none); ``none``/None →
    None; anything else is a checkpoint directory that must exist and be valid."""
    if resume is None or str(resume).lower() in ("none", "null", "false", ""):
        return None
    if str(resume) == "auto":
        found = list_checkpoints(root)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"resume={resume!r}: checkpoint directory not found (expected 'auto', 'none' "
                                f"or a step_XXXXXXXX directory)")
    if not is_valid(path):
        raise ValueError(f"resume={resume!r} is not a complete checkpoint: expected files {list(REQUIRED)} and a "
                         f"meta.json matching the directory name")
    return path


def load_checkpoint(directory: Path, map_location="cpu") -> tuple[dict, dict, dict | None]:
    """``(model_state, training_state, ema_state or None)`` from a checkpoint directory; never unpickles
    arbitrary objects (``weights_only=True``). Weights go to ``map_location``; the training state stays
    on the CPU (RNG states must; ``optimizer.load_state_dict`` moves moments to the parameters)."""
    directory = Path(directory)
    if not is_valid(directory):
        raise ValueError(f"{directory} is not a complete checkpoint (expected files {list(REQUIRED)})")
    model_state = load_state_dict(directory / WEIGHTS_NAME, device=map_location)
    state = torch.load(directory / STATE_NAME, map_location="cpu", weights_only=True)
    ema_path = directory / EMA_NAME
    ema_state = load_state_dict(ema_path, device=map_location) if ema_path.is_file() else None
    return model_state, state, ema_state
