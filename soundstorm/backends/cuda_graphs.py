"""CUDA graphs for the sampler's forward pass: one capture per input shape, replayed ever after.

Every sampler pass of a clip has the same shapes, and so does every clip of the same length, so
one graph per shape serves a whole benchmark. :class:`GraphedModel` wraps a model (eager or
``torch.compile``-d) and is passed to :func:`soundstorm.sampler.generate` in its place:

* the first call with a new *shape key* (shapes, dtypes and devices of every tensor input, and the
  autocast state) copies the inputs into static buffers, warms the model up and captures one
  forward into a graph; that call and every later one with the same key copies its inputs into
  those buffers and **replays** the graph. ``num_replays`` counts replays (one per forward pass,
  capture call included), ``num_captures`` counts captures;
* all of the model's inputs are static buffers (codes, level, semantic ids, lengths and the
  precomputed semantic embedding), so a graph captured during one clip is valid for the next;
* capture runs under autocast with its weight cache **off** (``cache_enabled=False``): a cached
  bf16 copy of a weight lives only as long as the autocast block that made it, while the graph
  keeps reading its address;
* the returned logits are the graph's static output: valid until the next call (the sampler
  consumes them within the iteration).

``capture`` is pluggable (``capture(fn) -> (replay, static_output)``): :func:`capture_cuda_graph`
on a GPU; tests on the CPU pass a fake that re-runs ``fn`` on replay.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

Capture = Callable[[Callable[[], torch.Tensor]], tuple[Callable[[], None], torch.Tensor]]


def capture_cuda_graph(fn: Callable[[], torch.Tensor], num_warmup: int = 2) -> tuple[Callable[[], None], torch.Tensor]:
    """Warm ``fn`` up on a side stream, capture one call into a ``torch.cuda.CUDAGraph``.

    Returns ``(replay, static_output)``: ``replay()`` re-runs the captured kernels, which read the
    tensors ``fn`` read and write ``static_output``.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(num_warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_output = fn()
    return graph.replay, static_output


def _autocast_without_cache(device_type: str):
    """The autocast state now, with the weight cache off (a no-op when autocast is off)."""
    if not torch.is_autocast_enabled(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.get_autocast_dtype(device_type), cache_enabled=False)


def _key_of(tensors: dict) -> tuple:
    """What a graph is only valid for: every input's shape, dtype and device, and the autocast state."""
    def describe(x):
        return None if x is None else (tuple(x.shape), x.dtype, str(x.device))

    device_type = tensors["codes"].device.type
    autocast = (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
    return tuple((name, describe(x)) for name, x in tensors.items()) + (autocast,)


class _Graph:
    """One captured forward: its static input buffers, its replay and its static output."""

    def __init__(self, model, tensors: dict, capture: Capture):
        self.buffers = {name: None if x is None else x.clone() for name, x in tensors.items()}
        b = self.buffers

        def forward():
            return model(b["codes"], b["semantic"], b["lengths"], level=b["level"], validate=False,
                         semantic_embedding=b["semantic_embedding"])

        with _autocast_without_cache(b["codes"].device.type):
            self.replay, self.output = capture(forward)

    def __call__(self, tensors: dict) -> torch.Tensor:
        for name, x in tensors.items():
            if x is not None:
                self.buffers[name].copy_(x)
        self.replay()
        return self.output


class GraphedModel(nn.Module):
    """``model`` whose level-wise forward runs as a replayed graph (see the module docstring)."""

    def __init__(self, model: nn.Module, capture: Capture = capture_cuda_graph):
        super().__init__()
        self.model = model
        self.capture = capture
        self._graphs: dict[tuple, _Graph] = {}
        self.num_captures = 0
        self.num_replays = 0

    @property
    def config(self):
        return self.model.config

    def embed_semantic(self, semantic_BS: torch.Tensor) -> torch.Tensor:
        return self.model.embed_semantic(semantic_BS)

    def forward(self, codes, semantic, lengths=None, *, level, validate: bool = True,
                semantic_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, T, V]`` of ``level`` (a 0-d or ``[B]`` long tensor), by graph replay."""
        if self.model.training:
            raise ValueError("GraphedModel replays inference graphs; call .eval() first (training is not graphed)")
        if not isinstance(level, torch.Tensor):
            raise ValueError(f"GraphedModel needs level as a long tensor (its value changes between replays), "
                             f"got {type(level).__name__}")
        if validate:  # reads values back to the host: before, never inside, a capture
            codes, semantic, lengths = self.model.check_inputs(codes, semantic, lengths)
        tensors = {"codes": codes, "semantic": semantic, "lengths": lengths, "level": level,
                   "semantic_embedding": semantic_embedding}
        key = _key_of(tensors)
        if key not in self._graphs:
            self._graphs[key] = _Graph(self.model, tensors, self.capture)
            self.num_captures += 1
        self.num_replays += 1
        return self._graphs[key](tensors)
