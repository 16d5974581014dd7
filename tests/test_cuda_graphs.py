"""The CUDA fast path on the CPU: graph replays counted, one capture per shape, autocast cache off,
float16 training refused, pinned batches on CUDA. A fake stands in for ``torch.cuda.CUDAGraph``."""

from __future__ import annotations

import pytest
import torch

from soundstorm import SamplerConfig, SoundStorm, SoundStormConfig, generate
from soundstorm.backends.cpu import CPUBackend
from soundstorm.backends.cuda_graphs import GraphedModel

STEPS = (3, 1, 2, 1)


class FakeGraphs:
    """``capture(fn)`` as a CUDA graph would: record once, then every replay re-runs the recorded
    work on the *static* buffers ``fn`` reads (stale inputs would give stale logits)."""

    def __init__(self):
        self.captures, self.replays, self.cache_enabled_at_capture = 0, 0, []

    def __call__(self, fn):
        self.captures += 1
        self.cache_enabled_at_capture.append(torch.is_autocast_cache_enabled())
        static_output = fn()

        def replay():
            self.replays += 1
            static_output.copy_(fn())

        return replay, static_output


def tiny_model():
    torch.manual_seed(0)
    return SoundStorm(SoundStormConfig.tiny()).eval()


def run(model, semantic_BS, seed=0, **kwargs):
    return generate(model, semantic_BS, config=SamplerConfig(steps=STEPS), generator=torch.Generator().manual_seed(seed),
                    **kwargs)


def test_every_pass_is_a_replay_of_one_capture_and_gives_the_eager_tokens():
    model, graphs = tiny_model(), FakeGraphs()
    graphed = GraphedModel(model, graphs)
    first_BS, second_BS = torch.randint(0, 16, (2, 8)), torch.randint(0, 16, (2, 8))
    lengths_B = torch.tensor([16, 10])
    assert torch.equal(run(graphed, first_BS, lengths=lengths_B), run(model, first_BS, lengths=lengths_B))
    # a second clip of the same shape replays the first clip's graph on its own inputs
    assert torch.equal(run(graphed, second_BS, seed=1, lengths=lengths_B),
                       run(model, second_BS, seed=1, lengths=lengths_B))
    num_passes = sum(STEPS)
    assert (graphed.num_captures, graphed.num_replays) == (1, 2 * num_passes)
    assert (graphs.captures, graphs.replays) == (1, 2 * num_passes)
    run(graphed, torch.randint(0, 16, (2, 6)), lengths=torch.tensor([12, 12]))  # a new length: a new graph
    assert graphed.num_captures == graphs.captures == 2


def test_capture_runs_with_the_autocast_weight_cache_off():
    graphs = FakeGraphs()
    graphed = GraphedModel(tiny_model(), graphs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_cache_enabled()
        run(graphed, torch.randint(0, 16, (1, 8)))
        assert torch.is_autocast_cache_enabled()  # restored after the capture
    assert graphs.cache_enabled_at_capture == [False]
    run(graphed, torch.randint(0, 16, (1, 8)))  # autocast off now: a different graph
    assert graphs.captures == 2


def test_graphed_model_refuses_training_mode_and_python_levels():
    graphed = GraphedModel(tiny_model().train(), FakeGraphs())
    codes_BQT, semantic_BS = torch.full((1, 4, 16), 32), torch.randint(0, 16, (1, 8))
    with pytest.raises(ValueError, match="eval"):
        graphed(codes_BQT, semantic_BS, level=torch.tensor(0))
    with pytest.raises(ValueError, match="level"):
        graphed.eval()(codes_BQT, semantic_BS, level=0)


class FakeGraphBackend(CPUBackend):
    name = "cuda"  # what the bench checks is graph_capture; the name only shows in the JSON

    def __init__(self):
        super().__init__()
        self.graph_capture = FakeGraphs()


def test_bench_counts_every_replay_and_captures_outside_the_timed_runs(monkeypatch):
    from soundstorm.bench import BenchConfig, runner

    backend = FakeGraphBackend()
    monkeypatch.setattr(runner, "_make_backend", lambda cfg: backend)
    result = runner.run_bench(BenchConfig(model=SoundStormConfig.tiny(), duration_s=1, runs=2, warmup=1, cuda_graphs=True,
                                          matmul_size=64, output_json=None))
    num_passes = 16 + 1 + 1 + 1
    assert result["forward_passes"] == result["expected_forward_passes"] == num_passes
    assert result["forward_passes_per_run"] == [num_passes, num_passes]
    assert result["cuda_graphs"] == {"captures": 1, "replays": 3 * num_passes, "captures_in_timed_runs": 0}
    assert backend.graph_capture.replays == 3 * num_passes
    assert result["achieved_flops_per_s"] == pytest.approx(result["flops_per_pass"] * num_passes
                                                           / result["latency_s_median"])


def test_bench_refuses_cuda_graphs_without_a_graph_backend():
    from soundstorm.bench import BenchConfig, run_bench

    with pytest.raises(ValueError, match="cuda_graphs"):
        run_bench(BenchConfig(model=SoundStormConfig.tiny(), duration_s=1, runs=1, backend="cpu", cuda_graphs=True,
                              matmul_size=64, output_json=None))


def test_logits_under_autocast_are_float32():
    """The documented dtype: the head adds its fp32 bias after a low-precision matmul → float32."""
    model = tiny_model()
    codes_BQT, semantic_BS = torch.full((1, 4, 16), 32), torch.randint(0, 16, (1, 8))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(codes_BQT, semantic_BS, level=0).dtype == torch.float32
        assert model(codes_BQT, semantic_BS).dtype == torch.float32


class Float16Backend(CPUBackend):
    autocast_dtype = torch.float16


def test_training_refuses_float16_without_loss_scaling():
    from soundstorm.train.loop import Trainer, TrainerConfig

    with pytest.raises(ValueError, match="float16.*GradScaler"):
        Trainer(tiny_model(), Float16Backend(), None, None, TrainerConfig(), "unused", lambda epoch, skip: [])


class PinningBackend(CPUBackend):
    pin_memory = True


@pytest.mark.parametrize("backend_cls, pinned", [(PinningBackend, True), (CPUBackend, False)])
def test_the_loader_pins_batches_where_the_backend_asks(backend_cls, pinned):
    from _tokens import RandomTokens, collate

    from soundstorm import builders
    from soundstorm.builders import DataConfig

    dataset = RandomTokens(num_items=8)
    dataset.collate = collate
    batches = builders.build_batch_source(DataConfig(root="unused", batch_size=4), dataset, backend_cls(), 0, 32)
    assert batches(0, 0).pin_memory is pinned
