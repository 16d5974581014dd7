"""Codecs: MelRVQ fitting and Q-dependent reconstruction, EnCodec k-means init, save/load, checks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from conftest import load_corpus_wavs, requires_encodec, single_thread
from soundstorm.codecs import Codec, EncodecCodec, MelRVQCodec, MelRVQConfig, load_codec, mel_distance
from soundstorm.codecs.melrvq import smooth_frames


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def wavs_24k(espeak_corpus):
    return load_corpus_wavs(espeak_corpus, 24_000)


@pytest.fixture(scope="module")
def melrvq(wavs_24k):
    return MelRVQCodec(MelRVQConfig(num_levels=12, codebook_size=64, griffin_lim_iters=16)).fit(wavs_24k[:16])


def test_melrvq_reconstruction_improves_with_levels(melrvq, wavs_24k):
    held_out = wavs_24k[16:18]
    for wav_N in held_out:
        wav_BN = wav_N[None]
        codes_BQT = melrvq.encode(wav_BN)
        assert codes_BQT.shape == (1, 12, melrvq.num_frames(wav_N.shape[0]))
        assert codes_BQT.dtype == torch.long
        target_BFT = melrvq.log_mel(wav_BN)
        feature_err = [float((melrvq.decode_mel(codes_BQT[:, :q]) - target_BFT).abs().mean()) for q in (1, 4, 8, 12)]
        mel_err = [mel_distance(wav_BN, melrvq.decode(codes_BQT[:, :q]), 24_000) for q in (1, 4, 8, 12)]
        assert all(a > b for a, b in zip(feature_err, feature_err[1:])), feature_err
        assert all(a > b for a, b in zip(mel_err, mel_err[1:])), mel_err
        assert codes_BQT[0, 0].unique().numel() >= 20  # level 1 uses many codes


def test_melrvq_decode_shape_and_save_load(melrvq, wavs_24k, tmp_path):
    wav_BN = torch.nn.utils.rnn.pad_sequence(wavs_24k[:2], batch_first=True)
    codes_BQT = melrvq.encode(wav_BN[:, None, :])  # [B, 1, N] is accepted too
    wav_out_BN = melrvq.decode(codes_BQT)
    assert wav_out_BN.shape == (2, (codes_BQT.shape[2] - 1) * melrvq.config.hop_length)
    melrvq.save(tmp_path / "codec")
    loaded = load_codec(tmp_path / "codec")
    assert isinstance(loaded, MelRVQCodec) and isinstance(loaded, Codec) and loaded.describe() == melrvq.describe()
    assert torch.equal(loaded.encode(wav_BN), codes_BQT)
    assert not list(tmp_path.glob("codec/*.tmp"))


def test_melrvq_rejects_bad_inputs(melrvq):
    with pytest.raises(ValueError, match="not fitted"):
        MelRVQCodec(MelRVQConfig(num_levels=2, codebook_size=8)).encode(torch.zeros(1, 2400))
    with pytest.raises(ValueError, match=r"shape \[B, N\]"):
        melrvq.encode(torch.zeros(2, 3, 100))
    with pytest.raises(ValueError, match="floating point"):
        melrvq.encode(torch.zeros(1, 100, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected every id in \[0, 63\]"):
        melrvq.decode(torch.full((1, 2, 5), 64))
    with pytest.raises(ValueError, match="13 levels"):
        melrvq.decode(torch.zeros(1, 13, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="frame_rate=48.0"):
        MelRVQConfig(frame_rate=48.0, sample_rate=1000)
    with pytest.raises(ValueError, match="at least 64 frames"):
        MelRVQCodec(MelRVQConfig(num_levels=1, codebook_size=64)).fit([torch.randn(2400)])


@requires_encodec
def test_encodec_untrained_needs_fit_then_uses_many_codes(wavs_24k, tmp_path):
    codec = EncodecCodec(bandwidth=1.5, pretrained=False)
    assert (codec.num_levels, codec.frame_rate, codec.codebook_size, codec.sample_rate) == (2, 75.0, 1024, 24_000)
    wav_BN = wavs_24k[18][None]
    # The problem being solved: the raw untrained model maps every frame to token 0.
    raw_codes = codec.model.encode(wav_BN[:, None])[0][0]
    assert int(raw_codes.abs().sum()) == 0
    with pytest.raises(ValueError, match="all-zero codebooks"):
        codec.encode(wav_BN)
    with pytest.raises(ValueError, match="all-zero codebooks"):
        codec.codebook_vectors()
    codec.fit(wavs_24k[:5])
    codes_BQT = codec.encode(wav_BN)
    # The sampler's minimum-Bayes-risk choice measures distances between these vectors: their sum over
    # levels must be the latent frame the decoder turns into audio.
    vectors_QKD = codec.codebook_vectors()
    assert vectors_QKD.shape == (codec.num_levels, codec.codebook_size, 128)
    latent_DT = sum(vectors_QKD[q][codes_BQT[0, q]] for q in range(codec.num_levels)).t()
    torch.testing.assert_close(latent_DT, codec.model.quantizer.decode(codes_BQT.transpose(0, 1))[0])
    assert codes_BQT.shape == (1, 2, codec.num_frames(wav_BN.shape[1]))
    for level in range(2):
        assert codes_BQT[0, level].unique().numel() >= 50, level
    assert codec.decode(codes_BQT).shape == (1, codes_BQT.shape[2] * 320)
    codec.save(tmp_path / "enc")
    loaded = load_codec(tmp_path / "enc")
    assert torch.equal(loaded.encode(wav_BN), codes_BQT)


@requires_encodec
def test_encodec_settings_and_pretrained_errors(tmp_path):
    assert EncodecCodec(bandwidth=6.0, pretrained=False).num_levels == 8
    with pytest.raises(ValueError, match="bandwidth=5.0"):
        EncodecCodec(bandwidth=5.0, pretrained=False)
    with pytest.raises(RuntimeError, match="repository"):
        EncodecCodec(bandwidth=6.0, pretrained=True, repository=tmp_path / "missing")


def test_mel_distance():
    torch.manual_seed(0)
    wav_N = torch.randn(24_000) * 0.1
    assert mel_distance(wav_N, wav_N, 24_000) == 0.0
    assert mel_distance(wav_N, wav_N * 0.5, 24_000) > mel_distance(wav_N, wav_N * 0.9, 24_000) > 0
    assert mel_distance(wav_N[None], torch.cat([wav_N, torch.zeros(100)])[None], 24_000) == 0.0
    with pytest.raises(ValueError, match="batch"):
        mel_distance(torch.zeros(2, 100), torch.zeros(3, 100), 24_000)


def test_melrvq_codebook_vectors_add_up_to_the_decoded_log_mel(melrvq, wavs_24k):
    """The sampler's minimum-Bayes-risk choice measures distances between these vectors: they must be
    the ones whose sum over levels is the frame the codec decodes."""
    codes_BQT = melrvq.encode(wavs_24k[3][None])
    vectors_QKF = melrvq.codebook_vectors()
    assert vectors_QKF.shape == (melrvq.num_levels, melrvq.codebook_size, melrvq.config.n_mels)
    summed_TF = sum(vectors_QKF[q][codes_BQT[0, q]] for q in range(melrvq.num_levels))
    torch.testing.assert_close(summed_TF.t(), melrvq.decode_mel(codes_BQT)[0])


def test_melrvq_decode_smoothing_is_a_normalised_low_pass_over_time():
    mel_BFT = torch.randn(2, 3, 9)
    assert torch.equal(smooth_frames(mel_BFT, [1.0]), mel_BFT)  # one weight: off, bit-exact
    constant = torch.full((1, 2, 6), -3.0)
    assert torch.allclose(smooth_frames(constant, [1.0, 3.0, 1.0]), constant)  # edges repeat: no droop
    impulse = torch.zeros(1, 1, 7)
    impulse[0, 0, 3] = 5.0
    assert torch.allclose(smooth_frames(impulse, [1.0, 3.0, 1.0])[0, 0, 2:5], torch.tensor([1.0, 3.0, 1.0]))
    smoothed = smooth_frames(mel_BFT, [2.0, 6.0, 2.0])  # weights are normalised: scale does not matter
    assert smoothed.shape == mel_BFT.shape and torch.allclose(smoothed, smooth_frames(mel_BFT, [1.0, 3.0, 1.0]))


def test_melrvq_decode_smoothing_averages_away_frame_independent_code_errors(melrvq, wavs_24k):
    """Why the default smooths: codes wrong at scattered frames (what a model's frame-wise choices give)
    decode closer to the original with the 1-3-1 low-pass than without it; with it off, decode is the
    plain quantised log-mel inverted."""
    plain = MelRVQCodec(dataclasses.replace(melrvq.config, decode_smoothing=[1.0]), melrvq.codebook_vectors())
    assert melrvq.config.decode_smoothing == [1.0, 3.0, 1.0]
    generator = torch.Generator().manual_seed(0)
    for wav_N in wavs_24k[16:19]:
        codes_BQT = melrvq.encode(wav_N[None])
        mel_BFT = plain.decode_mel(codes_BQT).exp()
        assert torch.equal(plain.decode(codes_BQT), plain.griffin_lim(plain.inverse_mel(mel_BFT).clamp(min=0.0)))
        wrong_T = torch.rand(codes_BQT.shape[2], generator=generator) < 0.3
        noisy_BQT = codes_BQT.clone()
        noisy_BQT[:, :, wrong_T] = torch.randint(0, 64, (1, 12, int(wrong_T.sum())), generator=generator)
        assert mel_distance(wav_N[None], melrvq.decode(noisy_BQT), 24_000) < \
            mel_distance(wav_N[None], plain.decode(noisy_BQT), 24_000)


def test_melrvq_decode_smoothing_is_saved_checked_and_off_for_older_codecs(melrvq, tmp_path):
    assert melrvq.describe()["decode_smoothing"] == [1.0, 3.0, 1.0]
    off = MelRVQCodec(dataclasses.replace(melrvq.config, decode_smoothing=[1.0]), melrvq.codebook_vectors())
    off.save(tmp_path / "off")
    assert load_codec(tmp_path / "off").config.decode_smoothing == [1.0]
    assert "decode_smoothing" not in off.describe()  # off: described as codecs were before the setting
    melrvq.save(tmp_path / "old")  # a codec saved before the setting existed: its config has no such key
    config_path = next(p for p in (tmp_path / "old").iterdir() if p.suffix == ".json")
    saved = json.loads(config_path.read_text())
    del saved["config"]["decode_smoothing"], saved["config"]["first_level_cepstra"]
    config_path.write_text(json.dumps(saved))
    assert load_codec(tmp_path / "old").config.decode_smoothing == [1.0]
    assert load_codec(tmp_path / "old").config.first_level_cepstra == 0  # matched whole frames, as fitted
    for bad in ([], [1.0, 1.0], [1.0, -1.0, 1.0], [0.0], [float("nan")], "131"):
        with pytest.raises(ValueError, match="MelRVQConfig.decode_smoothing"):
            MelRVQConfig(decode_smoothing=bad)


def test_melrvq_first_level_cepstra_matches_the_envelope_and_decodes_as_before(wavs_24k, tmp_path):
    config = MelRVQConfig(num_levels=3, codebook_size=16, griffin_lim_iters=4, fit_iters=5, first_level_cepstra=8)
    codec = MelRVQCodec(config).fit(wavs_24k[:8])
    codes_BQT = codec.encode(wavs_24k[0].reshape(1, -1))
    mel_FT = codec.log_mel(wavs_24k[0].reshape(1, -1))[0]
    # level 1 is the codeword whose first 8 cepstra lie nearest the frame's, not the nearest whole frame
    envelope_TC = mel_FT.t() @ codec.first_basis_FC
    first_KF = codec.codebook_vectors()[0]
    distance_TK = torch.cdist(envelope_TC, first_KF @ codec.first_basis_FC)
    assert torch.equal(codes_BQT[0, 0], distance_TK.argmin(1))
    assert not torch.equal(codes_BQT[0, 0], torch.cdist(mel_FT.t(), first_KF).argmin(1))
    # the codewords are full frames: decoding sums them, and more levels still explain more of the frame
    errors = [(codec.decode_mel(codes_BQT[:, :q])[0] - mel_FT).pow(2).mean().item() for q in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]
    codec.save(tmp_path / "codec")
    loaded = load_codec(tmp_path / "codec")
    assert loaded.describe()["first_level_cepstra"] == 8
    assert torch.equal(loaded.encode(wavs_24k[0].reshape(1, -1)), codes_BQT)
    assert "first_level_cepstra" not in MelRVQCodec(MelRVQConfig(num_levels=3, codebook_size=16)).describe()
    for bad in (-1, 81, 2.5, True):
        with pytest.raises(ValueError, match="MelRVQConfig.first_level_cepstra"):
            MelRVQConfig(first_level_cepstra=bad)
