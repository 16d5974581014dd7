"""The CPU backend: fp32 (or int8 for inference), gloo for multi-process jobs, peak memory from the resident set.

``dtype="int8"`` (``backend=cpu backend.options.dtype=int8``) makes :meth:`prepare_inference_model`
quantise the Conformer's linear layers to int8 (:mod:`soundstorm.quantize`); training refuses it.

Peak memory is the kernel's high-water mark of the resident set (``VmHWM``). On Linux
:meth:`CPUBackend.reset_peak_memory` restarts that mark (``/proc/self/clear_refs``, value 5), so a
peak can be measured for one phase of a run; elsewhere the mark covers the whole process
(``ru_maxrss``). :meth:`current_memory_bytes` (``VmRSS``) is the baseline to subtract.
"""

from __future__ import annotations

import resource
import sys

import torch

from soundstorm.backends.base import Backend, check_dtype_option
from soundstorm.quantize import INFERENCE_DTYPES, quantize_int8


def _proc_status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes (None off Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class CPUBackend(Backend):
    name = "cpu"
    dist_backend = "gloo"
    autocast_dtype = None

    def __init__(self, num_threads: int | None = None, dtype: str = "float32"):
        super().__init__()

        check_dtype_option(self.name, dtype, INFERENCE_DTYPES)
        self.dtype = dtype
        if num_threads is not None:
            if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
                raise ValueError(f"CPUBackend num_threads must be a positive integer or None, got {num_threads!r}")
            torch.set_num_threads(num_threads)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def prepare_inference_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in eval mode; with ``dtype="int8"`` its linear layers quantised in place."""
        if self.dtype != "int8":
            return model.eval()

        return quantize_int8(model)

    def check_trainable(self) -> None:
        if self.dtype == "int8":
            raise ValueError("backend.options.dtype='int8' on the cpu backend is for inference only "
                             "(soundstorm-generate, soundstorm-eval, soundstorm-bench); training runs in float32: "
                             "drop the option or set backend.options.dtype=float32")

    def describe(self) -> dict:
        out = {**super().describe(), "dtype": self.dtype}
        if self.dtype == "int8":
            out["quantized_engine"] = torch.backends.quantized.engine  # x86 / fbgemm / onednn kernels
        return out

    def reset_peak_memory(self) -> None:
        """Restart the resident-set high-water mark (Linux); a no-op where unsupported."""
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def peak_memory_bytes(self) -> int | None:
        """Peak resident set size of this process (since :meth:`reset_peak_memory` on Linux)."""
        peak = _proc_status_bytes("VmHWM")
        if peak is not None:
            return peak
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return int(rss if sys.platform == "darwin" else rss * 1024)

    def current_memory_bytes(self) -> int | None:
        return _proc_status_bytes("VmRSS")
