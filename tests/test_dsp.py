"""soundstorm.dsp: the torch-native backend computes what torchaudio computes, and the library runs without it.

Three kinds of check:
- where torchaudio runs (the pinned stack), both backends on the same input, and codecs/tokenizers
  fitted with one backend give the same codes with the other;
- everywhere, the torch backend against ``tests/golden/dsp_torchaudio.json``: torchaudio 2.9.1's
  outputs on a fixed synthetic signal, stored, so stacks without torchaudio are checked too
  (regenerate on the pinned stack with ``python tests/test_dsp.py`` only after an intended change);
- a child process where ``import torchaudio`` fails: the library still imports, picks the torch
  backend, fits, encodes and decodes, and the components that need the extras say which to install.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from _cli import run_python

from soundstorm import dsp
from soundstorm.codecs import MelRVQCodec, MelRVQConfig, load_codec
from soundstorm.semantic import MFCCKMeans, MFCCKMeansConfig, load_tokenizer
from soundstorm.semantic.phones import PhoneTokenizer, PhoneTokenizerConfig

GOLDEN = Path(__file__).resolve().parent / "golden" / "dsp_torchaudio.json"
HAS_TORCHAUDIO = dsp._torchaudio_error() is None
needs_torchaudio = pytest.mark.skipif(not HAS_TORCHAUDIO, reason="torchaudio is not installed or does not run here")


def signal(sample_rate: int, seconds: float = 1.0, batch: int = 2) -> torch.Tensor:
    """``[batch, N]`` deterministic speech-like test audio (no RNG): a chirp, a harmonic tone with a
    vibrato, an amplitude envelope; each row differs in level and pitch."""
    t = torch.arange(int(sample_rate * seconds), dtype=torch.float64) / sample_rate
    rows = []
    for b in range(batch):
        f0 = 120.0 + 60.0 * b
        vibrato = 0.3 * torch.sin(2 * math.pi * 5 * t)
        tone = sum(torch.sin(2 * math.pi * k * f0 * t + k * vibrato) / k for k in range(1, 8))
        chirp = torch.sin(2 * math.pi * (100.0 * t + 1800.0 * t ** 2))
        envelope = 0.5 * (1 - torch.cos(2 * math.pi * 3 * t))
        rows.append((0.3 / (b + 1)) * envelope * (tone / 3 + 0.5 * chirp))
    return torch.stack(rows).float()


def outputs() -> dict[str, torch.Tensor]:
    """Every transform the library uses, with the library's settings, on :func:`signal`."""
    wav24, wav16 = signal(24_000), signal(16_000)
    mel = dsp.MelSpectrogram(24_000, 1024, 480, 80, power=1.0)(wav24)
    spec = dsp.InverseMelScale(513, 80, 24_000)(mel)
    mfcc = dsp.MFCC(16_000, 13, 1024, 1024, 640, 40)(wav16)
    return {"resample_24k_16k": dsp.resample(wav24, 24_000, 16_000),
            "resample_44k1_16k": dsp.resample(signal(44_100, seconds=0.5), 44_100, 16_000),
            "mel_melrvq": mel,
            "mel_phones": dsp.MelSpectrogram(16_000, 640, 160, 40, win_length=400)(wav16),
            "inverse_mel": spec,
            "griffin_lim": dsp.GriffinLim(1024, 8, 480, power=1.0)(spec),
            "mfcc": mfcc,
            "deltas": dsp.compute_deltas(mfcc)}


def summary(x: torch.Tensor) -> dict:
    flat = x.double().flatten()
    picks = torch.linspace(0, flat.numel() - 1, 48).round().long()
    return {"shape": list(x.shape), "sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()),
            "samples": flat[picks].tolist()}


@needs_torchaudio
def test_torch_backend_matches_torchaudio_on_every_transform():
    with dsp.use_backend("torchaudio"):
        reference = outputs()
    with dsp.use_backend("torch"):
        native = outputs()
    for name, ref in reference.items():
        assert native[name].shape == ref.shape, name
        scale = float(ref.abs().max())
        torch.testing.assert_close(native[name], ref, rtol=1e-5, atol=1e-6 * scale, msg=name)


def test_torch_backend_matches_stored_torchaudio_outputs():
    golden = json.loads(GOLDEN.read_text())
    with dsp.use_backend("torch"):
        native = {name: summary(x) for name, x in outputs().items()}
    assert set(native) == set(golden["outputs"])
    for name, ref in golden["outputs"].items():
        got = native[name]
        assert got["shape"] == ref["shape"], name
        # another torch's FFT rounds differently, and Griffin-Lim's iterations carry that on (torch 2.4.1:
        # 3e-4 of the mean magnitude); a wrong definition (window, mel scale, momentum) is off by O(1)
        tol = 1e-3 * ref["abs_sum"] / math.prod(ref["shape"]) + 1e-6
        assert got["samples"] == pytest.approx(ref["samples"], rel=1e-3, abs=tol), name
        assert got["abs_sum"] == pytest.approx(ref["abs_sum"], rel=1e-4), name


@needs_torchaudio
def test_melrvq_fitted_with_one_backend_codes_and_decodes_the_same_with_the_other(tmp_path):
    wavs = [row for row in signal(24_000, seconds=2.0, batch=4)]
    config = MelRVQConfig(num_levels=4, codebook_size=16, fit_iters=5, griffin_lim_iters=8)
    with dsp.use_backend("torchaudio"):
        MelRVQCodec(config).fit(wavs[:3]).save(tmp_path / "codec")
        audio = load_codec(tmp_path / "codec")
        codes_ref = audio.encode(wavs[3][None])
        wav_ref = audio.decode(codes_ref)
    with dsp.use_backend("torch"):
        native = load_codec(tmp_path / "codec")
        assert native.mel.backend == "torch"
        codes = native.encode(wavs[3][None])
        wav = native.decode(codes_ref)
    assert torch.equal(codes, codes_ref)
    torch.testing.assert_close(wav, wav_ref, rtol=1e-5, atol=1e-5 * float(wav_ref.abs().max()))


@needs_torchaudio
def test_semantic_tokenizers_give_the_same_ids_with_either_backend(tmp_path):
    wavs = [row for row in signal(16_000, seconds=2.0, batch=4)]
    with dsp.use_backend("torchaudio"):
        MFCCKMeans(MFCCKMeansConfig(vocab_size=8, fit_iters=5)).fit(wavs[:3]).save(tmp_path / "mfcc")
        ids_ref = load_tokenizer(tmp_path / "mfcc").tokenize(torch.stack(wavs))
        phones_ref = PhoneTokenizer(PhoneTokenizerConfig(vocab_size=8)).features(torch.stack(wavs))
    with dsp.use_backend("torch"):
        ids = load_tokenizer(tmp_path / "mfcc").tokenize(torch.stack(wavs))
        phones = PhoneTokenizer(PhoneTokenizerConfig(vocab_size=8)).features(torch.stack(wavs))
    assert torch.equal(ids, ids_ref)
    torch.testing.assert_close(phones, phones_ref, rtol=1e-5, atol=1e-5)


def test_native_resampling_keeps_a_tone_and_the_length():
    wav = torch.sin(2 * math.pi * 1000.0 * torch.arange(24_001) / 24_000)[None]
    with dsp.use_backend("torch"):
        out = dsp.resample(wav[:, :24_000], 24_000, 16_000)
        odd = dsp.resample(wav, 24_000, 16_000)
    assert out.shape == (1, 16_000) and odd.shape == (1, 16_001)  # ceil(N × 2 / 3)
    expected = torch.sin(2 * math.pi * 1000.0 * torch.arange(16_000) / 16_000)
    assert float((out[0, 200:-200] - expected[200:-200]).abs().max()) < 2e-3  # away from the zero-padded edges


def test_native_griffin_lim_recovers_a_consistent_spectrogram():
    """More iterations bring the magnitude of the result closer to the target (spectral convergence)."""
    wav = signal(24_000)[:1]
    with dsp.use_backend("torch"):
        mel = dsp.MelSpectrogram(24_000, 1024, 480, 80, power=1.0)
        target = torch.stft(wav, 1024, 480, window=torch.hann_window(1024), return_complex=True).abs()
        errors = []
        for iters in (1, 32):
            out = dsp.GriffinLim(1024, iters, 480, power=1.0)(target)
            rebuilt = torch.stft(out, 1024, 480, window=torch.hann_window(1024), return_complex=True).abs()
            errors.append(float((rebuilt - target).norm() / target.norm()))
        assert mel(out).shape == mel(wav).shape
    assert errors[1] < 0.5 * errors[0], errors


def test_backend_choice_env_and_a_broken_torchaudio(monkeypatch):
    with pytest.raises(ValueError, match="SOUNDSTORM_DSP='sox'"):
        dsp._choose("sox")
    assert dsp._choose("torch") == "torch"
    monkeypatch.setattr(dsp, "_torchaudio_error", lambda: OSError("undefined symbol: _ZN3c10"))
    with pytest.warns(RuntimeWarning, match="torchaudio is installed but does not work.*undefined symbol"):
        assert dsp._choose("auto") == "torch"
    with pytest.raises(ImportError, match="does not run with torch .*: OSError: undefined symbol"):
        dsp._choose("torchaudio")
    monkeypatch.setattr(dsp, "_torchaudio_error", lambda: ModuleNotFoundError("No module named 'torchaudio'"))
    monkeypatch.setitem(sys.modules, "torchaudio", None)  # import torchaudio fails as where it is not installed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not installed is a normal set-up: no warning
        assert dsp._choose("auto") == "torch"
    with pytest.raises(ImportError, match=r"'torchaudio' package, which is not installed.*soundstorm\[hubert\]"):
        dsp._choose("torchaudio")
    with dsp.use_backend("torch"):
        assert dsp.backend() == "torch"


WITHOUT_TORCHAUDIO = r"""
import sys
sys.modules["torchaudio"] = None  # import torchaudio raises ImportError, as where it is not installed
sys.modules["encodec"] = None
import torch
from soundstorm import dsp
from soundstorm.codecs import MelRVQCodec, MelRVQConfig, EncodecCodec
from soundstorm.semantic import HubertKMeans, MFCCKMeans, MFCCKMeansConfig
assert dsp.backend() == "torch", dsp.backend()
t = torch.arange(48_000) / 24_000
wavs = [torch.sin(2 * torch.pi * f * t) * (0.2 + 0.1 * torch.sin(2 * torch.pi * 3 * t)) for f in (150.0, 220.0, 330.0)]
codec = MelRVQCodec(MelRVQConfig(num_levels=2, codebook_size=8, fit_iters=3, griffin_lim_iters=2)).fit(wavs)
codes = codec.encode(wavs[0][None])
print("codes", tuple(codes.shape), "wav", tuple(codec.decode(codes).shape))
wav16 = dsp.resample(torch.stack(wavs), 24_000, 16_000)
print("ids", tuple(MFCCKMeans(MFCCKMeansConfig(vocab_size=4, fit_iters=2)).fit(list(wav16)).tokenize(wav16).shape))
for build in (lambda: HubertKMeans(pretrained=False), lambda: EncodecCodec(pretrained=False)):
    try:
        build()
    except ImportError as err:
        print("error:", err)
"""


def test_library_runs_without_torchaudio_and_names_the_extras():
    result = run_python(["-c", WITHOUT_TORCHAUDIO], check=True)
    out = result.stdout
    assert "codes (1, 2, 101) wav (1, 48000)" in out and "ids (3, 51)" in out, out
    assert "HubertKMeans (torchaudio's HuBERT-base) needs the 'torchaudio' package" in out, out
    assert "pip install 'soundstorm[hubert]'" in out and "pip install 'soundstorm[encodec]'" in out, out
    assert "EncodecCodec needs the 'encodec' package, which is not installed" in out, out


if __name__ == "__main__":  # regenerate the golden file (pinned stack, torchaudio installed)
    with dsp.use_backend("torchaudio"):
        import torchaudio

        data = {"torch": torch.__version__, "torchaudio": torchaudio.__version__,
                "outputs": {name: summary(x) for name, x in outputs().items()}}
    GOLDEN.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
