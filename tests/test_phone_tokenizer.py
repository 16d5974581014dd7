"""PhoneTokenizer: learns phones from alignments, frames line up with num_frames, padding-invariant ids,
safetensors round trip, and clear errors."""

from __future__ import annotations

import pytest
import torch

from conftest import single_thread
from soundstorm.builders import build_semantic
from soundstorm.semantic import PhoneTokenizer, PhoneTokenizerConfig, load_tokenizer
from soundstorm.semantic.phones import phone_labels

RATE = 16_000


def _utterance(seed: int) -> tuple[torch.Tensor, list]:
    """Alternating "phones": a harmonic tone (pitch varies per utterance) and white noise, random lengths."""
    g = torch.Generator().manual_seed(seed)
    pitch = 100.0 + 150.0 * torch.rand(1, generator=g).item()
    pieces, phones, t = [], [], 0.0
    for k in range(8):
        seconds = 0.08 + 0.12 * torch.rand(1, generator=g).item()
        n = int(seconds * RATE)
        if k % 2 == 0:
            time_N = torch.arange(n) / RATE
            pieces.append(sum(torch.sin(2 * torch.pi * pitch * h * time_N) / h for h in range(1, 6)) * 0.3)
            name = "aa"
        else:
            pieces.append(torch.randn(n, generator=g) * 0.1)
            name = "s"
        t += n / RATE
        phones.append([name, t])
    return torch.cat(pieces).float(), phones


@pytest.fixture(scope="module")
def fitted():
    data = [_utterance(s) for s in range(12)]
    with single_thread():
        tokenizer = PhoneTokenizer(PhoneTokenizerConfig(frame_rate=50.0, vocab_size=8, hidden=32, context=2,
                                                        fit_epochs=4)).fit([w for w, _ in data[:10]],
                                                                           [p for _, p in data[:10]])
    return tokenizer, data


def test_learns_the_aligned_phones(fitted):
    tokenizer, data = fitted
    assert tokenizer.config.phones == ["aa", "s"]
    correct = total = 0
    for wav_N, phones in data[10:]:  # unseen utterances
        ids_S = tokenizer.tokenize(wav_N[None])[0]
        assert ids_S.shape[0] == tokenizer.num_frames(wav_N.shape[0])
        labels_F = phone_labels(phones, ids_S.shape[0] * 2, {"aa": 0, "s": 1})[1::2]  # token-frame centres
        correct += int((ids_S == labels_F).sum())
        total += ids_S.shape[0]
    assert correct / total > 0.85
    assert int(ids_S.max()) < 2  # unused ids of the vocabulary are never produced


def test_padding_does_not_change_ids_and_round_trip(fitted, tmp_path):
    tokenizer, data = fitted
    a, b = data[10][0], data[11][0]
    batch = torch.nn.utils.rnn.pad_sequence([a, b], batch_first=True)
    ids = tokenizer.tokenize(batch, lengths_B=torch.tensor([a.shape[0], b.shape[0]]))
    short = a if a.shape[0] < b.shape[0] else b
    row = 0 if short is a else 1
    alone = tokenizer.tokenize(short[None])[0]
    assert torch.equal(ids[row, : alone.shape[0]], alone)
    tokenizer.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert isinstance(loaded, PhoneTokenizer) and loaded.config.phones == ["aa", "s"]
    assert torch.equal(loaded.tokenize(batch), tokenizer.tokenize(batch))
    section = {"name": "phone_classifier", "frame_rate": 50.0, "vocab_size": 8, "hidden": 32, "context": 2,
               "pretrained_dir": str(tmp_path / "tok")}
    assert torch.equal(build_semantic(section).tokenize(batch), tokenizer.tokenize(batch))


def test_errors_name_what_is_missing():
    wav_N, phones = _utterance(0)
    with pytest.raises(ValueError, match="not fitted"):
        PhoneTokenizer().tokenize(wav_N[None])
    with pytest.raises(ValueError, match="'phones'"):
        PhoneTokenizer().fit([wav_N], None)
    with pytest.raises(ValueError, match="more than semantic vocab_size=1"):
        PhoneTokenizer(PhoneTokenizerConfig(vocab_size=1)).fit([wav_N], [phones])
    with pytest.raises(ValueError, match="frame_rate=30.0"):
        PhoneTokenizerConfig(frame_rate=30.0)
