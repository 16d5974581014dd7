"""The audio DSP the library needs: resampling, mel spectrograms, inverse mel, Griffin-Lim, MFCC, deltas.

Why this module: torchaudio is the well-kept home of these transforms, but it pins torch (each
release up to 2.10 requires exactly its own torch; 2.11.1, the last, requires ``torch>=2.11``), so
the library cannot require it without making pip replace a researcher's torch. It is optional
instead (see :mod:`soundstorm._optional`). Two backends compute the same things:

- ``torchaudio`` (used when it imports and runs): its own transforms, so on the pinned stack every
  feature, token and decoded waveform is exactly what it was before this module existed;
- ``torch``: torch-native versions written to torchaudio's definitions (its 2.9 source): the same
  STFT call (Hann window, centred, reflect padding), HTK mel filters without normalisation,
  least-squares inverse mel (``gels``), fast Griffin-Lim (momentum 0.99, zero initial phase), dB
  with an 80 dB floor and an orthonormal DCT-II for MFCCs, 5-tap deltas, and windowed-sinc
  resampling (Hann window, 6 zero crossings, roll-off 0.99). Chosen over librosa or soxr because
  those define the filters differently (slaney mels, another resampler), so codecs and tokenizers
  fitted with torchaudio would not give the same codes; and it adds no dependency.
  ``tests/test_dsp.py`` checks both agree on the pinned stack.

The backend is chosen once per process: ``SOUNDSTORM_DSP=torchaudio|torch|auto`` (default
``auto``: torchaudio when it imports and passes a tiny smoke run, else torch; a torchaudio that is
installed but broken, e.g. built for another torch, is reported once in a warning). A transform
object keeps the backend it was built with; :func:`use_backend` switches it for tests.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings

import torch
import torch.nn.functional as F

from soundstorm._optional import require

BACKENDS = ("torchaudio", "torch")
TOP_DB = 80.0  # torchaudio.transforms.MFCC's floor below the loudest bin
AMIN = 1e-10  # smallest power before log10 (torchaudio's AmplitudeToDB)
GRIFFIN_LIM_MOMENTUM = 0.99  # torchaudio's default
_COMPLEX = {torch.float16: torch.complex32, torch.float32: torch.complex64, torch.float64: torch.complex128}

_chosen: str | None = None


def backend() -> str:
    """The backend new transforms use: ``"torchaudio"`` or ``"torch"`` (see the module docstring)."""
    global _chosen
    if _chosen is None:
        _chosen = _choose(os.environ.get("SOUNDSTORM_DSP", "auto"))
    return _chosen


@contextlib.contextmanager
def use_backend(name: str):
    """Within the block, new transforms and functions use backend ``name`` (tests compare the two)."""
    global _chosen
    previous = _chosen
    _chosen = _choose(name)
    try:
        yield
    finally:
        _chosen = previous


def _choose(name: str) -> str:
    if name not in (*BACKENDS, "auto"):
        raise ValueError(f"SOUNDSTORM_DSP={name!r} is not supported; expected one of {(*BACKENDS, 'auto')}")
    if name == "torch":
        return name
    error = _torchaudio_error()
    if error is None:
        return "torchaudio"
    if name == "torchaudio":
        if isinstance(error, ModuleNotFoundError):
            require("torchaudio", "SOUNDSTORM_DSP=torchaudio")  # raises, naming the extra
        raise ImportError(f"SOUNDSTORM_DSP=torchaudio, but torchaudio does not run with torch {torch.__version__}: "
                          f"{type(error).__name__}: {error}")
    if not isinstance(error, ModuleNotFoundError):
        warnings.warn(f"torchaudio is installed but does not work with torch {torch.__version__} "
                      f"({type(error).__name__}: {error}); soundstorm uses its torch-native DSP instead",
                      RuntimeWarning, stacklevel=3)
    return "torch"


def _torchaudio_error() -> Exception | None:
    """None if torchaudio imports and computes a tiny mel spectrogram and resampling, else the error."""
    try:
        import torchaudio

        torchaudio.functional.resample(torch.zeros(1, 64), 4, 3)
        torchaudio.transforms.MelSpectrogram(8000, n_fft=64, hop_length=16, n_mels=8)(torch.zeros(1, 128))
    except Exception as err:  # noqa: BLE001 - any failure means: do not use it
        return err
    return None


def _torchaudio():
    import torchaudio

    return torchaudio


# ---------------------------------------------------------------------------------------------- resampling
def resample(wav: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """``wav [..., N]`` at ``from_rate`` Hz resampled to ``to_rate`` Hz (torchaudio's defaults:
    Hann-windowed sinc, 6 zero crossings, roll-off 0.99; ``ceil(N × to / from)`` samples)."""
    if from_rate <= 0 or to_rate <= 0 or int(from_rate) != from_rate or int(to_rate) != to_rate:
        raise ValueError(f"resample needs positive integer rates, got from_rate={from_rate!r}, to_rate={to_rate!r}")
    if from_rate == to_rate:
        return wav
    if backend() == "torchaudio":
        return _torchaudio().functional.resample(wav, int(from_rate), int(to_rate))
    return _sinc_resample(wav, int(from_rate), int(to_rate))


def _sinc_resample(wav: torch.Tensor, from_rate: int, to_rate: int, zeros: int = 6, rolloff: float = 0.99):
    """torchaudio's ``functional.resample`` (sinc_interp_hann): a polyphase FIR bank, one filter per
    output phase, applied by a strided convolution; the kernel is computed in ``wav``'s dtype."""
    if not wav.is_floating_point():
        raise TypeError(f"resample needs floating point audio, got dtype {wav.dtype}")
    gcd = math.gcd(from_rate, to_rate)
    orig, new = from_rate // gcd, to_rate // gcd
    cutoff = min(orig, new) * rolloff
    width = math.ceil(zeros * orig / cutoff)
    dtype, device = wav.dtype, wav.device
    idx = torch.arange(-width, width + orig, dtype=dtype, device=device)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype, device=device)[:, None, None] / new + idx
    t = (t * cutoff).clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels = kernels * (window * (cutoff / orig))
    shape = wav.shape
    wav_RN = wav.reshape(-1, shape[-1])
    num_wavs, length = wav_RN.shape
    out = F.conv1d(F.pad(wav_RN, (width, width + orig))[:, None], kernels, stride=orig)
    out = out.transpose(1, 2).reshape(num_wavs, -1)
    # torchaudio rounds up the target length in float32 (torch.as_tensor of a Python float): kept, so
    # both backends return the same number of samples
    target = int(torch.ceil(torch.as_tensor(new * length / orig)))
    return out[..., :target].reshape(shape[:-1] + (-1,))


# ---------------------------------------------------------------------------------------------- spectra
def mel_filters(n_freqs: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """``[n_freqs, n_mels]`` HTK-scale triangular filters from 0 Hz to ``sample_rate // 2``, peak 1
    (``torchaudio.functional.melscale_fbanks`` with its defaults)."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_max = 2595.0 * math.log10(1.0 + float(sample_rate // 2) / 700.0)
    f_pts = 700.0 * (10.0 ** (torch.linspace(0.0, m_max, n_mels + 2) / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    filters = torch.max(torch.zeros(1), torch.min(down, up))
    if (filters.max(dim=0).values == 0.0).any():
        warnings.warn(f"a mel filter has all zero weights: n_mels={n_mels} is too high for {n_freqs} "
                      "frequency bins", UserWarning, stacklevel=2)
    return filters


def _stft_power(wav: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor, power: float):
    """``|STFT|^power`` ``[..., n_fft // 2 + 1, T]`` (centred frames, reflect padding; as torchaudio)."""
    shape = wav.shape
    spec = torch.stft(wav.reshape(-1, shape[-1]), n_fft=n_fft, hop_length=hop_length, win_length=window.shape[0],
                      window=window.to(wav.device), center=True, pad_mode="reflect", normalized=False,
                      onesided=True, return_complex=True)
    spec = spec.reshape(shape[:-1] + spec.shape[-2:])
    return spec.abs() if power == 1.0 else spec.abs().pow(power)


class MelSpectrogram:
    """``wav [..., N]`` → mel spectrogram ``[..., n_mels, N // hop_length + 1]`` of ``|STFT|^power``
    (``torchaudio.transforms.MelSpectrogram`` with these settings and its other defaults)."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, win_length: int | None = None,
                 power: float = 2.0):
        self.backend = backend()
        win_length = n_fft if win_length is None else win_length
        if self.backend == "torchaudio":
            self._impl = _torchaudio().transforms.MelSpectrogram(sample_rate, n_fft=n_fft, win_length=win_length,
                                                                 hop_length=hop_length, n_mels=n_mels, power=power)
        else:
            self.n_fft, self.hop_length, self.power = n_fft, hop_length, power
            self.window = torch.hann_window(win_length)
            self.filters_FM = mel_filters(n_fft // 2 + 1, n_mels, sample_rate)

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        if self.backend == "torchaudio":
            return self._impl(wav)
        spec = _stft_power(wav, self.n_fft, self.hop_length, self.window, self.power)
        return torch.matmul(spec.transpose(-1, -2), self.filters_FM.to(spec.device)).transpose(-1, -2)


class InverseMelScale:
    """Mel spectrogram ``[..., n_mels, T]`` → linear spectrogram ``[..., n_stft, T]``: the
    non-negative part of the least-squares solution (``torchaudio.transforms.InverseMelScale``)."""

    def __init__(self, n_stft: int, n_mels: int, sample_rate: int):
        self.backend = backend()
        if self.backend == "torchaudio":
            self._impl = _torchaudio().transforms.InverseMelScale(n_stft, n_mels, sample_rate)
        else:
            self.n_mels = n_mels
            self.filters_FM = mel_filters(n_stft, n_mels, sample_rate)

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        if self.backend == "torchaudio":
            return self._impl(mel)
        shape = mel.shape
        if shape[-2] != self.n_mels:
            raise ValueError(f"InverseMelScale expects {self.n_mels} mel bins, got {shape[-2]}")
        filters_MF = self.filters_FM.to(mel.device).transpose(-1, -2)[None]
        spec = torch.relu(torch.linalg.lstsq(filters_MF, mel.reshape(-1, shape[-2], shape[-1]), driver="gels").solution)
        return spec.reshape(shape[:-2] + (self.filters_FM.shape[0], shape[-1]))


class GriffinLim:
    """Magnitude spectrogram (``|STFT|^power``, ``[..., n_fft // 2 + 1, T]``) → waveform
    ``[..., (T - 1) × hop_length]``: fast Griffin-Lim with momentum 0.99 from zero phase, so the
    same input always gives the same output (``torchaudio.transforms.GriffinLim(rand_init=False)``)."""

    def __init__(self, n_fft: int, n_iter: int, hop_length: int, power: float = 1.0):
        self.backend = backend()
        if self.backend == "torchaudio":
            self._impl = _torchaudio().transforms.GriffinLim(n_fft, n_iter=n_iter, hop_length=hop_length,
                                                             power=power, rand_init=False)
        else:
            self.n_fft, self.n_iter, self.hop_length, self.power = n_fft, n_iter, hop_length, power
            self.window = torch.hann_window(n_fft)

    def __call__(self, spec: torch.Tensor) -> torch.Tensor:
        if self.backend == "torchaudio":
            return self._impl(spec)
        shape = spec.shape
        window = self.window.to(spec.device)
        magnitude = spec.reshape((-1,) + tuple(shape[-2:])).pow(1 / self.power)
        stft = dict(n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.n_fft, window=window)
        momentum = GRIFFIN_LIM_MOMENTUM / (1 + GRIFFIN_LIM_MOMENTUM)
        angles = torch.full(magnitude.shape, 1, dtype=_COMPLEX[magnitude.dtype], device=spec.device)
        previous = torch.tensor(0.0, dtype=magnitude.dtype, device=spec.device)
        for _ in range(self.n_iter):
            rebuilt = torch.stft(torch.istft(magnitude * angles, **stft), center=True, pad_mode="reflect",
                                 normalized=False, onesided=True, return_complex=True, **stft)
            angles = rebuilt - previous * momentum
            angles = angles.div(angles.abs().add(1e-16))
            previous = rebuilt
        wav = torch.istft(magnitude * angles, **stft)
        return wav.reshape(shape[:-2] + wav.shape[-1:])


# ---------------------------------------------------------------------------------------------- cepstra
def dct_matrix(n_mfcc: int, n_mels: int) -> torch.Tensor:
    """``[n_mels, n_mfcc]`` orthonormal DCT-II (``torchaudio.functional.create_dct(..., "ortho")``)."""
    n = torch.arange(float(n_mels))
    k = torch.arange(float(n_mfcc)).unsqueeze(1)
    dct = torch.cos(math.pi / float(n_mels) * (n + 0.5) * k)
    dct[0] *= 1.0 / math.sqrt(2.0)
    dct *= math.sqrt(2.0 / float(n_mels))
    return dct.t()


def power_to_db(power: torch.Tensor, top_db: float = TOP_DB) -> torch.Tensor:
    """``10 log10(max(power, 1e-10))`` floored ``top_db`` below the maximum (torchaudio's
    ``amplitude_to_DB``). As there, a ``[B, F, T]`` batch shares one floor (the whole batch's
    maximum); inputs of four or more axes get one per ``[C, F, T]`` item."""
    db = 10.0 * torch.log10(torch.clamp(power, min=AMIN))
    shape = db.shape
    packed = db.reshape(-1, shape[-3] if db.dim() > 2 else 1, shape[-2], shape[-1])
    packed = torch.max(packed, (packed.amax(dim=(-3, -2, -1)) - top_db).view(-1, 1, 1, 1))
    return packed.reshape(shape)


class MFCC:
    """``wav [..., N]`` → ``[..., n_mfcc, T]`` MFCCs: orthonormal DCT-II of the dB power mel spectrogram
    (``torchaudio.transforms.MFCC`` with ``melkwargs`` n_fft, win_length, hop_length, n_mels)."""

    def __init__(self, sample_rate: int, n_mfcc: int, n_fft: int, win_length: int, hop_length: int, n_mels: int):
        if n_mfcc > n_mels:
            raise ValueError(f"MFCC n_mfcc={n_mfcc} cannot exceed n_mels={n_mels}")
        self.backend = backend()
        if self.backend == "torchaudio":
            self._impl = _torchaudio().transforms.MFCC(sample_rate, n_mfcc=n_mfcc, melkwargs=dict(
                n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=n_mels))
        else:
            self.mel = MelSpectrogram(sample_rate, n_fft, hop_length, n_mels, win_length=win_length, power=2.0)
            self.dct_MC = dct_matrix(n_mfcc, n_mels)

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        if self.backend == "torchaudio":
            return self._impl(wav)
        mel_db = power_to_db(self.mel(wav))
        return torch.matmul(mel_db.transpose(-1, -2), self.dct_MC.to(mel_db.device)).transpose(-1, -2)


def compute_deltas(features: torch.Tensor, win_length: int = 5) -> torch.Tensor:
    """Regression deltas over time of ``features [..., C, T]`` (edges replicated), as
    ``torchaudio.functional.compute_deltas``: ``d_t = Σ_n n (c_{t+n} − c_{t−n}) / (2 Σ_n n²)``."""
    if backend() == "torchaudio":
        return _torchaudio().functional.compute_deltas(features, win_length=win_length)
    if win_length < 3:
        raise ValueError(f"compute_deltas win_length={win_length} must be at least 3")
    shape = features.shape
    rows = features.reshape(1, -1, shape[-1])
    n = (win_length - 1) // 2
    kernel = torch.arange(-n, n + 1, 1, device=features.device, dtype=features.dtype).repeat(rows.shape[1], 1, 1)
    twice_sum_of_squares = n * (n + 1) * (2 * n + 1) / 3
    deltas = F.conv1d(F.pad(rows, (n, n), mode="replicate"), kernel, groups=rows.shape[1]) / twice_sum_of_squares
    return deltas.reshape(shape)
