"""CUDA: bf16 autocast, SDPA, torch.compile and CUDA graphs (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from soundstorm import SamplerConfig, SoundStorm, SoundStormConfig, generate

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def tiny(**overrides):
    torch.manual_seed(0)
    return SoundStorm(SoundStormConfig.tiny(**overrides)).cuda().eval()


def test_backend_bf16_autocast_and_memory():
    from soundstorm.backends import get_backend

    backend = get_backend("cuda")
    assert backend.device.type == "cuda" and backend.autocast_dtype == torch.bfloat16
    backend.reset_peak_memory()
    model = tiny()
    semantic_BS = torch.randint(0, 16, (2, 8), device="cuda")
    with backend.autocast():
        logits_BTV = model(torch.full((2, 4, 16), 32, device="cuda"), semantic_BS, level=0)
    backend.sync()
    # documented: the head adds its fp32 bias after the bf16 matmul, so logits come back float32
    assert logits_BTV.dtype == torch.float32 and torch.isfinite(logits_BTV).all()
    assert backend.peak_memory_bytes() > 0


def test_generation_matches_cpu_tokens_in_fp32():
    model = tiny()
    cpu_model = SoundStorm(model.config)
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    semantic_BS = torch.randint(0, 16, (2, 8))
    out = generate(model, semantic_BS, generator=torch.Generator().manual_seed(0))
    ref = generate(cpu_model.eval(), semantic_BS, generator=torch.Generator().manual_seed(0))
    # TF32 matmuls may flip near-ties: require near-total agreement, not bit equality
    assert (out.cpu() == ref).float().mean() > 0.95


def test_cuda_graphs_replay_gives_the_eager_tokens_across_clips():
    from soundstorm.backends.cuda_graphs import GraphedModel

    model = tiny()
    graphed = GraphedModel(model)
    config = SamplerConfig(steps=(4, 1, 1, 1))
    for seed in (0, 1):  # the second clip replays the first clip's graph on its own inputs
        semantic_BS = torch.randint(0, 16, (2, 8), generator=torch.Generator().manual_seed(seed))
        eager = generate(model, semantic_BS, config=config, generator=torch.Generator().manual_seed(seed))
        replayed = generate(graphed, semantic_BS, config=config, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(eager, replayed)
    assert (graphed.num_captures, graphed.num_replays) == (1, 2 * 7)


def test_cuda_graphs_under_bf16_autocast_capture_once_and_agree_with_eager():
    from soundstorm.backends.cuda_graphs import GraphedModel

    model = tiny()
    graphed = GraphedModel(model)
    semantic_BS = torch.randint(0, 16, (2, 8))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = generate(model, semantic_BS, generator=torch.Generator().manual_seed(0))
        replayed = generate(graphed, semantic_BS, generator=torch.Generator().manual_seed(0))
        again = generate(graphed, semantic_BS, generator=torch.Generator().manual_seed(0))
    assert torch.equal(replayed, again) and graphed.num_captures == 1
    assert (eager == replayed).float().mean() > 0.95  # same kernels; allow a flipped near-tie


def test_compiled_and_graphed_together():
    from soundstorm.backends.cuda_graphs import GraphedModel

    model = tiny()
    graphed = GraphedModel(torch.compile(model, dynamic=False))
    semantic_BS = torch.randint(0, 16, (1, 8))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        codes_BQT = generate(graphed, semantic_BS, generator=torch.Generator().manual_seed(0))
    assert codes_BQT.shape == (1, 4, 16) and (codes_BQT < 32).all() and graphed.num_captures == 1


def test_torch_compile_generates_the_same_shape():
    model = tiny()
    compiled = torch.compile(model, dynamic=False)
    semantic_BS = torch.randint(0, 16, (1, 8))
    codes_BQT = generate(compiled, semantic_BS, generator=torch.Generator().manual_seed(0))
    assert codes_BQT.shape == (1, 4, 16) and (codes_BQT < 32).all()


def test_bench_on_cuda_with_graphs(tmp_path):
    from soundstorm.bench import BenchConfig, run_bench

    result = run_bench(BenchConfig(model=SoundStormConfig.tiny(), duration_s=1, runs=1, backend="cuda", dtype="bfloat16",
                                   cuda_graphs=True, matmul_size=1024, output_json=None))
    assert result["forward_passes"] == 19 and result["peak_memory_bytes"] > 0
    assert result["cuda_graphs"]["captures_in_timed_runs"] == 0 and result["cuda_graphs"]["captures"] == 1


def test_bench_train_step_on_cuda():
    from soundstorm.bench import BenchConfig, run_bench

    result = run_bench(BenchConfig(mode="train", model=SoundStormConfig.tiny(), duration_s=1, runs=2, backend="cuda",
                                   dtype="bfloat16", matmul_size=1024, output_json=None))
    assert result["tokens_per_s"] > 0 and result["peak_memory_bytes"] > 0 and result["mfu"] > 0
