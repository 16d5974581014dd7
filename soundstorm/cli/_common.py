"""What every backend-using CLI does around its work: build the backend, report input errors, shut down.

Input errors (``ValueError`` / ``FileNotFoundError``, whose messages name the field and value) end the
program with ``prog: error: ...`` on stderr and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

from soundstorm import builders


def run_with_backend(prog: str, backend_cfg, work: Callable) -> None:
    """Call ``work(backend)`` with the configured backend; errors → exit 2; always shut down."""
    backend = None
    try:
        backend = builders.build_backend(backend_cfg)
        work(backend)
    except (ValueError, FileNotFoundError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        if backend is not None:
            backend.shutdown()


def check_output_dir(path, field: str) -> Path:
    """Create the output folder ``path`` (config field ``field``) and prove it writable, before any work:
    a path that is a file, or a folder that cannot be written, is a ``ValueError`` naming both."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{field}={str(path)!r} is a file; expected a folder (or a path that does not exist yet)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{field}={str(path)!r} cannot be written to ({err.strerror}: {err.filename}); expected a "
                         "folder this user can create files in") from err
    return path
