"""Evaluation pieces without data: fixed-ratio corruption, windowed long-form generation, metrics."""

import pytest
import torch

from soundstorm import SoundStorm, SoundStormConfig
from soundstorm.evaluation.metrics import load_callable, most_frequent_tokens, token_accuracy_per_level
from soundstorm.evaluation.teacher_forced import fixed_corruption, summarize, teacher_forced_sums
from soundstorm.longform import generate_windowed
from soundstorm.sampler import SamplerConfig


def test_fixed_corruption_masks_level_ratio_and_finer_levels():
    codes = torch.randint(0, 32, (2, 4, 400))
    lengths = torch.tensor([400, 300])
    c = fixed_corruption(codes, lengths, level=1, mask_ratio=0.5, generator=torch.Generator().manual_seed(0),
                         mask_id=32)
    assert torch.equal(c.inputs[:, 0], codes[:, 0])  # coarser level visible
    assert (c.inputs[0, 2:] == 32).all() and (c.inputs[1, 2:, :300] == 32).all()  # finer levels masked
    assert not c.loss_mask[1, :, 300:].any() and not c.loss_mask[:, [0, 2, 3]].any()
    assert 0.4 < c.loss_mask[0, 1].float().mean() < 0.6


def test_teacher_forced_sums_count_every_level():
    torch.manual_seed(0)
    model = SoundStorm(SoundStormConfig.tiny())
    batch = {"codes": torch.randint(0, 32, (2, 4, 8)), "semantic": torch.randint(0, 16, (2, 4)),
             "lengths": torch.tensor([8, 6])}
    sums = teacher_forced_sums(model, [batch], [1.0])
    assert sums.shape == (1, 3, 4) and torch.equal(sums[0, 2], torch.full((4,), 14.0))
    summary = summarize(sums, [1.0])["mask_1"]
    assert all(0 <= a <= 1 for a in summary["accuracy_per_level"]) and all(n > 0 for n in summary["nll_per_level"])


def test_windowed_generation_keeps_prompt_and_fills_everything():
    torch.manual_seed(0)
    model = SoundStorm(SoundStormConfig.tiny()).eval()
    semantic_S = torch.randint(0, 16, (23,))
    prompt_QT = torch.randint(0, 32, (4, 6))
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    codes_QT = generate_windowed(model, semantic_S, window_frames=16, prompt_frames=4, prompt_QT=prompt_QT,
                                 config=SamplerConfig(greedy=True), generator=torch.Generator().manual_seed(0))
    assert codes_QT.shape == (4, 46) and (codes_QT < 32).all()
    assert torch.equal(codes_QT[:, :6], prompt_QT)
    assert len(calls) == 4 * 4  # windows [0,16) [12,28) [24,40) [36,46): 4 windows × 4 greedy passes
    with pytest.raises(ValueError, match="prompt_frames"):
        generate_windowed(model, semantic_S, window_frames=16, prompt_frames=16)


def test_token_metrics_and_callables():
    ref = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    gen = torch.tensor([[1, 0, 3, 0], [5, 6, 7, 8]])
    assert token_accuracy_per_level(gen, ref) == [0.5, 1.0]
    assert token_accuracy_per_level(gen, ref, start=2) == [0.5, 1.0]
    assert most_frequent_tokens([torch.tensor([[3, 3, 1]]), torch.tensor([[1, 3]])]) == 3
    assert load_callable("math:sqrt")(4.0) == 2.0
    with pytest.raises(ValueError, match="package.module:function"):
        load_callable("math.sqrt")


def fake_transcribe(wav_N, sample_rate):
    return "hello there world"


def fake_embed(wav_N, sample_rate):
    return torch.stack([wav_N.abs().mean(), wav_N.std(), torch.tensor(1.0)])


def test_pluggable_wer_and_speaker_similarity():
    from soundstorm.evaluation.metrics import SpeakerSimilarity, WordErrorRate

    wav = torch.sin(torch.linspace(0, 100, 1600))
    from soundstorm.evaluation.asr import build_recognizer
    from soundstorm.evaluation.speaker import build_verifier

    recognizer = build_recognizer(f"{__name__}:fake_transcribe", field="evaluation.asr")
    verifier = build_verifier(f"{__name__}:fake_embed", field="evaluation.verifier")
    assert WordErrorRate(recognizer)(wav, wav, 16000, "Hello world") == pytest.approx(0.5)
    assert SpeakerSimilarity(verifier)(wav, wav, 16000, "") == pytest.approx(1.0)
    assert SpeakerSimilarity(verifier)(wav, 0.1 * wav + 0.5, 16000, "") < 1.0
    assert load_callable(f"{__name__}:fake_transcribe") is fake_transcribe


@pytest.mark.parametrize("field,value", [("max_utterances", 0), ("num_examples", -1), ("prompt_seconds", -1.0),
                                         ("window_seconds", 0.0)])
def test_generation_eval_config_names_a_bad_field(field, value):
    from soundstorm.evaluation.config import EvaluationConfig

    with pytest.raises(ValueError, match=field):
        EvaluationConfig(**{field: value})
