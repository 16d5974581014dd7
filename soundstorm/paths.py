"""Where a name from data meets the filesystem: the one place that turns it into a path, or refuses it.

Shared artifacts (token folders, manifests, checkpoints, dialogue scripts) are data. Their names
(utterance ids, shard names, checkpoint file lists) and paths (a manifest's audio ``path``) must never
lead a reader or a writer outside the folder they belong to. Every such name goes through here:

* :func:`check_name`: a name that becomes one path component (``examples/{utt_id}_reference.wav``,
  ``{shard}.safetensors``) must be a plain file name: no separator, no ``..``, no control character,
  no leading dot, not too long, valid UTF-8.
* :func:`inside`: a path from data (relative to a root, or absolute) must resolve, symlinks followed,
  to a place under that root.
* :func:`output_dir`: the sub-folders a writer creates under a user's output folder must not be links
  planted there (a link is refused; the files themselves are written to a temporary name and renamed
  over the final one, :func:`soundstorm.io.atomic_file`, so a planted file link is replaced, not followed).

Each refusal is a ``ValueError`` naming the artifact and field it came from (``where``), the value and
what is accepted; the CLIs turn it into exit status 2. This module imports nothing from soundstorm.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_NAME_BYTES = 200  # leaves room for a suffix under the usual 255-byte file-name limit


def check_name(value, where: str) -> str:
    """``value`` if it is a safe single file name (see the module docstring); else a ValueError."""
    reason = None
    if not isinstance(value, str) or not value:
        reason = "it is empty or not a string"
    elif "/" in value or "\\" in value:
        reason = "it contains a path separator"
    elif value.startswith("."):
        reason = "it starts with '.' (no hidden names, no '..')"
    elif any(ord(c) < 32 or ord(c) == 127 for c in value):
        reason = "it contains a control character"
    else:
        try:
            if len(value.encode("utf-8")) > MAX_NAME_BYTES:
                reason = f"it is longer than {MAX_NAME_BYTES} bytes"
        except UnicodeEncodeError:
            reason = "it is not valid UTF-8 (a file name with undecodable bytes?)"
    if reason:
        raise ValueError(f"{where}={value!r} cannot be used as a file name: {reason}; expected one plain path "
                         "component (letters, digits, '_', '-', '.' ...), so that no name from a file can point "
                         "outside its folder")
    return value


def is_under(path, root) -> bool:
    """Whether ``path`` (symlinks resolved) is ``root`` or lies below it (symlinks resolved)."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def inside(root, path, where: str, root_name: str | None = None) -> Path:
    """``path`` (relative to ``root``, or absolute) as a real path under ``root``; a ValueError naming
    ``where``, the value and the root otherwise (``root_name`` says what the root is)."""
    candidate = Path(path) if os.path.isabs(path) else Path(root) / path
    if not is_under(candidate, root):
        raise ValueError(f"{where}={str(path)!r} points outside {root_name or 'its folder'} "
                         f"{str(os.path.realpath(root))!r} (it resolves to {os.path.realpath(candidate)!r}); "
                         "a path in a shared file may only name a place under that folder")
    return Path(os.path.realpath(candidate))


def output_dir(root, *names: str) -> Path:
    """``root/names...`` created as real folders: a part that exists as a symlink (a link a writer did
    not make) or as a file is refused. ``root`` is the user's own output folder and may be a link."""
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        folder = folder / check_name(name, f"output folder under {root}")
        if folder.is_symlink():
            raise ValueError(f"{folder} is a symbolic link (to {os.readlink(folder)!r}); soundstorm writes its "
                             "outputs only into folders it made: remove the link, or choose another out_dir")
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file, but outputs go into a folder of that name; move it away or "
                             "choose another out_dir")
        folder.mkdir(exist_ok=True)
    return folder
