"""The torch_xla backend (TPU, or the CPU through ``PJRT_DEVICE=CPU``): the only module importing torch_xla.

XLA traces operations lazily and compiles one graph per distinct trace, so the rules of the hot
path are: static shapes, no host reads inside a step, and ``mark_step`` at the end of each
training step or sampling iteration (it cuts the trace; an identical trace reuses the compiled
graph). ``sync`` waits for the device, for honest timings.

Data parallelism on TPU, two ways (see ``docs/benchmark.md``, "TPU"):

* multi-process (``torch_xla.launch(fn)`` / ``xmp.spawn``): one process per device;
  :meth:`init_distributed` joins the ``xla`` process group, :meth:`wrap_model` broadcasts the
  master's weights, :meth:`reduce_gradients` averages gradients (``xm.reduce_gradients``, before
  the loop clips them) and
  :meth:`wrap_dataloader` prefetches batches onto the device (``MpDeviceLoader``);
* SPMD (``spmd=True``): one process sees every device as one; :meth:`shard_batch` shards the batch
  dimension over a 1-D ``("data",)`` mesh and XLA inserts the gradient reductions.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

import torch_xla
import torch_xla.core.xla_model as xm
import torch_xla.runtime as xr

from soundstorm.backends.base import Backend, DistInfo, check_dtype_option


class XLABackend(Backend):
    name = "xla"
    dist_backend = "xla"

    def __init__(self, dtype: str = "float32", spmd: bool = False):
        super().__init__()
        dtypes = {"bfloat16": torch.bfloat16, "float32": None}
        check_dtype_option(self.name, dtype, dtypes)
        if not isinstance(spmd, bool):
            raise ValueError(f"XLABackend spmd must be a bool, got {spmd!r}")
        if not os.environ.get("PJRT_DEVICE"):
            raise ValueError("backend 'xla' needs PJRT_DEVICE set (TPU, CPU or CUDA), got it unset")
        self.autocast_dtype = dtypes[dtype]
        self.spmd = spmd
        self._mesh = None
        if spmd:
            xr.use_spmd()

    @property
    def device(self) -> torch.device:
        return torch_xla.device()

    def autocast(self):
        if self.autocast_dtype is None:
            return super().autocast()
        return torch.autocast("xla", dtype=self.autocast_dtype)

    # -- step structure
    def mark_step(self) -> None:
        """Cut the lazy trace and launch it (``torch_xla.sync()``)."""
        torch_xla.sync()

    def sync(self) -> None:
        torch_xla.sync()
        xm.wait_device_ops()

    def reduce_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Average gradients across replicas (multi-process, ``xm.reduce_gradients``) before the
        loop clips them; SPMD inserts its reductions itself and one process has nothing to reduce."""
        if not self.spmd and xr.world_size() > 1:
            xm.reduce_gradients(optimizer)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Step on gradients already reduced by :meth:`reduce_gradients`."""
        optimizer.step()

    # -- distributed
    def init_distributed(self) -> DistInfo:
        if self.spmd:
            self.dist = DistInfo(0, 1, 0)
            return self.dist
        info = DistInfo(xr.global_ordinal(), xr.world_size(), xr.local_ordinal())
        if info.distributed and not dist.is_initialized():
            import torch_xla.distributed.xla_backend  # noqa: F401  (registers the "xla" process group)

            dist.init_process_group("xla", init_method="xla://")
        self.dist = info
        return info

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Every replica starts from the master's weights; gradients meet in :meth:`reduce_gradients`."""
        if self.dist.distributed:
            xm.broadcast_master_param(model)
        return model

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.dist.distributed:
            xm.all_reduce(xm.REDUCE_SUM, [tensor])  # in place for a list
        return tensor

    def barrier(self) -> None:
        if self.dist.distributed:
            xm.rendezvous("soundstorm.barrier")

    def wrap_dataloader(self, loader):
        """Batches arrive on the device, prefetched in the background (``MpDeviceLoader``)."""
        import torch_xla.distributed.parallel_loader as pl

        return pl.MpDeviceLoader(loader, self.device)

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    # -- SPMD data parallelism
    def shard_batch(self, tensor: torch.Tensor) -> torch.Tensor:
        """Shard dim 0 of a device tensor over every device (SPMD only; a no-op otherwise)."""
        if not self.spmd:
            return tensor
        import numpy as np
        import torch_xla.distributed.spmd as xs

        if self._mesh is None:
            num_devices = xr.global_runtime_device_count()
            self._mesh = xs.Mesh(np.arange(num_devices), (num_devices,), ("data",))
        xs.mark_sharding(tensor, self._mesh, ("data",) + (None,) * (tensor.ndim - 1))
        return tensor

    # -- checkpoints and memory
    def save(self, data, path) -> None:
        """``xm.save``: move to CPU (after the pending graph ran) and write on the master only."""
        xm.save(data, path)

    def peak_memory_bytes(self) -> int | None:
        """``peak_bytes_used`` of the device when the runtime reports it (TPU), else None."""
        try:
            info = xm.get_memory_info(self.device)
        except (RuntimeError, NotImplementedError):
            return None
        peak = info.get("peak_bytes_used", info.get("bytes_used")) if isinstance(info, dict) else None
        return None if peak is None else int(peak)

    def describe(self) -> dict:
        out = super().describe()
        out.update(torch_xla=torch_xla.__version__, pjrt_device=os.environ.get("PJRT_DEVICE"),
                   device_kind=xm.xla_device_hw(self.device), spmd=self.spmd)
        return out
