"""The codec protocol (waveform ⇄ RVQ codes ``[B, Q, T]``), input checks and the mel distance.

Every codec has ``name``, ``sample_rate`` (Hz), ``frame_rate`` (frames/s, float), ``num_levels``
(Q), ``codebook_size``, ``encode(wav) -> codes [B, Q, T]``, ``decode(codes) -> wav [B, N]``,
``num_frames(num_samples)``, ``describe()`` (what a token manifest records), ``save(dir)`` and
``codebook_vectors() -> [Q, K, D]``: each level's code vectors in the space where the levels add up
(what the sampler's minimum-Bayes-risk choice measures distances in).

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from soundstorm import dsp
from soundstorm._checks import check_int_tensor, check_range


@runtime_checkable
class Codec(Protocol):
    name: str
    sample_rate: int
    frame_rate: float
    num_levels: int
    codebook_size: int

    def encode(self, wav_BN: torch.Tensor) -> torch.Tensor: ...

    def decode(self, codes_BQT: torch.Tensor) -> torch.Tensor: ...

    def num_frames(self, num_samples: int) -> int: ...

    def describe(self) -> dict: ...

    def save(self, directory) -> None: ...

    def codebook_vectors(self) -> torch.Tensor: ...


def min_decode_frames(codec) -> int:
    """The fewest frames ``codec.decode`` takes (its ``min_decode_frames``; 1 for a codec without one)."""
    return max(1, int(getattr(codec, "min_decode_frames", 1)))


def check_wav(wav, what: str = "wav") -> torch.Tensor:
    """Accept ``[B, N]`` or ``[B, 1, N]`` floating audio; return ``[B, N]`` float32."""
    if not isinstance(wav, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor of shape [B, N] or [B, 1, N], got {type(wav).__name__}")
    if wav.ndim == 3 and wav.shape[1] == 1:
        wav = wav[:, 0]
    if wav.ndim != 2:
        raise ValueError(f"{what} must have shape [B, N] or [B, 1, N], got {tuple(wav.shape)}")
    if not wav.is_floating_point():
        raise ValueError(f"{what} must be floating point audio in [-1, 1], got dtype {wav.dtype}")
    if wav.shape[1] == 0:
        raise ValueError(f"{what} has no samples (shape {tuple(wav.shape)})")
    return wav.float()


def check_codes(codes, num_levels: int, codebook_size: int, what: str = "codes") -> torch.Tensor:
    """Accept long codes ``[B, Q', T]`` with ``1 <= Q' <= num_levels`` and ids in ``[0, codebook_size)``."""
    codes_BQT = check_int_tensor(what, codes, 3, "[B, Q, T]")
    if not 1 <= codes_BQT.shape[1] <= num_levels:
        raise ValueError(f"{what} has {codes_BQT.shape[1]} levels, expected 1..{num_levels} (the codec's num_levels)")
    check_range(what, codes_BQT, 0, codebook_size)
    return codes_BQT.long()


_MEL_CACHE: dict[tuple[str, int], dsp.MelSpectrogram] = {}  # by (dsp backend, sample rate)


def mel_distance(wav_a, wav_b, sample_rate: int) -> float:
    """Mean absolute difference of natural-log mel spectrograms of two waveforms.

    Both are ``[N]`` or ``[B, N]`` (or ``[B, 1, N]``) at ``sample_rate``; the longer is trimmed to
    the shorter. Features: 80 mel bands, 1024-point FFT, 10 ms hop, magnitude (power 1), and
    ``log(max(mel, 1e-5))``. 0 means identical spectra; lower is closer.
    """
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    wav_a = check_wav(wav_a[None] if isinstance(wav_a, torch.Tensor) and wav_a.ndim == 1 else wav_a, "wav_a")
    wav_b = check_wav(wav_b[None] if isinstance(wav_b, torch.Tensor) and wav_b.ndim == 1 else wav_b, "wav_b")
    if wav_a.shape[0] != wav_b.shape[0]:
        raise ValueError(f"wav_a has batch {wav_a.shape[0]}, wav_b has batch {wav_b.shape[0]}")
    num_samples = min(wav_a.shape[1], wav_b.shape[1])
    key = (dsp.backend(), sample_rate)
    if key not in _MEL_CACHE:
        _MEL_CACHE[key] = dsp.MelSpectrogram(sample_rate, 1024, sample_rate // 100, 80, power=1.0)
    mel = _MEL_CACHE[key]
    logmel_a = mel(wav_a[:, :num_samples]).clamp(min=1e-5).log()
    logmel_b = mel(wav_b[:, :num_samples]).clamp(min=1e-5).log()
    return float((logmel_a - logmel_b).abs().mean())
