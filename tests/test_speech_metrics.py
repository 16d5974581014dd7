"""The offline speech metrics on speech synthesised here: pocketsphinx WER/CER, resemblyzer similarity,
text normalisation, the pluggable recognizer / verifier paths and Whisper's offline-only error."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types

import pytest
import soundfile as sf
import torch

from soundstorm.evaluation.asr import PocketsphinxRecognizer, WhisperRecognizer, build_recognizer, error_rates
from soundstorm.evaluation.speaker import ResemblyzerVerifier, build_verifier, cosine
from soundstorm.dsp import resample

SENTENCES = ("The boy was there when the sun rose.", "It is easy to tell the depth of a well.")


def festival(text: str, voice: str, path) -> torch.Tensor:
    subprocess.run(["text2wave", "-eval", f"({voice})", "-o", str(path)], input=text, text=True, check=True,
                   capture_output=True)
    return torch.from_numpy(sf.read(str(path), dtype="float32")[0])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """16 kHz clips: the kal diphone voice saying both sentences, and espeak-ng's female voice."""
    if shutil.which("text2wave") is None or shutil.which("espeak-ng") is None:
        pytest.skip("festival (text2wave, festvox-kallpc16k) and espeak-ng are needed")
    tmp = tmp_path_factory.mktemp("clips")
    out = {f"kal{i}": festival(s, "voice_kal_diphone", tmp / f"kal{i}.wav") for i, s in enumerate(SENTENCES)}
    subprocess.run(["espeak-ng", "-v", "en-us+f3", "-p", "70", "-w", str(tmp / "f.wav"), SENTENCES[1]], check=True)
    data, rate = sf.read(str(tmp / "f.wav"), dtype="float32")
    out["female1"] = resample(torch.from_numpy(data), rate, 16000)
    return out


def test_text_is_normalised_before_scoring():
    assert error_rates("Hello, World!", "hello   world") == {"wer": 0.0, "cer": 0.0}
    assert error_rates("the cat sat", "the cat sat down")["wer"] == pytest.approx(1 / 3)
    assert error_rates("the cat", "") == {"wer": 1.0, "cer": 1.0}
    with pytest.raises(ValueError, match="empty reference"):
        error_rates(" ... ", "anything")


def test_pocketsphinx_reads_clean_speech_not_noise(clips):
    asr = PocketsphinxRecognizer()
    heard = asr.transcribe(clips["kal0"], 16000)
    clean = error_rates(SENTENCES[0], heard)
    assert clean["wer"] < 0.5, heard
    assert clean["wer"] < error_rates(SENTENCES[1], heard)["wer"]  # against the wrong sentence
    noise = torch.randn(48000, generator=torch.Generator().manual_seed(0)) * 0.1
    assert clean["cer"] < error_rates(SENTENCES[0], asr.transcribe(noise, 16000))["cer"]
    resampled = error_rates(SENTENCES[0], asr.transcribe(torch.nn.functional.interpolate(
        clips["kal0"][None, None], scale_factor=1.5, mode="linear")[0, 0], 24000))
    assert resampled["wer"] < 0.5  # other sample rates are resampled to 16 kHz


def test_pocketsphinx_transcript_does_not_depend_on_what_it_heard_before(clips):
    """Live cepstral mean normalisation carried one utterance's mean into the next: the same audio got
    different transcripts in a different order. Every call now starts from the initial mean."""
    asr = PocketsphinxRecognizer()
    initial = asr.decoder.get_cmn()
    seen = []
    start_utt = asr.decoder.start_utt
    asr.decoder = types.SimpleNamespace(**{name: getattr(asr.decoder, name) for name in dir(asr.decoder)
                                           if not name.startswith("_")})
    asr.decoder.start_utt = lambda: (seen.append(asr.decoder.get_cmn()), start_utt())
    loud = torch.randn(32000, generator=torch.Generator().manual_seed(1)) * 0.5
    first = asr.transcribe(clips["kal0"], 16000)
    asr.transcribe(loud, 16000)
    asr.transcribe(clips["female1"], 16000)
    assert asr.decoder.get_cmn() != initial, "decoding moves the live mean (what used to leak)"
    assert asr.transcribe(clips["kal0"], 16000) == first
    assert seen == [initial] * 4


def test_resemblyzer_same_voice_is_closer_than_another_voice(clips):
    verifier = ResemblyzerVerifier()
    emb = {k: verifier.embed(v, 16000) for k, v in clips.items()}
    assert emb["kal0"].shape == (256,)
    same, other = cosine(emb["kal0"], emb["kal1"]), cosine(emb["kal1"], emb["female1"])
    assert same > other + 0.1, (same, other)


def my_transcribe(wav_N, sample_rate):
    return "hello world"


def my_embed(wav_N, sample_rate):
    return [[1.0], [2.0]]


class MyVerifier:
    def __init__(self, dim=3):
        self.dim = dim

    def embed(self, wav_N, sample_rate):
        return torch.ones(self.dim) * wav_N.abs().mean()


def test_user_recognizer_and_verifier_by_dotted_path():
    asr = build_recognizer(f"{__name__}:my_transcribe")
    assert asr.transcribe(torch.zeros(10), 16000) == "hello world"
    verifier = build_verifier(f"{__name__}:MyVerifier", {"dim": 5})
    assert verifier.embed(torch.ones(10), 16000).shape == (5,)
    fn_verifier = build_verifier(f"{__name__}:my_embed")
    assert fn_verifier.embed(torch.ones(4), 16000).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="evaluation.speech.asr='nosuch'"):
        build_recognizer("nosuch")
    with pytest.raises(ValueError, match="not a class"):
        build_recognizer(f"{__name__}:my_transcribe", {"x": 1})
    with pytest.raises(ValueError, match="cannot load"):
        build_verifier("no_such_module_xyz:embed")


def test_whisper_never_downloads(monkeypatch, tmp_path):
    fake = types.ModuleType("whisper")
    fake._MODELS = {"base.en": "https://example.invalid/abc/base.en.pt"}
    fake.load_model = lambda *a, **k: pytest.fail("load_model must not be reached without local weights")
    monkeypatch.setitem(sys.modules, "whisper", fake)
    with pytest.raises(FileNotFoundError, match=r"base\.en.*not found at .*base\.en\.pt.*nothing is downloaded"):
        WhisperRecognizer("base.en", download_root=str(tmp_path))
    monkeypatch.setitem(sys.modules, "whisper", None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ValueError, match="needs openai-whisper or transformers"):
        build_recognizer("whisper")
