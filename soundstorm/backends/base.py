"""The backend interface: device, precision, step/sync markers, distributed set-up, memory.

A backend answers the questions that differ between devices, and nothing else: which device
tensors live on, which autocast dtype to use, where a step ends (``mark_step`` cuts the lazy graph on
XLA), how to wait for the device (``sync``, for honest timings), how to step the optimizer, how to
start and use torch.distributed, how to save a checkpoint, and how much memory the run peaked at.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def check_dtype_option(backend_name: str, dtype, allowed) -> None:
    """ValueError naming ``backend.options.dtype``, its value and the backend when ``dtype`` is not allowed."""
    if dtype not in allowed:
        hint = " (int8 is for inference on the CPU: backend=cpu backend.options.dtype=int8)" if dtype == "int8" else ""
        raise ValueError(f"backend.options.dtype={dtype!r} is not supported by the {backend_name} backend; "
                         f"expected one of {sorted(allowed)}{hint}")


def dist_info_from_env() -> DistInfo:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK (single process when absent)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


class Backend:
    """Defaults shared by CPU and CUDA; subclasses override what differs."""

    name = "base"
    dist_backend = "gloo"
    static_shapes = False  # True where each new tensor shape costs a compile (XLA): batches come in fixed shapes

    def __init__(self):
        self.dist = DistInfo()

    # -- placement and precision
    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    autocast_dtype: torch.dtype | None = None
    # host→device copies are non_blocking; a DataLoader pins its batches where that makes them async
    pin_memory: bool = False
    # ``capture(fn) -> (replay, static_output)`` where the device has graphs (CUDA), else None
    graph_capture = None

    def prepare_inference_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as inference runs it on this backend (the CPU backend's int8 option quantises it)."""
        return model

    def check_trainable(self) -> None:
        """Raise ValueError when this backend's settings are for inference only."""

    def autocast(self):
        """Context for the forward pass (bf16 autocast on CUDA, nothing on CPU)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def configure_model(self, model: torch.nn.Module, activation_checkpointing: bool = False) -> str:
        """Choose the model's attention kernel (SDPA here) and, if asked, recompute each Conformer
        block in the backward instead of keeping its activations; returns the kernel's name."""
        import functools

        from torch.utils.checkpoint import checkpoint

        model.backbone.configure(checkpoint=functools.partial(checkpoint, use_reentrant=False)
                                 if activation_checkpointing else None)
        return "sdpa"

    # -- step structure
    def mark_step(self) -> None:
        """End of one training or sampling step (cuts the lazy graph on XLA)."""

    def sync(self) -> None:
        """Wait until queued device work has finished (for timings)."""

    def reduce_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Make gradients global before clipping; DDP already all-reduced them during backward."""

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    # -- distributed
    def init_distributed(self) -> DistInfo:
        """Join the torchrun job described by the environment (no-op for one process)."""
        info = dist_info_from_env()
        if info.distributed and not dist.is_initialized():
            dist.init_process_group(backend=self.dist_backend, rank=info.rank, world_size=info.world_size)
        self.dist = info
        return info

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP around ``model`` in a multi-process job, the model itself otherwise."""
        if not self.dist.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.dist.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.dist.distributed:
            dist.barrier()

    def shutdown(self) -> None:
        if self.dist.distributed and dist.is_initialized():
            dist.destroy_process_group()

    devices_per_process = 1  # devices one process feeds (XLA SPMD: every device); batch_size is per device

    def wrap_dataloader(self, loader):
        """Iterable yielding batches (moved to the device by the caller unless overridden)."""
        return loader

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def shard_batch(self, tensor: torch.Tensor) -> torch.Tensor:
        """Lay a batch tensor out over the devices (XLA SPMD); the tensor itself elsewhere."""
        return tensor

    # -- checkpoints
    def state_dict_to_cpu(self, state):
        """CPU copies of a (nested) state: what a checkpoint writer should serialise."""
        if isinstance(state, torch.Tensor):
            return state.detach().cpu()
        if isinstance(state, dict):
            return {k: self.state_dict_to_cpu(v) for k, v in state.items()}
        if isinstance(state, (list, tuple)):
            return type(state)(self.state_dict_to_cpu(v) for v in state)
        return state

    def compiled_graphs(self) -> int | None:
        """How many graphs this process has compiled so far (None where nothing is compiled per shape)."""
        return None

    # -- memory
    def reset_peak_memory(self) -> None:
        """Start a new peak-memory window where the device supports it."""

    def peak_memory_bytes(self) -> int | None:
        """Peak memory since :meth:`reset_peak_memory` (None where the device cannot say)."""
        return None

    def current_memory_bytes(self) -> int | None:
        """Memory in use now, the baseline a peak is compared with (None where unknown)."""
        return None

    def describe(self) -> dict:
        return {"backend": self.name, "device": str(self.device),
                "autocast_dtype": str(self.autocast_dtype) if self.autocast_dtype else "float32"}
