"""The one way tests start a Python child process: a CLI module, a script or torchrun.

Children get the repository on ``PYTHONPATH`` (so they import this checkout), one OpenMP thread
(the suite shares a 2-core machine) and offline wandb; ``env`` adds variables, or removes them
with ``None``. ``check=True`` asserts a zero exit and shows the tail of both streams otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def child_env(env: dict | None = None) -> dict:
    merged = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
              "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    return {k: v for k, v in merged.items() if v is not None}


def run_python(args: list, *, env: dict | None = None, cwd=REPO_ROOT, timeout: int = 300,
               check: bool = False) -> subprocess.CompletedProcess:
    """``python ARGS`` (a script path, or ``-m module ...``) to completion, output captured as text."""
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=child_env(env),
                            cwd=cwd, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def run_cli(module: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -m module args`` (a soundstorm CLI, or ``torch.distributed.run``); see :func:`run_python`."""
    return run_python(["-m", module, *args], **kwargs)


def start_python(args: list, *, env: dict | None = None, cwd=REPO_ROOT, **popen) -> subprocess.Popen:
    """Start ``python ARGS`` without waiting (for tests that signal or kill the child)."""
    return subprocess.Popen([sys.executable, *map(str, args)], env=child_env(env), cwd=cwd, **popen)
