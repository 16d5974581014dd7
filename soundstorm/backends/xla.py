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
* SPMD (``spmd=True``): one process sees every device as one; the device loader (and
  :meth:`to_device` for batches that did not come through it) lays dim 0 of every batch tensor
  over a 1-D ``("data",)`` mesh, so each device holds 1/N of the batch, and XLA inserts the
  gradient reductions. The process loads ``batch_size × devices`` examples per step
  (:attr:`devices_per_process`): ``data.batch_size`` is per device on every backend.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

import torch_xla
import torch_xla.core.xla_model as xm
import torch_xla.runtime as xr

from soundstorm.backends.base import Backend, DistInfo, check_dtype_option
from soundstorm.attention import select_attention


def _load_flash_kernel():
    """torch_xla's Pallas flash attention, or None where this build lacks it (guarded import)."""
    try:
        from torch_xla.experimental.custom_kernel import flash_attention
    except ImportError:
        return None
    return flash_attention


class _BatchDimSharding:
    """Shard dim 0 of a tensor of any rank over the ``data`` mesh axis (the rest replicated).

    The device loader and ``send_cpu_data_to_device`` take one sharding spec for every tensor of a
    batch and apply it through ``xla_spec(tensor)``; a single ``xs.ShardingSpec`` only fits tensors
    of its own rank, while a batch holds ``[B]``, ``[B, S]`` and ``[B, Q, T]`` tensors."""

    minibatch = False

    def __init__(self, mesh):
        import torch_xla.distributed.spmd as xs

        self._make = lambda ndim: xs.ShardingSpec(mesh, ("data",) + (None,) * (ndim - 1))
        self._by_ndim = {}

    def xla_spec(self, tensor: torch.Tensor):
        if tensor.dim() == 0:
            return None
        if tensor.dim() not in self._by_ndim:
            self._by_ndim[tensor.dim()] = self._make(tensor.dim())
        return self._by_ndim[tensor.dim()].xla_spec(tensor)


class XLABackend(Backend):
    name = "xla"
    dist_backend = "xla"
    static_shapes = True

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
    def devices_per_process(self) -> int:
        """Devices one process feeds: all of them under SPMD, else its own one."""
        return xr.global_runtime_device_count() if self.spmd else 1

    @property
    def device(self) -> torch.device:
        return torch_xla.device()

    def autocast(self):
        if self.autocast_dtype is None:
            return super().autocast()
        return torch.autocast("xla", dtype=self.autocast_dtype)

    def configure_model(self, model: torch.nn.Module, activation_checkpointing: bool = False) -> str:
        """Pallas flash attention on a TPU (SDPA elsewhere, :func:`soundstorm.attention.select_attention`);
        checkpointing through ``torch_xla.utils.checkpoint`` (its optimisation barriers stop XLA from
        merging the recomputation back into the forward)."""
        spec = (("data", None, None, None), self.mesh()) if self.spmd else (None, None)
        name, attention = select_attention(xm.xla_device_hw(self.device), _load_flash_kernel, *spec)
        checkpoint = None
        if activation_checkpointing:
            from torch_xla.utils.checkpoint import checkpoint
        model.backbone.configure(attention=attention, checkpoint=checkpoint)
        return name

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
        """Batches arrive on the device, prefetched in the background (``MpDeviceLoader``); under
        SPMD each tensor arrives sharded over the devices along dim 0."""
        import torch_xla.distributed.parallel_loader as pl

        sharding = _BatchDimSharding(self.mesh()) if self.spmd else None
        return pl.MpDeviceLoader(loader, self.device, input_sharding=sharding)

    def to_device(self, batch: dict) -> dict:
        """Host tensors to the device (sharded along dim 0 under SPMD); device tensors are kept."""
        sharding = _BatchDimSharding(self.mesh()) if self.spmd else None

        def move(tensor):
            if tensor.device.type == "xla":
                return tensor
            if sharding is None:
                return tensor.to(self.device)
            return xm.send_cpu_data_to_device(tensor, self.device, sharding)[0]

        return {k: move(v) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    # -- SPMD data parallelism
    def mesh(self):
        """The 1-D ``("data",)`` mesh over every device (SPMD)."""
        if self._mesh is None:
            import numpy as np
            import torch_xla.distributed.spmd as xs

            num_devices = xr.global_runtime_device_count()
            self._mesh = xs.Mesh(np.arange(num_devices), (num_devices,), ("data",))
        return self._mesh

    def shard_batch(self, tensor: torch.Tensor) -> torch.Tensor:
        """Shard dim 0 of a device tensor over every device (SPMD only; a no-op otherwise)."""
        if not self.spmd:
            return tensor
        import torch_xla.distributed.spmd as xs

        xs.mark_sharding(tensor, self.mesh(), ("data",) + (None,) * (tensor.ndim - 1))
        return tensor

    def compiled_graphs(self) -> int:
        """Graphs compiled by this process (``CompileTime`` samples of ``torch_xla.debug.metrics``)."""
        import torch_xla.debug.metrics as met

        data = met.metric_data("CompileTime")
        return 0 if data is None else int(data[0])

    # -- memory
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
