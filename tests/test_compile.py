"""torch.compile of the inference path: one graph, no break, no recompile for a second clip (CPU)."""

from __future__ import annotations

import torch
import torch._dynamo as dynamo

from soundstorm import SamplerConfig, SoundStorm, SoundStormConfig, generate


def tiny_model():
    torch.manual_seed(0)
    return SoundStorm(SoundStormConfig.tiny()).eval()


def test_the_samplers_model_call_is_one_graph_without_breaks():
    model = tiny_model()
    codes_BQT = torch.full((2, 4, 16), 32)
    semantic_BS = torch.randint(0, 16, (2, 8))
    with torch.no_grad():  # the sampler's path: no autograd, the rotary out= branch in eager
        semantic_BTD = model.embed_semantic(semantic_BS)
        explained = dynamo.explain(model)(codes_BQT, semantic_BS, None, level=torch.tensor(1), validate=False,
                                          semantic_embedding=semantic_BTD)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_one_compile_serves_every_pass_and_a_second_clip_of_the_same_length():
    dynamo.reset()
    model = tiny_model()  # fresh: its rotary tables were never computed before compiling
    compiled = torch.compile(model, backend="eager", dynamic=False)
    config = SamplerConfig(steps=(3, 1, 1, 1))
    first_BS, second_BS = torch.randint(0, 16, (1, 8)), torch.randint(0, 16, (1, 8))
    graphs_before = dynamo.utils.counters["stats"]["unique_graphs"]
    with dynamo.config.patch(error_on_recompile=True):  # any recompile raises
        generate(compiled, first_BS, config=config, generator=torch.Generator().manual_seed(0))
        codes_BQT = generate(compiled, second_BS, config=config, generator=torch.Generator().manual_seed(1))
    assert dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before == 1
    eager_BQT = generate(model, second_BS, config=config, generator=torch.Generator().manual_seed(1))
    assert torch.equal(codes_BQT, eager_BQT)


def test_rotary_tables_under_compile_equal_the_cached_eager_tables():
    from soundstorm.conformer import RotaryEmbedding

    rotary = RotaryEmbedding(8)
    eager_cos_TH, eager_sin_TH = rotary.tables(12, torch.device("cpu"), torch.float32)
    compiled_tables = torch.compile(lambda: rotary.tables(12, torch.device("cpu"), torch.float32), backend="eager")
    compiled_cos_TH, compiled_sin_TH = compiled_tables()
    assert torch.equal(eager_cos_TH, compiled_cos_TH) and torch.equal(eager_sin_TH, compiled_sin_TH)
