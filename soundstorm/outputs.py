"""The one output-folder policy of every CLI that writes (train, train-t2s, eval, generate, dialogue, prepare, bench).

A research run is trusted by what it leaves in its folder, so every writer claims its folder the same way
(:func:`claim`):

* **One writer at a time.** The claim holds an exclusive ``fcntl.flock`` on ``<folder>/.soundstorm.lock``
  for the whole run; the file holds a JSON record of the holder (pid, host, command, start time). A second
  writer is refused (:class:`OutputBusy`, a ``ValueError``: the CLIs exit 2) with the holder's pid and host.
  The kernel drops a flock when its process dies, so a lock file whose flock is free but which still holds a
  record was left by a run that died (SIGKILL, power loss): it is taken over, with a note naming that pid.
  The lock file is removed when the claim ends; removal and re-creation are safe because a claimant checks,
  after locking, that the file it locked is still the one at the path (otherwise it tries again).
* **No silent replacement.** A claim names the outputs the run will write (file names or glob patterns, a
  trailing ``/`` for a folder; a folder found where a file output goes is refused, never removed);
  when one already exists the run is refused before any work unless ``overwrite=true``. With
  ``overwrite=true`` the earlier outputs are removed by :meth:`OutputFolder.commit`, which a CLI calls after
  its last check and before its first write, so no file of the earlier run is left beside the new ones.
  Writers that continue earlier work instead (training resumes, prepare skips finished shards) claim with
  ``overwrite=None``: nothing is refused or removed.
* **Nothing written before every check has passed.** A folder the claim had to create is removed again when
  the run fails while the folder holds nothing but the lock, so a refused run leaves no empty ``out_dir``.
  (The CLIs also do their own writes, such as ``config.yaml``, only after their checks.)
* **A full disk is reported, not a traceback.** An ``OSError`` inside a claim made with ``kept=`` becomes
  :class:`WriteFailed`, one message (:func:`write_failure`): what failed, which finished outputs are intact
  (every file is written to a temporary name and renamed, :func:`soundstorm.io.atomic_file`) and how a rerun
  continues; the CLIs print it and exit 1. (A ``FileNotFoundError`` before :meth:`OutputFolder.commit` is a
  missing input, left to the CLI's exit 2.)

Under DDP only the main process claims (``enabled=False`` elsewhere): the other ranks never write outputs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

LOCK_NAME = ".soundstorm.lock"
MAX_RECORD_BYTES = 64 * 1024  # a lock record is a few hundred bytes; a larger file is not ours


class OutputBusy(ValueError):
    """Another live process holds the output folder's lock (the CLIs exit 2 and name it)."""


class WriteFailed(Exception):
    """An ``OSError`` (a full disk, a lost mount) stopped a run that writes outputs; the message says what is
    intact and how to continue (the CLIs exit 1)."""


def describe_holder(record: dict) -> str:
    """``pid 123 on host h (started 2026-01-01 10:00:00 UTC: soundstorm-train out_dir=x)`` from a lock record."""
    started = record.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if isinstance(started, (int, float)) else "?"
    return (f"pid {record.get('pid', '?')} on host {record.get('host', '?')} (started {when}: "
            f"{record.get('command', '?')})")


def _read_record(fd: int) -> dict | None:
    """The holder record in an open lock file: a dict, or None when the file is empty or unreadable."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, MAX_RECORD_BYTES)
        record = json.loads(data.decode("utf-8")) if data.strip() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _own_record(command: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": time.time()}


class OutputFolder:
    """A claimed output folder (see the module docstring); made by :func:`claim`."""

    def __init__(self, path: Path, field: str, prog: str, outputs: list[str], overwrite: bool | None,
                 shown: str | None = None):
        self.path, self.field, self.prog = path, field, prog
        self.shown = shown or f"{field}={str(path)!r}"  # how messages name the folder
        self.outputs, self.overwrite = outputs, overwrite
        self.created: list[Path] = []  # folders this claim made, outermost first
        self.lock_path: Path | None = None
        self._fd: int | None = None
        self.committed = False

    # ---------------------------------------------------------------- outputs of an earlier run
    def existing(self) -> list[Path]:
        """The outputs of this run (names or glob patterns under the folder; a trailing ``/`` marks a folder)
        that exist already, in the order of ``outputs`` (the main result first)."""
        found: list[Path] = []
        for pattern in (p.rstrip("/") for p in self.outputs):
            if glob.has_magic(pattern):
                matches = sorted(Path(p) for p in glob.glob(os.path.join(glob.escape(str(self.path)), pattern)))
            else:
                matches = [self.path / pattern] if os.path.lexists(self.path / pattern) else []
            found += [m for m in matches if m not in found]
        return found

    def refuse_existing(self) -> None:
        """Refuse (ValueError) when an output already exists and ``overwrite`` is not true, or when a real
        folder stands where this run writes a file (``overwrite=true`` never removes a folder it did not name)."""
        if self.overwrite is None:
            return
        files = {p for p in self.outputs if not p.endswith("/")}
        for path in self.existing():
            if path.is_dir() and not path.is_symlink() and any(path.match(p) for p in files):
                raise ValueError(f"{path} is a folder, but this run writes a file of that name; move it away or "
                                 f"choose another {self.field}")
        found = self.existing()
        if found and not self.overwrite:
            more = f" and {len(found) - 1} more outputs" if len(found) > 1 else ""
            raise ValueError(f"{self.shown} already holds {found[0].relative_to(self.path)}{more} "
                             f"of an earlier run; expected a fresh {self.field}, or overwrite=true to replace the "
                             "earlier outputs (all of them are removed before the new ones are written)")

    def commit(self) -> None:
        """Every check has passed and the run is about to write: with ``overwrite=true`` the earlier outputs
        are removed now, so none of them stays beside the new ones. Call once, before the first write."""
        if self.overwrite:
            for path in self.existing():
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        self.committed = True

    # ---------------------------------------------------------------- the folder and its lock
    def _create(self) -> None:
        """Make the folder (and missing parents), remembering which ones this claim made."""
        missing = []
        folder = self.path
        while not os.path.lexists(folder):
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue  # another claimant made it first: not ours to remove
            self.created.append(folder)

    def _check_writable(self) -> None:
        if os.path.lexists(self.path) and not self.path.is_dir():
            raise ValueError(f"{self.shown} is a file; expected a folder (or a path that does not "
                             "exist yet)")
        try:
            self._create()
            fd, probe = tempfile.mkstemp(dir=self.path, prefix=".write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise ValueError(f"{self.shown} cannot be written to ({err.strerror}: {err.filename}); "
                             "expected a folder this user can create files in") from err

    def _lock(self, lock_name: str, command: str) -> None:
        """Hold the flock on ``lock_name`` (see the module docstring); refuse a live holder, take over a dead one."""
        self.lock_path = self.path / lock_name
        for _ in range(20):  # each retry follows a holder that removed the file between our open and our lock
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                record = _read_record(fd)
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ValueError(f"{self.shown}: cannot lock {self.lock_path} ({err.strerror})"
                                     "; expected a local folder that supports file locks") from err
                holder = describe_holder(record) if record else "another process (its record is not written yet)"
                raise OutputBusy(f"{self.shown} is in use by another soundstorm run: {holder}; "
                                 f"wait for it to end, or choose another {self.field} (two runs writing one folder "
                                 "would mix their outputs)") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                self._create()  # the holder may have removed the folder it had made
                continue
            stale = _read_record(fd)
            if stale:
                print(f"{self.prog}: note: taking over the lock {self.lock_path} left by {describe_holder(stale)}, "
                      "which ended without releasing it", file=sys.stderr, flush=True)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(_own_record(command)).encode())
            os.fsync(fd)
            self._fd = fd
            return
        raise OutputBusy(f"{self.shown}: its lock {self.lock_path} keeps being replaced by other "
                         "runs; expected one writer at a time")

    def release(self, failed: bool) -> None:
        """Drop the lock (its file removed while still held); after a failure, remove the folders this claim
        made if they hold nothing."""
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path)
            os.close(self._fd)
            self._fd = None
        if failed:
            for folder in reversed(self.created):
                try:
                    folder.rmdir()  # only when empty: a run that wrote something keeps it
                except OSError:
                    break


def command_line() -> str:
    """How this process was started, for the lock record (``soundstorm-train out_dir=...``)."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:1000] if sys.argv else "python"


@contextlib.contextmanager
def claim(path, field: str, prog: str, *, outputs: Iterable[str] = (), overwrite: bool | None = None,
          enabled: bool = True, lock_name: str = LOCK_NAME, kept: str | Callable[[], str] | None = None,
          rerun: str = "", shown: str | None = None) -> Iterator[OutputFolder]:
    """Claim the output folder ``path`` (config field ``field``) for this run; see the module docstring.

    ``outputs``: names or glob patterns (relative to the folder) this run writes; with ``overwrite=False``
    an existing one is refused, with ``overwrite=True`` it is removed at :meth:`OutputFolder.commit`;
    ``overwrite=None``: the run continues earlier work (nothing refused or removed). ``enabled=False``
    (a DDP rank other than the main one): the folder is only checked, never created, locked or changed.
    ``lock_name``: the lock file's name in the folder (a writer of one file beside others names its own);
    ``shown``: how messages name the folder (default ``field='path'``).
    ``kept`` (a sentence, or a function returning one when the error happens) and ``rerun``: with ``kept``,
    an ``OSError`` in the body becomes :class:`WriteFailed` saying what is intact and how a rerun continues.
    """
    if not isinstance(overwrite, (bool, type(None))):
        raise ValueError(f"overwrite must be true or false, got {overwrite!r}")
    folder = OutputFolder(Path(path), field, prog, list(outputs), overwrite, shown)
    if not enabled:
        if os.path.lexists(folder.path) and not folder.path.is_dir():
            raise ValueError(f"{field}={str(folder.path)!r} is a file; expected a folder")
        yield folder
        return
    failed = True
    try:
        folder._check_writable()
        folder._lock(lock_name, command_line())
        folder.refuse_existing()
        try:
            yield folder
        except OSError as err:
            if kept is None or (isinstance(err, FileNotFoundError) and not folder.committed):
                raise
            raise WriteFailed(write_failure(err, kept() if callable(kept) else kept, rerun)) from err
        failed = False
    finally:
        folder.release(failed)


def write_failure(err: OSError, kept: str, rerun: str) -> str:
    """The message of an ``OSError`` that stopped a run (a full disk, a lost mount): the error, what is
    intact (``kept``) and how a rerun continues (``rerun``); the CLIs print it and exit 1."""
    reason = f"{err.strerror or err}" + (f": {err.filename}" if getattr(err, "filename", None) else "")
    if err.errno == errno.ENOSPC:
        reason = f"the disk is full ({reason})"
    return f"stopped by an operating-system error: {reason}. {kept} {rerun}".rstrip()
