"""What every backend-using CLI does around its work: build the backend, report input errors, shut down.

Input errors (``ValueError`` / ``FileNotFoundError``, whose messages name the field and value) end the
program with ``prog: error: ...`` on stderr and exit status 2 instead of a traceback; another writer holding
the output folder too (:mod:`soundstorm.outputs`). An operating-system error while writing (a full disk,
:class:`soundstorm.outputs.WriteFailed`, saying what is intact and how to continue) exits 1. Training CLIs
(:func:`run_training`) share the rest of their exit codes: 3 non-finite steps, 4 too many compiled
graphs (XLA), 1 an OS error such as a full disk (every checkpoint already written is intact).
"""

from __future__ import annotations

import sys
from typing import Callable

from soundstorm import builders
from soundstorm.outputs import WriteFailed, claim
from soundstorm.train.graphs import GraphBudgetExceeded
from soundstorm.train.loop import NonFiniteLossError


def run_with_backend(prog: str, backend_cfg, work: Callable) -> None:
    """Call ``work(backend)`` with the configured backend; errors → exit 2; always shut down."""
    backend = None
    try:
        backend = builders.build_backend(backend_cfg)
        work(backend)
    except (ValueError, FileNotFoundError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except (WriteFailed, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        if backend is not None:
            backend.shutdown()



def run_training(prog: str, cfg, build: Callable, errors: list | None = None) -> int:
    """Build ``(trainer, resume_from) = build(cfg, backend)`` and fit; return the exit code (see the module
    docstring), the error message also appended to ``errors`` when given (a sweep job records it). The
    main process holds ``out_dir`` for the whole run (:func:`soundstorm.outputs.claim`: a second training
    into it is refused; training resumes rather than overwrites, so nothing is removed). The logger is
    finished and the backend shut down whatever happens."""
    backend, trainer, code, message = None, None, 0, None
    try:
        backend = builders.build_backend(cfg.backend)
        with claim(cfg.out_dir, "out_dir", prog, enabled=backend.dist.is_main):
            try:
                trainer, resume_from = build(cfg, backend)
                trainer.fit(resume_from)
            finally:  # inside the claim: the logger's last files are written while out_dir is still held
                if trainer is not None and trainer.logger is not None:
                    trainer.logger.finish()
    except (ValueError, FileNotFoundError) as err:
        code, message = 2, str(err)
    except NonFiniteLossError as err:
        code, message = 3, str(err)
    except GraphBudgetExceeded as err:
        code, message = 4, str(err)
    except OSError as err:  # e.g. a full disk while checkpointing: what was written before is intact
        code, message = 1, (f"{err}; every checkpoint already under {cfg.out_dir}/checkpoints is complete "
                            "(resume=auto continues from the newest once this is fixed)")
    finally:
        if backend is not None:
            backend.shutdown()
    if message is not None:
        print(f"{prog}: error: {message}", file=sys.stderr)
        if errors is not None:
            errors.append(message)
    return code
