"""What every backend-using CLI does around its work: build the backend, report input errors, shut down.

Input errors (``ValueError`` / ``FileNotFoundError``, whose messages name the field and value) end the
program with ``prog: error: ...`` on stderr and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import sys
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

