"""Reading audio a user gives: one check for every reader (prepare, generate, dialogue prompts, eval).

One job: turn a path into a mono float waveform, or into a reason it cannot be used (:func:`read_audio`).
The checks, in order: the file exists and is not empty; libsndfile reads it; its sample rate is at most
:attr:`~soundstorm.limits.Limits.max_sample_rate` (any lower rate is resampled by the caller,
:func:`resample`); it has samples; every sample is finite; a *float* file (WAV/FLAC subtype FLOAT or
DOUBLE, whose samples libsndfile returns unscaled) peaks at most 1.0, so int16-scale values saved as
float (peak ≈ 20,000) are refused instead of encoded into codes that no longer describe the audio;
it is not silent; it is at least ``min_seconds`` long (the caller's minimum for its model's frame
rate). Channels are mixed down to mono (their mean).

Prepare skips a file with a :class:`BadAudio` reason and lists it; the CLIs that were handed one
file refuse it through :func:`load_audio`, naming the field, the file and the reason. Resampling:
:func:`soundstorm.dsp.resample`.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from soundstorm import dsp, limits

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SILENCE_PEAK = 1e-4  # about -80 dBFS
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # samples stored as floats: libsndfile returns them unscaled
MAX_FLOAT_PEAK = 1.0


class BadAudio(Exception):
    """A source file that cannot be used; ``str()`` is the reason (without the file's name)."""


def read_audio(path, min_seconds: float, minimum: str = "one semantic frame") -> tuple[torch.Tensor, int]:
    """Mono ``wav_N`` (float32) and its sample rate; ``BadAudio`` with a reason for a file that cannot be
    used (see the module docstring for the checks). ``min_seconds``: the shortest usable duration, which
    ``minimum`` names in the reason."""
    path = Path(path)
    if not path.is_file():
        raise BadAudio("not found" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise BadAudio("empty (0-byte file)")
    try:
        with sf.SoundFile(str(path)) as f:
            sample_rate, subtype = int(f.samplerate), f.subtype
            if sample_rate > limits.current().max_sample_rate:
                raise BadAudio(f"sample rate {sample_rate} Hz is above the accepted maximum "
                               f"{limits.current().max_sample_rate} Hz (limit max_sample_rate); "
                               f"{limits.how_to_raise('max_sample_rate')}")
            data = f.read(dtype="float32", always_2d=True)
    except BadAudio:
        raise
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError, ...
        raise BadAudio(f"unreadable as audio ({type(err).__name__}: {err}); expected a .wav, .flac or .ogg "
                       "file") from err
    if data.size == 0:
        raise BadAudio("empty (no samples)")
    finite = np.isfinite(data)
    if not finite.all():
        first = int(np.argmin(finite.all(axis=1)))
        raise BadAudio(f"contains NaN or inf samples (the first at {first / sample_rate:.3f} s); expected finite "
                       "audio")
    peak = float(np.abs(data).max())
    if subtype in FLOAT_SUBTYPES and peak > MAX_FLOAT_PEAK:
        raise BadAudio(f"a float ({subtype}) file whose samples peak at {peak:,.1f}, outside [-1, 1] (values of "
                       f"int16 scale saved as float?); rescale it to [-1, 1] (e.g. divide int16 values by 32768) "
                       "or save it as 16-bit PCM")
    wav_N = torch.from_numpy(data.mean(axis=1))
    if float(wav_N.abs().max()) < SILENCE_PEAK:
        raise BadAudio(f"silent (peak below {SILENCE_PEAK})")
    seconds = wav_N.shape[0] / sample_rate
    if seconds < min_seconds:
        raise BadAudio(f"too short ({seconds:.3f} s < {minimum}, {min_seconds:.3f} s)")
    return wav_N, sample_rate


def load_audio(path, field: str, min_seconds: float = 0.0, sample_rate: int | None = None,
               minimum: str = "one semantic frame") -> tuple[torch.Tensor, int]:
    """:func:`read_audio` for a file a user named in ``field``: ``(wav_N, rate)``, resampled to
    ``sample_rate`` when given; a missing file is a ``FileNotFoundError``, any other reason a
    ``ValueError``, both naming ``field``, the file and the reason."""
    try:
        wav_N, rate = read_audio(path, min_seconds, minimum)
    except BadAudio as err:
        error = FileNotFoundError if str(err) == "not found" else ValueError
        raise error(f"{field}={str(path)!r}: {err}") from err
    if sample_rate is not None:
        wav_N, rate = resample(wav_N, rate, sample_rate), sample_rate
    return wav_N, rate


def display_path(path) -> str:
    """``path`` as text that can always be printed: bytes that are not UTF-8 (a file name from another
    system, held by Python as surrogate escapes) shown as ``\\xNN``."""
    text = str(path)
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte (from a JSON "\\udXXX" escape)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
