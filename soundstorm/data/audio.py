"""Reading source audio for token preparation: soundfile I/O, mono mixdown, sanity checks.

One job: turn a path into a mono float waveform, or into a reason it must be skipped (unreadable,
empty, NaN/inf samples, silent, shorter than one semantic frame). Resampling:
:func:`soundstorm.dsp.resample`.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from soundstorm import dsp

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SILENCE_PEAK = 1e-4  # about -80 dBFS


class BadAudio(Exception):
    """A source file that is skipped; ``str()`` is the reason."""


def read_audio(path, min_seconds: float) -> tuple[torch.Tensor, int]:
    """Mono ``wav_N`` (float32) and its sample rate; ``BadAudio`` with a reason for a file to skip."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise BadAudio("empty (0-byte file)")
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError, ...
        raise BadAudio(f"unreadable ({type(err).__name__}: {err})") from err
    if data.size == 0:
        raise BadAudio("empty (no samples)")
    if not np.isfinite(data).all():
        raise BadAudio("contains NaN or inf samples")
    wav_N = torch.from_numpy(data.mean(axis=1))
    if float(wav_N.abs().max()) < SILENCE_PEAK:
        raise BadAudio(f"silent (peak below {SILENCE_PEAK})")
    seconds = wav_N.shape[0] / sample_rate
    if seconds < min_seconds:
        raise BadAudio(f"too short ({seconds:.3f} s < one semantic frame, {min_seconds:.3f} s)")
    return wav_N, int(sample_rate)


def resample(wav_N: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    return wav_N if from_rate == to_rate else dsp.resample(wav_N, from_rate, to_rate)


def list_folder(folder: Path) -> list[dict]:
    """Audio files under ``folder`` (recursively, sorted; hidden files and folders, such as the temporary
    files of an interrupted synthesis, are left out). Ids are relative paths without suffix, with ``__``
    for ``/``; files that would share an id (``a.wav``, ``a.flac``) keep their suffix."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    stems = ["__".join(p.relative_to(folder).with_suffix("").parts) for p in paths]
    return [{"utt_id": stem if stems.count(stem) == 1 else "__".join(path.relative_to(folder).parts),
             "path": str(path), "text": ""} for stem, path in zip(stems, paths)]
