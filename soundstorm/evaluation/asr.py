"""Intelligibility: word and character error rates of a speech recognizer's transcripts.

The paper scores generated speech by the WER of an ASR system. A recognizer is anything with
``transcribe(wav_N, sample_rate) -> str``. Offline by default: pocketsphinx, whose wheel ships an en-US
acoustic model, dictionary and language model, so nothing is downloaded. Whisper (``openai-whisper`` or
``transformers``) is used when installed *and* its weights are already on disk; nothing here downloads
at run time, and a missing package or missing weights is a clear error. A user's own recognizer is named
by a dotted path (``my_pkg.asr:transcribe`` or a class with a ``transcribe`` method).

Scoring (:func:`soundstorm.evaluation.metrics.error_rates`) normalises reference and hypothesis (lower
case, punctuation removed, whitespace collapsed) before jiwer scores them, so "Hello, world." and
"hello world" count as a perfect match.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from soundstorm import dsp

from soundstorm.evaluation.metrics import build_plugin, error_rates, load_callable, normalize_text  # noqa: F401 (re-exported)

ASR_SAMPLE_RATE = 16000


@runtime_checkable
class Recognizer(Protocol):
    def transcribe(self, wav_N: torch.Tensor, sample_rate: int) -> str: ...


def to_mono_16k(wav_N: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """A float32 ``[N]`` waveform at 16 kHz (what both default models expect)."""
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    wav_N = torch.as_tensor(wav_N).detach().float().cpu()
    if wav_N.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape [N], got {tuple(wav_N.shape)}")
    if sample_rate != ASR_SAMPLE_RATE:
        wav_N = dsp.resample(wav_N, sample_rate, ASR_SAMPLE_RATE)
    return wav_N


class PocketsphinxRecognizer:
    """CMU pocketsphinx with the en-US model of its wheel; 16-bit PCM at 16 kHz.

    Every call starts from the decoder's initial feature state: pocketsphinx's live cepstral mean
    normalisation otherwise carries the previous utterance's mean into the next one, so a transcript
    depended on what was recognised before it, and a row's WER on the order of the rows (how much:
    docs/evaluation.md). ``reinit_feat`` gives exactly the fresh decoder's transcripts and costs nothing.
    """

    def __init__(self, **decoder_options):
        try:
            from pocketsphinx import Decoder
        except ImportError as err:
            raise ValueError("asr 'pocketsphinx' needs the pocketsphinx package: pip install "
                             "'soundstorm[eval]'") from err
        self.decoder = Decoder(samprate=ASR_SAMPLE_RATE, **decoder_options)

    def transcribe(self, wav_N: torch.Tensor, sample_rate: int) -> str:
        pcm = (to_mono_16k(wav_N, sample_rate).clamp(-1, 1) * 32767).round().to(torch.int16).numpy().tobytes()
        self.decoder.reinit_feat()  # forget the previous utterance's cepstral mean (see the class docstring)
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


def _whisper_checkpoint(model: str, download_root: str | None) -> Path:
    import whisper

    root = Path(download_root or os.path.join(os.path.expanduser("~"), ".cache", "whisper"))
    if model in whisper._MODELS:
        return root / os.path.basename(whisper._MODELS[model])
    return Path(model)


class WhisperRecognizer:
    """Whisper from local weights only: ``openai-whisper`` (a ``<name>.pt`` under ``download_root``,
    default ``~/.cache/whisper``, or a path) or, without it, ``transformers`` (a hub id already in the
    local cache, or a folder). English, greedy decoding."""

    def __init__(self, model: str = "base.en", download_root: str | None = None, device: str = "cpu"):
        self.device = device
        try:
            import whisper
        except ImportError:
            whisper = None
        if whisper is not None:
            path = _whisper_checkpoint(model, download_root)
            if not path.is_file():
                raise FileNotFoundError(f"whisper weights for asr_options.model={model!r} not found at {path}; "
                                        "nothing is downloaded at run time: copy the checkpoint there, or set "
                                        "asr_options.download_root / asr_options.model to a local .pt file")
            self.kind, self.model = "openai-whisper", whisper.load_model(str(path), device=device)
            return
        try:
            from transformers import WhisperForConditionalGeneration, WhisperProcessor
        except ImportError as err:
            raise ValueError("asr 'whisper' needs openai-whisper or transformers installed "
                             "(pip install openai-whisper), plus its weights on disk") from err
        name = model if "/" in model or Path(model).exists() else f"openai/whisper-{model}"
        try:
            self.processor = WhisperProcessor.from_pretrained(name, local_files_only=True)
            self.model = WhisperForConditionalGeneration.from_pretrained(name, local_files_only=True).to(device)
        except OSError as err:
            raise FileNotFoundError(f"whisper weights for asr_options.model={model!r} ({name}) are not in the local "
                                    f"transformers cache; nothing is downloaded at run time ({err})") from err
        self.kind = "transformers"

    @torch.no_grad()
    def transcribe(self, wav_N: torch.Tensor, sample_rate: int) -> str:
        audio = to_mono_16k(wav_N, sample_rate)
        if self.kind == "openai-whisper":
            result = self.model.transcribe(audio.numpy(), language="en", temperature=0.0, fp16=False)
            return str(result["text"])
        inputs = self.processor(audio.numpy(), sampling_rate=ASR_SAMPLE_RATE, return_tensors="pt")
        ids = self.model.generate(inputs.input_features.to(self.device), language="en", task="transcribe")
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0]


class CallableRecognizer:
    """Wraps a user's ``transcribe(wav_N, sample_rate) -> str`` function."""

    def __init__(self, fn):
        self.fn = fn

    def transcribe(self, wav_N: torch.Tensor, sample_rate: int) -> str:
        return str(self.fn(wav_N, sample_rate))


RECOGNIZERS = {"pocketsphinx": PocketsphinxRecognizer, "whisper": WhisperRecognizer}


def build_recognizer(name: str, options: dict | None = None, field: str = "evaluation.speech.asr") -> Recognizer:
    """``"pocketsphinx"``, ``"whisper"`` or ``"pkg.module:attr"`` (a function, a class or an object with
    ``transcribe``); ``options`` are keyword arguments of the class; errors name ``field``."""
    return build_plugin(name, options, builtins=RECOGNIZERS, protocol=Recognizer, wrap=CallableRecognizer,
                        field=field, method="transcribe")
