"""Semantic tokenizers: rate rules, MFCC and HuBERT (random weights) k-means tokenizers."""

from __future__ import annotations

import pytest
import torch

from conftest import load_corpus_wavs, requires_torchaudio, single_thread
from soundstorm.semantic import HubertKMeans, SemanticTokenizer, MFCCKMeans, MFCCKMeansConfig, align_lengths, load_tokenizer, upsample_ratio


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def wavs_16k(espeak_corpus):
    return load_corpus_wavs(espeak_corpus, 16_000)


def test_upsample_ratio():
    assert upsample_ratio(50.0, 25.0) == 2
    assert upsample_ratio(75.0, 25.0) == 3
    with pytest.raises(ValueError, match=r"75\.0 Hz.*50\.0 Hz"):
        upsample_ratio(75.0, 50.0)
    with pytest.raises(ValueError, match=r"25\.0 Hz.*50\.0 Hz"):
        upsample_ratio(25.0, 50.0)


@pytest.mark.parametrize("frames, semantic, up, expected", [
    (10, 5, 2, (10, 5)), (11, 5, 2, (10, 5)), (10, 6, 2, (10, 5)), (226, 76, 3, (225, 75)), (227, 75, 3, (225, 75)),
])
def test_align_lengths_trims_at_most_one_semantic_frame(frames, semantic, up, expected):
    kept_frames, kept_semantic = align_lengths(frames, semantic, up)
    assert (kept_frames, kept_semantic) == expected and kept_frames == kept_semantic * up


@pytest.mark.parametrize("frames, semantic, up", [(10, 7, 2), (20, 5, 2), (75, 30, 3)])
def test_align_lengths_refuses_large_mismatch(frames, semantic, up):
    with pytest.raises(ValueError, match="refusing to trim"):
        align_lengths(frames, semantic, up)


def test_mfcc_kmeans_fit_tokenize_save_load(wavs_16k, tmp_path):
    tokenizer = MFCCKMeans(MFCCKMeansConfig(vocab_size=64))
    assert tokenizer.frame_rate == 25.0
    with pytest.raises(ValueError, match="not fitted"):
        tokenizer.tokenize(wavs_16k[0][None])
    tokenizer.fit(wavs_16k[:16])
    wav_N = wavs_16k[17]
    ids_BS = tokenizer.tokenize(wav_N[None])
    assert ids_BS.shape == (1, tokenizer.num_frames(wav_N.shape[0])) and ids_BS.dtype == torch.long
    assert ids_BS.unique().numel() >= 20  # one short sentence uses a good part of 64 clusters
    assert int(ids_BS.max()) < 64
    tokenizer.save(tmp_path / "mfcc")
    loaded = load_tokenizer(tmp_path / "mfcc")
    assert isinstance(loaded, SemanticTokenizer) and torch.equal(loaded.tokenize(wav_N[None]), ids_BS)
    with pytest.raises(ValueError, match="frame_rate=30.0"):
        MFCCKMeansConfig(frame_rate=30.0, sample_rate=16_000)


@requires_torchaudio
def test_hubert_kmeans_random_weights(wavs_16k, tmp_path):
    tokenizer = HubertKMeans(layer=2, vocab_size=16, pretrained=False)
    assert tokenizer.frame_rate == 25.0 and tokenizer.sample_rate == 16_000
    tokenizer.fit(wavs_16k[:2])
    short_N, long_N = wavs_16k[1][:20_000], wavs_16k[1][:33_000]
    single_BS = tokenizer.tokenize(short_N[None])
    assert single_BS.shape == (1, tokenizer.num_frames(20_000)) == (1, 32)
    assert single_BS.unique().numel() >= 4
    batch_BN = torch.nn.utils.rnn.pad_sequence([long_N, short_N], batch_first=True)
    batch_BS = tokenizer.tokenize(batch_BN, lengths_B=torch.tensor([33_000, 20_000]))
    assert torch.equal(batch_BS[1, :32], single_BS[0])  # padding does not change an item's tokens
    tokenizer.save(tmp_path / "hubert")
    assert not (tmp_path / "hubert" / "weights.safetensors").stat().st_size > 1_000_000  # centroids only
    assert torch.equal(load_tokenizer(tmp_path / "hubert").tokenize(short_N[None]), single_BS)
    with pytest.raises(ValueError, match="layer=13"):
        HubertKMeans(layer=13, pretrained=False)
