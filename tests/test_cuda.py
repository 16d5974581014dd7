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
    assert logits_BTV.dtype == torch.bfloat16 and torch.isfinite(logits_BTV.float()).all()
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


def test_cuda_graphs_replay_gives_the_eager_tokens():
    from soundstorm.backends.cuda_graphs import graphed_logits_fn

    model = tiny()
    semantic_BS = torch.randint(0, 16, (2, 8))
    config = SamplerConfig(steps=(4, 1, 1, 1))
    eager = generate(model, semantic_BS, config=config, generator=torch.Generator().manual_seed(0))
    graphed = generate(model, semantic_BS, config=config, generator=torch.Generator().manual_seed(0),
                       wrap_logits=graphed_logits_fn)
    assert torch.equal(eager, graphed)


def test_torch_compile_generates_the_same_shape():
    model = tiny()
    compiled = torch.compile(model, dynamic=False)
    semantic_BS = torch.randint(0, 16, (1, 8))
    codes_BQT = generate(compiled, semantic_BS, generator=torch.Generator().manual_seed(0))
    assert codes_BQT.shape == (1, 4, 16) and (codes_BQT < 32).all()


def test_bench_on_cuda_with_graphs(tmp_path):
    from soundstorm.bench import BenchConfig, run_bench

    result = run_bench(BenchConfig(model_preset="tiny", duration_s=1, runs=1, backend="cuda", dtype="bfloat16",
                                   cuda_graphs=True, matmul_size=1024, output_json=None))
    assert result["forward_passes"] == 19 and result["peak_memory_bytes"] > 0
