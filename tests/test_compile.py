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
    calls = []  # the sampler's own per-pass function, taken from generate
    generate(model, torch.randint(0, 16, (2, 8)), config=SamplerConfig(steps=(1, 1, 1, 1)),
             wrap_logits=lambda logits_fn, codes_BQT: calls.append((logits_fn, codes_BQT.clone())) or logits_fn)
    logits_fn, codes_BQT = calls[0]
    with torch.no_grad():  # as in generate: no autograd, the rotary out= branch in eager
        explained = dynamo.explain(logits_fn)(codes_BQT, torch.tensor(1))
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


def test_forward_with_its_checks_is_one_graph_and_still_refuses_bad_ids_in_eager():
    """The public forward (validate=True) reads no value back under a compiler: no graph break, no sync."""
    model = tiny_model()
    codes_BQT, semantic_BS = torch.randint(0, 32, (2, 4, 20)), torch.randint(0, 16, (2, 10))
    with torch.no_grad():
        whole = dynamo.explain(model)(codes_BQT, semantic_BS)
        one_level = dynamo.explain(model)(codes_BQT, semantic_BS, torch.tensor([20, 14]), level=torch.tensor(2))
    assert (whole.graph_count, whole.graph_break_count) == (1, 0), whole.break_reasons
    assert (one_level.graph_count, one_level.graph_break_count) == (1, 0), one_level.break_reasons
    import pytest

    with pytest.raises(ValueError, match=r"codes holds ids in \[99, 99\]"):  # eager CPU: values are free to read
        model(torch.full((2, 4, 20), 99), semantic_BS)
    with pytest.raises(ValueError, match="lengths must lie in"):
        model(codes_BQT, semantic_BS, torch.tensor([21, 3]))
