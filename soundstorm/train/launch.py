"""How many training processes this host runs, and starting them (one per TPU chip, ``torch_xla.launch``).

On a TPU host, multi-process data parallelism is one process per local chip. ``soundstorm-train``
starts them itself (``launch: auto``, the default) when the backend is XLA without SPMD and
``PJRT_DEVICE=TPU``; each process trains on its share of the data, gradients are averaged by
the XLA backend and global rank 0 writes checkpoints and logs. On a pod, run the same command on
every host (e.g. ``gcloud compute tpus tpu-vm ssh NAME --worker=all --command="PJRT_DEVICE=TPU
soundstorm-train experiment=paper_librilight_tpu data.root=... out_dir=/shared/run"``), with
``out_dir`` on storage every host sees, so a restart resumes from rank 0's checkpoints.
With ``launch: single``, SPMD, or any other device, the current process is the only one (on
``PJRT_DEVICE=CPU`` torch_xla would run its replicas as threads of one process, which a training
run with signal handlers cannot use).
"""

from __future__ import annotations

import os
from typing import Callable

LAUNCH_MODES = ("auto", "single")


def processes_per_host(launch: str, backend_name: str, spmd: bool, pjrt_device: str | None) -> str:
    """``"xla"`` when this host must start one process per local chip, ``"single"`` otherwise."""
    if launch not in LAUNCH_MODES:
        raise ValueError(f"launch={launch!r} is not one of {LAUNCH_MODES}")
    if os.environ.get("PJRT_LOCAL_PROCESS_RANK") is not None:  # already a launched replica
        return "single"
    if launch == "auto" and backend_name in ("xla", "auto") and not spmd and pjrt_device == "TPU":
        return "xla"
    return "single"


class ReplicaFailed(RuntimeError):
    """A launched training process ended with a non-zero exit code (its error went to stderr)."""

    def __init__(self, index: int, code: int):
        super().__init__(f"training process {index} exited with code {code}")
        self.index, self.code = index, code

    def __reduce__(self):  # picklable across the process pool
        return ReplicaFailed, (self.index, self.code)


def run_replicas(process_main: Callable[[int, dict], int], config: dict, launcher: Callable | None = None) -> None:
    """Run ``process_main(index, config)`` in one process per local chip (``torch_xla.launch``);
    a replica's non-zero exit code comes back as :class:`ReplicaFailed`."""
    if launcher is None:
        import torch_xla

        launcher = torch_xla.launch
    launcher(_Replica(process_main), args=(config,))


class _Replica:
    """Picklable wrapper: run one replica, raise :class:`ReplicaFailed` on a non-zero code."""

    def __init__(self, process_main: Callable[[int, dict], int]):
        self.process_main = process_main

    def __call__(self, index: int, config: dict) -> None:
        code = self.process_main(index, config)
        if code:
            raise ReplicaFailed(index, code)
