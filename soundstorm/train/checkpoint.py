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

from soundstorm.io import (CorruptFileError, NonFiniteWeightsError, atomic_write_bytes, check_finite_state, check_format, load_state_dict,
                           save_state_dict)
from soundstorm.model import CHECKPOINT_META_NAME, CONFIG_NAME, EMA_WEIGHTS_NAME, WEIGHTS_NAME
from soundstorm.paths import check_name

STEP_DIR = re.compile(r"^step_(\d{8})$")
META_NAME = CHECKPOINT_META_NAME
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
                    keep_last: int = 3, tokens: dict | None = None) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically, then prune to the newest ``keep_last``.
    ``tokens`` (what :mod:`soundstorm.assets` records of the token folder) goes into ``config.json``."""
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
        if tokens is not None:
            config = json.loads((tmp / CONFIG_NAME).read_text())
            atomic_write_bytes(tmp / CONFIG_NAME, json.dumps({**config, "tokens": tokens}, indent=2).encode())
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
        files = [check_name(f, f"{directory / META_NAME}: files") for f in meta.get("files", [])]
    except (OSError, json.JSONDecodeError, ValueError, TypeError, AttributeError):
        return False  # unreadable, or a file list naming anything but plain files of this directory
    return meta.get("step") == int(match.group(1)) and all((directory / f).is_file() for f in files)


def list_checkpoints(root: Path) -> list[Path]:
    """Valid checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and is_valid(p)), key=lambda p: p.name)


def resume_candidates(resume: str | None, root: Path) -> list[Path]:
    """Checkpoints to try, best first: ``auto`` → every valid one under ``root``, newest first (the
    trainer falls back to an older one when a newer one cannot be read); ``none``/None → none;
    anything else is one checkpoint directory that must exist and be valid."""
    if resume is None or str(resume).lower() in ("none", "null", "false", ""):
        return []
    if str(resume) == "auto":
        return list_checkpoints(root)[::-1]
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"resume={resume!r}: checkpoint directory not found (expected 'auto', 'none' "
                                f"or a step_XXXXXXXX directory)")
    if not is_valid(path):
        raise ValueError(f"resume={resume!r} is not a complete checkpoint: expected files {list(REQUIRED)} and a "
                         f"meta.json matching the directory name")
    return [path]


def resolve_resume(resume: str | None, root: Path) -> Path | None:
    """The first of :func:`resume_candidates` (None when there is none)."""
    found = resume_candidates(resume, root)
    return found[0] if found else None


def load_checkpoint(directory: Path, map_location="cpu") -> tuple[dict, dict, dict | None]:
    """``(model_state, training_state, ema_state or None)`` from a checkpoint directory; never unpickles
    arbitrary objects (``weights_only=True``). Weights holding a NaN or an infinity are refused
    (:func:`soundstorm.io.check_finite_state`: a ValueError naming the file and the tensors). Weights go to ``map_location``; the training state stays
    on the CPU (RNG states must; ``optimizer.load_state_dict`` moves moments to the parameters).
    A file that cannot be read whole raises :class:`CorruptFileError`."""
    directory = Path(directory)
    if not is_valid(directory):
        raise ValueError(f"{directory} is not a complete checkpoint (expected files {list(REQUIRED)})")
    read_model_config(directory)
    model_state = load_state_dict(directory / WEIGHTS_NAME, device=map_location)
    try:
        state = torch.load(directory / STATE_NAME, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError) as err:
        raise CorruptFileError(f"{directory / STATE_NAME} is truncated or corrupt ({err})") from err
    ema_path = directory / EMA_NAME
    ema_state = load_state_dict(ema_path, device=map_location) if ema_path.is_file() else None
    check_finite_state(model_state, directory / WEIGHTS_NAME)  # a diverged checkpoint is never trained on
    if ema_state is not None:
        check_finite_state(ema_state, ema_path)
    return model_state, state, ema_state


def check_finite_checkpoint(directory: Path) -> None:
    """Read a checkpoint's weights (raw and EMA, not the optimizer state) and refuse NaN or inf in them."""
    directory = Path(directory)
    for path in (directory / WEIGHTS_NAME, directory / EMA_NAME):
        if path.is_file():
            check_finite_state(load_state_dict(path), path)


def read_model_config(directory: Path) -> dict:
    """The ``SoundStormConfig`` fields recorded in a checkpoint's ``config.json``."""
    path = Path(directory) / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CorruptFileError(f"{path} cannot be read as JSON ({err})") from err
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path} holds {type(data).__name__}, expected a JSON object")
    return data


def check_same_model(directory: Path, config: dict, fmt: str | None = None) -> None:
    """Refuse to resume a checkpoint of another kind of model (``fmt``: the ``format`` this run's model
    writes; a text-to-semantic checkpoint given to ``soundstorm-train``, say) or whose model sizes differ
    from this run's ``model.*``."""
    saved = read_model_config(directory)
    if fmt is not None:
        try:
            check_format(Path(directory) / CONFIG_NAME, saved.get("format"), fmt, "resume")
        except ValueError as err:
            raise ValueError(f"cannot resume from {directory}: {err}") from err
    changed = [f"model.{k}={config[k]!r} (checkpoint: {saved.get(k)!r})" for k in config
               if k != "dropout" and saved.get(k) != config[k]]
    if changed:
        raise ValueError(f"cannot resume from {directory}: it holds a different model than this run's config: "
                         f"{', '.join(changed)}; resume with the checkpoint's model settings, or start fresh with "
                         "resume=none and a new out_dir")


def check_same_tokens(directory: Path, tokens: dict | None) -> None:
    """Refuse to resume a checkpoint trained on tokens of another codec/tokenizer (fingerprints differ)."""
    saved = read_model_config(directory).get("tokens")
    if tokens is None or saved is None:
        return
    for kind in ("codec", "semantic"):
        have, expected = tokens["fingerprints"][kind], saved["fingerprints"][kind]
        if have != expected:
            raise ValueError(f"cannot resume from {directory}: it was trained on tokens of another {kind} (sha256 "
                             f"{expected[:12]}…) than data.root's (sha256 {have[:12]}…); resume with the token "
                             "folder it was trained on, or start fresh with resume=none and a new out_dir")


def check_resumable(directory: Path, model_config: dict, tokens: dict | None, fmt: str | None = None) -> None:
    """Both checks above, before anything is restored."""
    check_same_model(directory, model_config, fmt)
    check_same_tokens(directory, tokens)


def load_newest_intact(candidates: list[Path], map_location="cpu") -> tuple[Path, tuple]:
    """The first of ``candidates`` (newest first) whose files all read whole, with what
    :func:`load_checkpoint` returns; says on stdout which ones were passed over and why."""
    errors = []
    for directory in candidates:
        try:
            loaded = load_checkpoint(directory, map_location)
        except CorruptFileError as err:
            print(f"warning: cannot resume from {directory}: {err}", flush=True)
            errors.append(str(err))
            continue
        except NonFiniteWeightsError as err:  # not passed over: the run diverged, training on would hide it
            directory = Path(directory)
            older = [p for p in list_checkpoints(directory.parent) if p.name < directory.name]
            raise NonFiniteWeightsError(
                f"cannot resume from {directory}: {err}; move {directory.name} out of {directory.parent}"
                + (f" (resume=auto then continues from {older[-1].name})" if older else "")
                + ", or start fresh with resume=none and a new out_dir") from err
        if errors:
            print(f"warning: falling back to the newest intact checkpoint, {directory}", flush=True)
        return directory, loaded
    raise ValueError(f"no intact checkpoint to resume from ({'; '.join(errors)}); start fresh with resume=none "
                     "and a new out_dir")
