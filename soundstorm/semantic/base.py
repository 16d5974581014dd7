"""The semantic tokenizer protocol and the rules that tie semantic frames to codec frames.

A tokenizer has ``name``, ``sample_rate``, ``frame_rate`` (frames/s, e.g. 25.0), ``vocab_size``,
``tokenize(wav_BN) -> ids [B, S]``, ``num_frames(num_samples)``, ``describe()`` and ``save(dir)``.
The codec frame rate must be an integer multiple of the semantic rate (the model's
``semantic_upsample``); :func:`align_lengths` decides how per-utterance lengths are reconciled.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from soundstorm.codecs.base import check_wav


@runtime_checkable
class SemanticTokenizer(Protocol):
    name: str
    sample_rate: int
    frame_rate: float
    vocab_size: int

    def tokenize(self, wav_BN: torch.Tensor) -> torch.Tensor: ...

    def num_frames(self, num_samples: int) -> int: ...

    def describe(self) -> dict: ...

    def save(self, directory) -> None: ...


def upsample_ratio(codec_frame_rate: float, semantic_frame_rate: float) -> int:
    """``codec_frame_rate / semantic_frame_rate`` as a positive integer, else a ``ValueError``."""
    if not semantic_frame_rate or semantic_frame_rate <= 0 or codec_frame_rate <= 0:
        raise ValueError(f"frame rates must be positive, got codec frame rate {codec_frame_rate} Hz and "
                         f"semantic frame rate {semantic_frame_rate} Hz")
    ratio = codec_frame_rate / semantic_frame_rate
    if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
        raise ValueError(f"the codec frame rate {codec_frame_rate} Hz is not an integer multiple of the semantic "
                         f"frame rate {semantic_frame_rate} Hz (ratio {ratio:.4f}); semantic tokens are repeated "
                         "an integer number of times per codec frame, so choose rates whose ratio is an integer")
    return int(round(ratio))


def align_lengths(num_codec_frames: int, num_semantic_frames: int, upsample: int) -> tuple[int, int]:
    """Lengths ``(T, S)`` to store so that ``S * upsample == T``.

    The codec and the tokenizer frame the same audio slightly differently (padding, window
    centring), so their counts can differ by a frame. We keep ``S = min(S, T // upsample)``
    semantic frames and ``T = S * upsample`` codec frames, i.e. trim the tail. At most one
    semantic frame and fewer than ``upsample`` codec frames beyond that may be dropped; a larger
    mismatch means the two were run on different audio and raises ``ValueError``.
    """
    kept_semantic = min(num_semantic_frames, num_codec_frames // upsample)
    kept_codec = kept_semantic * upsample
    if num_semantic_frames - kept_semantic > 1 or num_codec_frames - kept_codec >= 2 * upsample:
        raise ValueError(f"{num_codec_frames} codec frames and {num_semantic_frames} semantic frames do not describe "
                         f"the same audio at upsample {upsample} (expected T ≈ S × {upsample}); refusing to trim "
                         "more than one semantic frame")
    return kept_codec, kept_semantic


def check_mono(wav, what: str = "wav") -> torch.Tensor:
    """Accept ``[B, N]`` or ``[B, 1, N]`` float audio; return ``[B, N]`` float32."""
    return check_wav(wav, what)
