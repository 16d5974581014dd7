"""Voice preservation: speaker similarity as the cosine of speaker-verifier embeddings.

The paper scores how well the prompt's voice is kept by the similarity of speaker embeddings. A
verifier is anything with ``embed(wav_N, sample_rate) -> [D] tensor``. Offline by default:
resemblyzer's GE2E ``VoiceEncoder``, whose wheel ships its weights (``preprocess_wav`` resamples to
16 kHz, normalises the volume and trims silences with webrtcvad). A user's own verifier (WavLM, ECAPA,
...) is named by a dotted path (``my_pkg.spk:embed`` or a class with an ``embed`` method).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from soundstorm.evaluation.asr import ASR_SAMPLE_RATE, to_mono_16k
from soundstorm.evaluation.metrics import build_plugin


@runtime_checkable
class Verifier(Protocol):
    def embed(self, wav_N: torch.Tensor, sample_rate: int) -> torch.Tensor: ...


def cosine(a_D: torch.Tensor, b_D: torch.Tensor) -> float:
    """Cosine similarity of two embeddings (flattened)."""
    a_D, b_D = torch.as_tensor(a_D).flatten().float(), torch.as_tensor(b_D).flatten().float()
    if a_D.shape != b_D.shape:
        raise ValueError(f"speaker embeddings differ in size: {tuple(a_D.shape)} vs {tuple(b_D.shape)}")
    return float(torch.nn.functional.cosine_similarity(a_D, b_D, dim=0))


class ResemblyzerVerifier:
    """resemblyzer's ``VoiceEncoder`` (256-d, L2-normalised) on CPU by default."""

    def __init__(self, device: str = "cpu"):
        try:
            from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as err:
            raise ValueError(f"verifier 'resemblyzer' cannot be imported ({err}); pip install 'soundstorm[eval]' "
                             "(webrtcvad-wheels provides the webrtcvad module it needs)") from err
        self.encoder, self.preprocess = VoiceEncoder(device=device, verbose=False), preprocess_wav

    @torch.no_grad()
    def embed(self, wav_N: torch.Tensor, sample_rate: int) -> torch.Tensor:
        audio = to_mono_16k(wav_N, sample_rate).numpy()
        trimmed = self.preprocess(audio, source_sr=ASR_SAMPLE_RATE)
        if trimmed.size < ASR_SAMPLE_RATE // 10:  # voice detection kept (almost) nothing: use the whole clip
            trimmed = audio
        return torch.from_numpy(self.encoder.embed_utterance(trimmed)).float()


class CallableVerifier:
    """Wraps a user's ``embed(wav_N, sample_rate) -> [D]`` function."""

    def __init__(self, fn):
        self.fn = fn

    def embed(self, wav_N: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return torch.as_tensor(self.fn(wav_N, sample_rate)).flatten().float()


VERIFIERS = {"resemblyzer": ResemblyzerVerifier}


def build_verifier(name: str, options: dict | None = None, field: str = "evaluation.speech.verifier") -> Verifier:
    """``"resemblyzer"`` or ``"pkg.module:attr"`` (a function, a class or an object with ``embed``);
    errors name ``field``."""
    return build_plugin(name, options, builtins=VERIFIERS, protocol=Verifier, wrap=CallableVerifier, field=field,
                        method="embed")
