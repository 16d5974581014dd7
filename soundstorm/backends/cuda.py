"""The CUDA backend: bf16 autocast, nccl, device syncs, pinned host batches, CUDA graphs, peak memory.

``dtype`` is the autocast dtype: ``bfloat16`` (default), ``float32`` (no autocast; TF32 matmuls),
or ``float16`` for inference. Training refuses ``float16`` (:class:`soundstorm.train.loop.Trainer`):
its gradients underflow without loss scaling, which the trainer does not do; bf16 has fp32's range.
"""

from __future__ import annotations

import torch

from soundstorm.backends.base import Backend, check_dtype_option
from soundstorm.backends.cuda_graphs import capture_cuda_graph


class CUDABackend(Backend):
    name = "cuda"
    dist_backend = "nccl"

    def __init__(self, dtype: str = "bfloat16"):
        super().__init__()
        dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": None}
        check_dtype_option(self.name, dtype, dtypes)
        if not torch.cuda.is_available():
            raise ValueError("backend 'cuda' was requested but torch.cuda.is_available() is False; "
                             "use backend=cpu or backend=auto")
        self.autocast_dtype = dtypes[dtype]
        self.pin_memory = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.dist.local_rank % max(torch.cuda.device_count(), 1))

    def init_distributed(self):
        info = super().init_distributed()
        torch.cuda.set_device(self.device)
        return info

    @staticmethod
    def graph_capture(fn):
        """Capture ``fn`` into a CUDA graph (see :mod:`soundstorm.backends.cuda_graphs`)."""
        return capture_cuda_graph(fn)

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)

    def reset_peak_memory(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_bytes(self) -> int | None:
        return int(torch.cuda.max_memory_allocated(self.device))
