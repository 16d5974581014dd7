"""Int8 CPU inference (soundstorm.quantize): close to fp32, same decoding, refused where it does not apply."""

from __future__ import annotations

import pickle

import pytest
import torch
from _cli import run_python

from soundstorm import SamplerConfig, SoundStorm, SoundStormConfig, generate
from soundstorm.backends import get_backend
from soundstorm.evaluation.int8 import compare_int8
from soundstorm.quantize import is_quantized, quantize_int8, weights_bytes

CONFIG = dict(dim=64, heads=4, ff_dim=256, depth=2, codebook_size=64)


def tiny_model(seed=0) -> SoundStorm:
    torch.manual_seed(seed)
    return SoundStorm(SoundStormConfig.tiny(**CONFIG)).eval()


def inputs(batch=2, frames=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 65, (batch, 4, frames), generator=g), torch.randint(0, 16, (batch, frames // 2), generator=g))


def relative_error(a, b) -> float:
    return float((a - b).norm() / b.norm())


@torch.no_grad()
def test_int8_logits_are_close_to_fp32_and_linear_layers_are_int8():
    model = tiny_model()
    codes_BQT, semantic_BS = inputs()
    lengths_B = torch.tensor([40, 30])
    ref_BQTV = model(codes_BQT, semantic_BS, lengths_B)
    ref_BTV = model(codes_BQT, semantic_BS, lengths_B, level=2)
    num_linear = sum(isinstance(m, torch.nn.Linear) for m in model.backbone.modules())
    fp32_bytes = weights_bytes(model)
    quantized = quantize_int8(model)
    assert quantized is model and is_quantized(model) and not model.training
    assert not any(isinstance(m, torch.nn.Linear) for m in model.backbone.modules())
    assert num_linear == 2 * 8  # per block: 2 × 2 feed-forward, qkv, out, 2 pointwise
    out_BQTV = model(codes_BQT, semantic_BS, lengths_B)
    out_BTV = model(codes_BQT, semantic_BS, lengths_B, level=2)
    assert 0 < relative_error(out_BQTV, ref_BQTV) < 0.05
    assert 0 < relative_error(out_BTV, ref_BTV) < 0.05
    assert (out_BTV.argmax(-1) == ref_BTV.argmax(-1)).float().mean() > 0.85
    assert weights_bytes(model) < 0.5 * fp32_bytes  # int8 linear weights: a quarter of their fp32 size


@torch.no_grad()
def test_int8_generation_makes_the_same_passes_and_keeps_the_prompt():
    model = tiny_model()
    _, semantic_BS = inputs(batch=1, frames=40)
    prompt_BQT = inputs(batch=1, frames=10, seed=3)[0].clamp(max=63)
    config = SamplerConfig(steps=(4, 2, 1, 1))
    calls = []

    def run(member):
        calls.clear()
        handle = member.register_forward_hook(lambda *_: calls.append(1))
        codes_BQT = generate(member, semantic_BS, prompt=prompt_BQT, config=config,
                             generator=torch.Generator().manual_seed(0))
        handle.remove()
        return codes_BQT, len(calls)

    ref_BQT, ref_passes = run(model)
    out_BQT, passes = run(quantize_int8(model))
    assert passes == ref_passes == 8
    assert out_BQT.shape == ref_BQT.shape == (1, 4, 40)
    assert torch.equal(out_BQT[:, :, :10], prompt_BQT) and int(out_BQT.max()) < 64


def test_save_load_quantise_without_pickle(tmp_path, monkeypatch):
    model = tiny_model()
    model.save_pretrained(tmp_path / "m")

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling is not allowed")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = SoundStorm.from_pretrained(tmp_path / "m", dtype="int8")
    assert is_quantized(loaded) and not loaded.training
    codes_BQT, semantic_BS = inputs()
    with torch.no_grad():
        expected = quantize_int8(tiny_model())(codes_BQT, semantic_BS, level=0)
        assert torch.equal(loaded(codes_BQT, semantic_BS, level=0), expected)  # quantising is deterministic
    with pytest.raises(ValueError, match="int8 quantised layers.*float32"):
        loaded.save_pretrained(tmp_path / "q")
    with pytest.raises(ValueError, match="dtype='int4' is not supported"):
        SoundStorm.from_pretrained(tmp_path / "m", dtype="int4")


def test_quantising_hands_the_fp32_weights_memory_back():
    from soundstorm.backends.cpu import _proc_status_bytes

    if _proc_status_bytes("VmRSS") is None:
        pytest.skip("needs /proc/self/status (Linux)")
    block = torch.ones(2**21)
    del block  # freeing an 8 MB block makes glibc serve layer-sized blocks from the heap
    torch.manual_seed(0)
    model = SoundStorm(SoundStormConfig.tiny(dim=512, heads=4, ff_dim=2048, depth=4)).eval()
    linear_bytes = sum(p.numel() * 4 for m in model.backbone.modules() if isinstance(m, torch.nn.Linear)
                       for p in m.parameters())
    built = _proc_status_bytes("VmRSS")
    quantize_int8(model)
    assert _proc_status_bytes("VmRSS") < built - 0.5 * linear_bytes  # int8 is a quarter: ≥ 0.75 freed


@pytest.mark.parametrize("name, dtype", [("cuda", "int8"), ("cpu", "bfloat16")])
def test_backends_refuse_a_dtype_they_do_not_support(name, dtype):
    with pytest.raises(ValueError, match=rf"backend\.options\.dtype='{dtype}' is not supported by the {name} backend"):
        get_backend(name, dtype=dtype)


@pytest.mark.xla
def test_xla_backend_refuses_int8():
    # a child process: importing torch_xla here would leak into tests that check it stays unimported
    code = ("from soundstorm.backends import get_backend\n"
            "try:\n    get_backend('xla', dtype='int8')\nexcept ValueError as err:\n    print(err)")
    result = run_python(["-c", code], env={"PJRT_DEVICE": "CPU"}, check=True)
    assert "backend.options.dtype='int8' is not supported by the xla backend" in result.stdout


def test_training_refuses_int8():
    from soundstorm.train.loop import Trainer, TrainerConfig

    with pytest.raises(ValueError, match=r"backend\.options\.dtype='int8' on the cpu backend is for inference only"):
        Trainer(tiny_model(), get_backend("cpu", dtype="int8"), None, None, TrainerConfig(), "unused", None)
    with pytest.raises(ValueError, match="int8 quantised layers"):
        Trainer(quantize_int8(tiny_model()), get_backend("cpu"), None, None, TrainerConfig(), "unused", None)


def test_cpu_backend_prepares_the_model_for_its_dtype():
    assert not is_quantized(get_backend("cpu").prepare_inference_model(tiny_model()))
    int8 = get_backend("cpu", dtype="int8")
    assert is_quantized(int8.prepare_inference_model(tiny_model())) and int8.describe()["dtype"] == "int8"


class _ToyCodec:
    """Decodes codes to a sine per frame (enough for mel distances)."""

    sample_rate, frame_rate = 16000, 50

    def decode(self, codes_BQT):
        hop = self.sample_rate // self.frame_rate
        freq_BT = 100.0 + 20.0 * codes_BQT[:, 0].float()
        phase_BN = torch.arange(hop) / self.sample_rate * 2 * torch.pi
        return torch.sin(freq_BT[:, :, None] * phase_BN).flatten(1)


def test_compare_int8_reports_agreement_per_level_and_both_models():
    model = tiny_model()
    g = torch.Generator().manual_seed(5)
    utterances = [{"codes": torch.randint(0, 64, (4, 40), generator=g), "semantic": torch.randint(0, 16, (20,), generator=g)}
                  for _ in range(2)]
    result = compare_int8(model, _ToyCodec(), SamplerConfig(steps=(1, 1, 1, 1)), utterances, window_frames=40,
                          prompt_frames=10, max_utterances=2)
    assert not is_quantized(model)  # the float32 model is left as it was
    assert result["num_utterances"] == 2 and len(result["agreement_per_level"]) == 4
    assert all(0.5 < a <= 1.0 for a in result["agreement_per_level"])  # greedy, logits within a few %
    for name in ("float32", "int8"):
        assert len(result[name]["accuracy_per_level"]) == 4 and result[name]["mel_distance"] >= 0
    assert result["mel_distance_int8_minus_float32"] == pytest.approx(
        result["int8"]["mel_distance"] - result["float32"]["mel_distance"])
