"""CUDA graphs for the sampler: every iteration has the same shapes, so one capture replays them all.

``graphed_logits_fn(logits_fn, codes_BQT)`` warms ``logits_fn`` up on a side stream, captures one
call into a ``torch.cuda.CUDAGraph`` with static input buffers (the codes and the 0-d level) and
returns a function that copies its inputs into those buffers and replays the graph. The returned
logits tensor is the graph's static output: it is valid until the next call, which is all the
sampler needs (it consumes the logits within the iteration). Pass it as ``generate(...,
wrap_logits=graphed_logits_fn)``.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import torch


def graphed_logits_fn(logits_fn, codes_BQT: torch.Tensor, num_warmup: int = 2):
    """Capture ``logits_fn(codes_BQT, level)`` once; return a replaying function of the same signature."""
    if codes_BQT.device.type != "cuda":
        raise ValueError(f"CUDA graphs need CUDA tensors, got codes on {codes_BQT.device}")
    static_codes_BQT = codes_BQT.clone()
    static_level = torch.zeros((), dtype=torch.long, device=codes_BQT.device)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(num_warmup):
            logits_fn(static_codes_BQT, static_level)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_logits_BTV = logits_fn(static_codes_BQT, static_level)

    def replay(codes: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        static_codes_BQT.copy_(codes)
        static_level.copy_(level)
        graph.replay()
        return static_logits_BTV

    return replay
