"""The peak memory of a generation or a benchmark, estimated from its shapes before anything is allocated.

``soundstorm-generate`` and ``soundstorm-bench`` call :func:`estimate_generation` and :func:`check_memory`
before they build anything large, so a request the machine cannot hold (the paper preset over an hour
of audio in one pass, say) is refused with both numbers and what to change, instead of dying in an
allocation minutes later (or being killed by the kernel's OOM killer with no word at all).

How the figures are made (:class:`MemoryEstimate`; the style of :mod:`soundstorm.train.memory_plan`):

* **weights** are counted from the parameter count in the dtype they run in: fp32 (4 bytes), int8
  (the backbone's linear layers: 1 byte per weight plus a scale and a zero point per output channel,
  fp32 bias; the rest fp32), bf16 autocast (fp32 weights plus the bf16 copies autocast caches of
  every linear and convolution weight for the duration of the autocast region).
* **activations** are *measured*, not guessed: one call of the sampler (:func:`soundstorm.sampler.decode`,
  what :func:`~soundstorm.sampler.generate` runs) is executed on the ``meta`` device (shapes only, no
  memory, seconds for the paper preset at an hour) at the real batch, window length and sampler
  settings (temperature, top-k/top-p, minimum-Bayes-risk), with every level's schedule cut to at most
  two iterations (a sampling one and a greedy one: later iterations repeat the same shapes). A
  ``TorchDispatchMode`` adds the bytes of every new tensor storage and subtracts them when the storage
  is freed (a weak reference's callback), so the figure is the high-water mark of live tensors: the
  codes ``[B, Q, T]``, the semantic embedding, the acoustic embeddings ``[B, Q, T, D]`` summed per
  frame, each block's feed-forward and convolution intermediates, the sampler's float logits
  ``[B, T, V]``, its Gumbel noise, confidence ranks and filtering (counted in the run dtype: bf16 autocast
  keeps a few, e.g. norms, in fp32). Attention runs through a stand-in
  kernel: the fused kernels that SDPA picks on CPU and CUDA keep no ``[B, H, T, T]`` scores, the math
  path (XLA without the Pallas kernel) keeps two at once (scores and their softmax); ``attention_scores``
  says which.
* **buffers**: what lives across the windows of a long-form generation (:mod:`soundstorm.longform`):
  the whole clip's codes ``[Q, T]`` (int64, and their copy written to ``.codes.npy``) and semantic ids.
* **decode**: the codec's decoding of the whole clip, measured the same way on real tensors (two short
  clips, so a fixed cost and a cost per frame; Griffin-Lim and convolutional decoders grow linearly).

Peak = weights + buffers + max(activations, decode): the sampler's tensors are freed before the codec
runs. On a CUDA device the weights and activations are device memory and the buffers and decode host
memory; each is compared with its own pool (:func:`available_memory`).

What is left out: allocator caching and fragmentation, the interpreter and libraries, kernel
workspaces torch allocates outside its dispatcher. The figure is the peak of *live tensors*. A process's
resident set follows it where freed blocks go back to the kernel: always for blocks of tens of MiB and
more (the sizes at which a request fails), but glibc keeps freed blocks under its mmap threshold
(which rises to 32 MiB after the first large free) in its heap, so a run made of tensors of a few MiB
can reach up to twice the estimate (measured: 72 MiB estimated, 145 MiB resident at B=2, T=4000 with
the default allocator; 76 MiB with the threshold pinned). The CUDA caching allocator likewise reserves
more than it hands out, but frees its cache and retries before failing. ``tests/test_resources.py``
checks the estimate against the peak resident-set growth of a fresh process that runs the generation
(threshold pinned, so the resident set follows the live tensors): within 25% at three sizes.
Not covered: the ``soundstorm-bench codec_decode=true`` EnCodec decoder, and ``mode=train`` (whose
plan is :mod:`soundstorm.train.memory_plan`).
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from soundstorm._checks import frame_mask
from soundstorm.model import SoundStorm, SoundStormConfig
from soundstorm.sampler import ResolvedSchedule, SamplerConfig, decode
from soundstorm.train.memory_plan import meta_model

GiB = 2**30
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int8": torch.float32}


# ---------------------------------------------------------------------- counting live tensors
class LiveTensorBytes(TorchDispatchMode):
    """While active, ``live`` is the bytes of tensor storages created inside it and still alive, and
    ``peak`` its high-water mark. Works on any device (``meta`` for shapes only); views share their
    base's storage and count once; a storage is forgotten when its last tensor is freed."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._storages: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._track(tensor)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata  # the C++ storage's address: the same for every view of it
        if key in self._storages:
            return
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)

        def freed(_, key=key, size=size):
            self.live -= size
            self._storages.pop(key, None)

        self._storages[key] = weakref.ref(storage, freed)


def traced_peak(fn: Callable[[], object]) -> int:
    """Peak bytes of live tensors while ``fn()`` runs (its result is dropped before returning)."""
    with LiveTensorBytes() as tracker:
        result = fn()
        del result
    return tracker.peak


# ---------------------------------------------------------------------- the estimate
@dataclass
class MemoryEstimate:
    """Bytes of a generation's parts (see the module docstring) and the shapes they were made for."""

    weights: int
    activations: int  # peak of one sampler call (one window), traced on the meta device
    buffers: int  # whole-clip codes and ids kept across windows
    decode: int  # the codec's decode of the whole clip (0: not part of the run)
    batch_size: int
    frames_per_call: int  # codec frames of one sampler call (a window, or the whole clip)
    num_frames: int  # codec frames of the whole clip
    attention_scores: bool

    def pools(self, device_type: str) -> dict[str, int]:
        """Bytes needed per memory pool: ``{"host": ...}`` on the CPU, ``{"device": ..., "host": ...}`` else."""
        if device_type == "cpu":
            return {"host": self.weights + self.buffers + max(self.activations, self.decode)}
        return {"device": self.weights + self.activations, "host": self.buffers + self.decode}

    def describe(self, device_type: str) -> str:
        parts = [f"weights {_gib(self.weights)}",
                 f"activations of one sampler call over {self.frames_per_call} frames × batch {self.batch_size} "
                 f"{_gib(self.activations)}" + (" (with [B, H, T, T] attention scores)" if self.attention_scores
                                                 else "")]
        if self.buffers:
            parts.append(f"whole-clip codes {_gib(self.buffers)}")
        if self.decode:
            parts.append(f"codec decode of {self.num_frames} frames {_gib(self.decode)}")
        return ", ".join(parts)


def _gib(size: int) -> str:
    return f"{size / GiB:.2f} GiB"


def weights_bytes(config: SoundStormConfig, dtype: str = "float32") -> int:
    """Bytes of the model's weights as generation holds them (``dtype``: float32, bfloat16 or float16
    autocast, int8); counted on the meta device."""
    with torch.device("meta"):
        model = SoundStorm(config)
    total = sum(p.numel() * 4 for p in model.parameters())
    if dtype == "int8":  # the backbone's linear layers (soundstorm.quantize): int8 weights, per-channel scale + zero
        for module in model.backbone.modules():
            if isinstance(module, nn.Linear):
                total += module.weight.numel() * (1 - 4) + module.out_features * 16
    elif dtype in ("bfloat16", "float16"):  # autocast's cached low-precision copies of linear/conv weights
        total += sum(p.numel() * 2 for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d))
                     for p in m.parameters(recurse=False))
    return total


def _attention_kernel(scores: bool):
    """A stand-in attention kernel for the meta trace: the output, and on the math path the two
    ``[B, H, T, T]`` tensors it holds at once (scores, then their softmax)."""

    def kernel(q_BNTH, k_BNTH, v_BNTH, attend_B11T, dropout_p):
        if scores:
            scores_BNTT = torch.empty(q_BNTH.shape[:-1] + (k_BNTH.shape[-2],), dtype=q_BNTH.dtype, device=q_BNTH.device)
            probs_BNTT = torch.empty_like(scores_BNTT)
            del scores_BNTT, probs_BNTT
        return torch.empty(q_BNTH.shape, dtype=q_BNTH.dtype, device=q_BNTH.device)

    return kernel


def _short_schedule(schedule: ResolvedSchedule) -> ResolvedSchedule:
    """A schedule with every kind of iteration of ``schedule`` once, on two levels: the first level
    (a sampling iteration when it has several, then its greedy one) and the last (greedy, or
    minimum-Bayes-risk). Each iteration's tensors have the same shapes whichever level it decodes."""
    last = len(schedule.steps) - 1
    mbr = None if schedule.mbr_first_index is None else (0 if schedule.mbr_first_index == 0 else 1)
    return dataclasses.replace(schedule, steps=(min(schedule.steps[0], 2), min(schedule.steps[last], 2)),
                               temperatures=(schedule.temperatures[0], schedule.temperatures[last]),
                               mbr_first_index=mbr)


def activation_bytes(config: SoundStormConfig, batch_size: int, num_frames: int, sampler: SamplerConfig | None = None,
                     dtype: str = "float32", attention_scores: bool = False, codebook_dim: int = 8) -> int:
    """Peak bytes of live tensors in one call of the sampler at ``[batch_size, num_frames]``, run on the
    meta device (see the module docstring); ``codebook_dim``: the codec vectors' width, for
    ``sampler.mbr_from_level``."""
    if num_frames % config.semantic_upsample:
        raise ValueError(f"num_frames={num_frames} must be a multiple of semantic_upsample={config.semantic_upsample}")
    short_schedule = _short_schedule((sampler or SamplerConfig()).resolve(config.num_levels))
    model = meta_model(config, DTYPES[dtype]).eval()
    model.backbone.configure(attention=_attention_kernel(attention_scores))
    meta = torch.device("meta")

    def one_call():
        semantic_BS = torch.zeros(batch_size, num_frames // config.semantic_upsample, dtype=torch.long, device=meta)
        codes_BQT = torch.full((batch_size, config.num_levels, num_frames), config.mask_id, dtype=torch.long,
                               device=meta)
        valid_BT = frame_mask(None, batch_size, num_frames, meta)
        semantic_BTD = model.embed_semantic(semantic_BS)
        codebooks_QVD = None
        if short_schedule.mbr_first_index is not None:
            codebooks_QVD = torch.zeros(config.num_levels, config.codebook_size, codebook_dim, device=meta)

        def logits_fn(codes, level):
            return model(codes, semantic_BS, None, level=level, validate=False, semantic_embedding=semantic_BTD)

        seed = torch.zeros((), dtype=torch.long, device=meta)
        return decode(logits_fn, codes_BQT, valid_BT, short_schedule, seed, config.mask_id, None, codebooks_QVD)

    with torch.no_grad():
        return traced_peak(one_call)


def decode_bytes(decode_fn: Callable[[int], object], num_frames: int, probe_frames: tuple[int, int] = (100, 200)) -> int:
    """Peak tensor bytes of ``decode_fn(frames)`` (a codec decoding that many frames) at ``num_frames``,
    extrapolated from two short real runs: a fixed cost plus a cost per frame."""
    short, long = probe_frames
    with torch.no_grad():
        peak_short, peak_long = traced_peak(lambda: decode_fn(short)), traced_peak(lambda: decode_fn(long))
    per_frame = max(peak_long - peak_short, 0) / (long - short)
    return int(max(peak_short - per_frame * short, 0) + per_frame * num_frames)


def codec_decode_fn(codec, batch_size: int = 1) -> Callable[[int], object]:
    """``frames → codec.decode(codes [batch, Q, frames])`` on valid codes (zeros), for :func:`decode_bytes`."""
    return lambda frames: codec.decode(torch.zeros(batch_size, codec.num_levels, frames, dtype=torch.long))


def estimate_generation(config: SoundStormConfig, *, batch_size: int, num_frames: int,
                        window_frames: int | None = None, sampler: SamplerConfig | None = None,
                        dtype: str = "float32", attention_scores: bool = False,
                        decode_fn: Callable[[int], object] | None = None, codebook_dim: int = 8) -> MemoryEstimate:
    """The peak memory of generating ``num_frames`` codec frames for ``batch_size`` sequences (see the
    module docstring): in one sampler call, or in windows of ``window_frames`` (:mod:`soundstorm.longform`,
    batch 1); ``decode_fn``: the codec's decode (:func:`codec_decode_fn`), included when given."""
    up = config.semantic_upsample
    per_call = num_frames if window_frames is None else min(window_frames, num_frames)
    per_call = max(up, -(-per_call // up) * up)
    buffers = 0
    if window_frames is not None:  # longform: whole-clip codes (and their int64 copy) and semantic ids
        buffers = batch_size * (2 * config.num_levels * num_frames * 8 + num_frames // up * 8)
    return MemoryEstimate(
        weights=weights_bytes(config, dtype),
        activations=activation_bytes(config, batch_size, per_call, sampler, dtype, attention_scores, codebook_dim),
        buffers=buffers, decode=0 if decode_fn is None else decode_bytes(decode_fn, num_frames),
        batch_size=batch_size, frames_per_call=per_call, num_frames=num_frames, attention_scores=attention_scores)


# ---------------------------------------------------------------------- what the machine has
def _cgroup_available() -> int | None:
    """Bytes the process's cgroup (v2) still allows, where it sets a limit."""
    try:
        relative = next(line.split("::", 1)[1].strip() for line in Path("/proc/self/cgroup").read_text().splitlines()
                        if line.startswith("0::"))
        folder = Path("/sys/fs/cgroup") / relative.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((folder / "memory.current").read_text())
    except (OSError, StopIteration, ValueError):
        return None


def host_available() -> tuple[int, str]:
    """``(bytes, where the figure comes from)`` of RAM a new allocation can get: ``MemAvailable`` of
    ``/proc/meminfo`` (free memory plus what the kernel can reclaim), else ``os.sysconf`` free pages;
    lowered to the cgroup's remaining limit inside a container that sets one."""
    found, source = None, ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found, source = int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError):
        pass
    if found is None:
        found, source = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free pages (os.sysconf)"
    limit = _cgroup_available()
    if limit is not None and limit < found:
        found, source = limit, "the cgroup's memory.max less memory.current"
    return found, source


def available_memory(device: torch.device) -> dict[str, tuple[int, str]]:
    """Per pool (as :meth:`MemoryEstimate.pools`), ``(bytes available, source)``: host RAM, and on CUDA the
    device's free memory (``torch.cuda.mem_get_info``). Other devices (XLA) report no figure."""
    pools = {"host": host_available()}
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        pools["device"] = (int(free), f"free memory of {device} (torch.cuda.mem_get_info)")
    return pools


def check_memory(estimate: MemoryEstimate, device: torch.device, what: str, advice: str,
                 available: dict[str, tuple[int, str]] | None = None) -> str:
    """Refuse (ValueError, both numbers and ``advice``: what to change) a run whose estimated peak exceeds
    what a pool has; return a one-line summary to print otherwise. ``what`` names the run."""
    available = available_memory(device) if available is None else available
    needed = estimate.pools(device.type)
    summary = []
    for pool, size in needed.items():
        if pool not in available:
            continue
        have, source = available[pool]
        name = "host RAM" if pool == "host" else str(device)
        if size > have:
            raise ValueError(f"{what} needs an estimated {_gib(size)} of {name} ({estimate.describe(device.type)}), "
                             f"but {_gib(have)} is available ({source}); {advice}")
        summary.append(f"{_gib(size)} of {_gib(have)} {name} available ({size / max(have, 1):.0%})")
    return f"memory: estimated peak {', '.join(summary) or 'not checked on this device'} " \
           f"({estimate.describe(device.type)})"
