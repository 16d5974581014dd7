"""MelRVQCodec, the offline codec: log-mel frames quantised by residual k-means codebooks.

Encoding: 24 kHz audio → log-mel frames at ``frame_rate`` (50/s as in the paper) → Q residual
k-means codebooks fitted on data (:meth:`MelRVQCodec.fit`). Decoding: sum the chosen codewords per
frame, smooth the log-mel frames over time (``decode_smoothing``), ``exp`` back to a mel magnitude,
invert with ``InverseMelScale`` + ``GriffinLim`` (:mod:`soundstorm.dsp`: torchaudio's, or the same
computed in torch). Decoding a prefix of the levels (``codes[:, :q]``) is the codec at Q = q (the RVQ
property).

Why the smoothing: a wrong code is a wrong frame. Quantisation error, and above all a model's
frame-by-frame code choices, are close to independent from one frame to the next, while a speech
envelope at 50 frames/s changes over several frames. A 3-tap low-pass (weights 1, 3, 1) averages the
independent errors and blurs the envelope only a little. On generated codes it buys far more
intelligibility than it costs on true codes, which it blurs too (the CPU quickstart's WER with and
without it, and the other filters tried: ``docs/quickstart.md``,
``docs/results/quickstart_decode_smoothing.json``). ``decode_smoothing=[1.0]`` turns it off; codecs
saved before the setting existed load with it off.

Why ``first_level_cepstra``: a 25-minute model learns the first level far better than the finer ones, so
what a listener understands of its output is mostly what the first level carries. Matched on whole log-mel
frames, the first level spends its 1024 codes on loudness and on the harmonics of each voice's pitch as
much as on the spectral envelope that tells one phone from another. With ``first_level_cepstra=C`` it
chooses its code by the frame's first C cepstral coefficients (the DCT of the log-mel: the envelope) and
its codewords are the mean log-mel frames of their clusters; the later levels code what is left (pitch
detail, loudness). Decoding is unchanged. On the quickstart corpus C = 20 made the true first level read
better to a recognizer: by 0.045 WER on a Zen 3 VM, but by 0.02 on an Ice Lake VM, where all four levels then
read worse than the plain codec's (docs/quickstart.md). The gain depends on the machine the fit ran on, so
the quickstart keeps 0. 0 (the default, and codecs saved before the setting) matches whole frames.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange

from soundstorm import dsp, limits
from soundstorm._checks import check_positive_ints
from soundstorm.io import load_component, save_component
from soundstorm._kmeans import fit_residual, residual_decode, residual_encode
from soundstorm.codecs.base import check_codes, check_wav

LOG_FLOOR = 1e-5


@dataclass
class MelRVQConfig:
    """Settings of :class:`MelRVQCodec`; ``sample_rate / frame_rate`` must be an integer hop."""

    sample_rate: int = 24_000
    frame_rate: float = 50.0
    num_levels: int = 12
    codebook_size: int = 1024
    n_fft: int = 1024
    n_mels: int = 80
    griffin_lim_iters: int = 32
    fit_iters: int = 30
    fit_max_frames: int = 100_000
    seed: int = 0
    # weights of a low-pass over time applied to the decoded log-mel frames (odd length, normalised to sum
    # to 1; [1.0]: off); see the module docstring for why
    decode_smoothing: list[float] = field(default_factory=lambda: [1.0, 3.0, 1.0])
    # the first level matches frames on their first this-many cepstral coefficients (0: whole frames); see
    # the module docstring for why
    first_level_cepstra: int = 0

    def __post_init__(self):
        check_positive_ints("MelRVQConfig", self, ("sample_rate", "num_levels", "codebook_size", "n_fft", "n_mels",
                                                   "griffin_lim_iters", "fit_iters", "fit_max_frames"))
        for name, limit in (("sample_rate", "max_sample_rate"), ("n_fft", "max_n_fft"), ("n_mels", "max_n_mels"),
                            ("griffin_lim_iters", "max_griffin_lim_iters"), ("num_levels", "max_num_levels"),
                            ("codebook_size", "max_codebook_size")):
            limits.check_at_most(getattr(self, name), limit, f"MelRVQConfig.{name}")
        weights = list(self.decode_smoothing) if isinstance(self.decode_smoothing, (list, tuple)) else None
        if (not weights or len(weights) % 2 == 0 or any(not isinstance(w, (int, float)) or not math.isfinite(w)
                                                        or w < 0 for w in weights) or sum(weights) <= 0):
            raise ValueError(f"MelRVQConfig.decode_smoothing={self.decode_smoothing!r} must be an odd-length list of "
                             "finite non-negative weights with a positive sum, e.g. [1.0, 3.0, 1.0] or [1.0] (off)")
        self.decode_smoothing = [float(w) for w in weights]
        cepstra = self.first_level_cepstra
        if isinstance(cepstra, bool) or not isinstance(cepstra, int) or not 0 <= cepstra <= self.n_mels:
            raise ValueError(f"MelRVQConfig.first_level_cepstra={cepstra!r} must be an integer from 0 (match whole "
                             f"log-mel frames) to n_mels={self.n_mels}")
        hop = self.sample_rate / self.frame_rate if self.frame_rate > 0 else 0.0
        if self.frame_rate <= 0 or hop != int(hop):
            raise ValueError(f"MelRVQConfig.frame_rate={self.frame_rate} must divide sample_rate={self.sample_rate} "
                             "into an integer hop")
        if self.n_fft < hop:
            raise ValueError(f"MelRVQConfig.n_fft={self.n_fft} must be at least the hop {int(hop)}")

    @property
    def hop_length(self) -> int:
        return int(self.sample_rate / self.frame_rate)


def smooth_frames(mel_BFT: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """``mel_BFT`` low-passed over time with ``weights`` (normalised to sum 1; edges repeat the first and
    last frame, so a constant stays constant and the length is kept). One weight returns the input."""
    if len(weights) == 1:
        return mel_BFT
    batch, num_bins, num_frames = mel_BFT.shape
    kernel = torch.tensor(weights, dtype=mel_BFT.dtype, device=mel_BFT.device)
    pad = len(weights) // 2
    frames_N1T = F.pad(mel_BFT.reshape(batch * num_bins, 1, num_frames), (pad, pad), mode="replicate")
    return F.conv1d(frames_N1T, (kernel / kernel.sum()).view(1, 1, -1)).reshape(batch, num_bins, num_frames)


class MelRVQCodec:
    """Log-mel RVQ codec. Unfitted until :meth:`fit` (or :meth:`load`) sets the codebooks."""

    name = "melrvq"

    def __init__(self, config: MelRVQConfig | None = None, codebooks_QKF: torch.Tensor | None = None):
        self.config = config = config or MelRVQConfig()
        self.sample_rate = config.sample_rate
        self.frame_rate = float(config.frame_rate)
        self.num_levels = config.num_levels
        self.codebook_size = config.codebook_size
        self.mel = dsp.MelSpectrogram(config.sample_rate, config.n_fft, config.hop_length, config.n_mels, power=1.0)
        self.inverse_mel = dsp.InverseMelScale(config.n_fft // 2 + 1, config.n_mels, config.sample_rate)
        self.griffin_lim = dsp.GriffinLim(config.n_fft, config.griffin_lim_iters, config.hop_length, power=1.0)
        # [F, C] orthonormal DCT-II: the first level's view of a log-mel frame (None: the whole frame)
        self.first_basis_FC = dsp.dct_matrix(config.first_level_cepstra, config.n_mels) \
            if config.first_level_cepstra else None
        self.codebooks_QKF = None
        if codebooks_QKF is not None:
            self._set_codebooks(codebooks_QKF)

    def _set_codebooks(self, codebooks_QKF: torch.Tensor) -> None:
        expected = (self.num_levels, self.codebook_size, self.config.n_mels)
        if tuple(codebooks_QKF.shape) != expected:
            raise ValueError(f"MelRVQ codebooks have shape {tuple(codebooks_QKF.shape)}, expected {expected} "
                             "(num_levels, codebook_size, n_mels)")
        self.codebooks_QKF = codebooks_QKF.float()

    @property
    def is_fitted(self) -> bool:
        return self.codebooks_QKF is not None

    def _require_fitted(self) -> torch.Tensor:
        if self.codebooks_QKF is None:
            raise ValueError("MelRVQCodec is not fitted: call fit(wavs) or MelRVQCodec.load(directory) first")
        return self.codebooks_QKF

    def codebook_vectors(self) -> torch.Tensor:
        """``[Q, K, F]`` log-mel residual vectors: a frame's log-mel is the sum of its codes' vectors."""
        return self._require_fitted()

    # ------------------------------------------------------------------ features
    def log_mel(self, wav_BN: torch.Tensor) -> torch.Tensor:
        """``[B, F, T]`` natural-log mel magnitudes, ``T = num_frames(N)``."""
        return self.mel(check_wav(wav_BN)).clamp(min=LOG_FLOOR).log()

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.config.hop_length + 1

    def fit(self, wavs: list[torch.Tensor]) -> "MelRVQCodec":
        """Fit the Q residual codebooks on the log-mel frames of ``wavs`` (1-D tensors at sample_rate)."""
        if not wavs:
            raise ValueError("MelRVQCodec.fit needs at least one waveform, got none")
        frames = [self.log_mel(w.reshape(1, -1))[0].t() for w in wavs]
        cfg = self.config
        self._set_codebooks(fit_residual(torch.cat(frames), cfg.num_levels, cfg.codebook_size, cfg.seed,
                                         cfg.fit_iters, cfg.fit_max_frames, what="MelRVQCodec.fit",
                                         first_basis_DC=self.first_basis_FC))
        return self

    @property
    def min_decode_frames(self) -> int:
        """The fewest frames :meth:`decode` takes: Griffin-Lim's STFT pads ``n_fft // 2`` samples by
        reflection, which needs more than that many output samples, ``(T - 1) × hop``."""
        return self.config.n_fft // 2 // self.config.hop_length + 2

    # ------------------------------------------------------------------ codec
    @torch.no_grad()
    def encode(self, wav_BN: torch.Tensor) -> torch.Tensor:
        codebooks_QKF = self._require_fitted()
        mel_BFT = self.log_mel(wav_BN)
        batch = mel_BFT.shape[0]
        codes_QN = residual_encode(rearrange(mel_BFT, "b f t -> (b t) f"), codebooks_QKF, self.first_basis_FC)
        return rearrange(codes_QN, "q (b t) -> b q t", b=batch).contiguous()

    def decode_mel(self, codes_BQT: torch.Tensor) -> torch.Tensor:
        """Quantised log-mel ``[B, F, T]`` from codes with 1..Q levels."""
        codebooks_QKF = self._require_fitted()
        codes_BQT = check_codes(codes_BQT, self.num_levels, self.codebook_size)
        batch = codes_BQT.shape[0]
        mel_NF = residual_decode(rearrange(codes_BQT, "b q t -> q (b t)"), codebooks_QKF)
        return rearrange(mel_NF, "(b t) f -> b f t", b=batch)

    @torch.no_grad()
    def decode(self, codes_BQT: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, (T - 1) * hop]``: the quantised log-mel, smoothed over time (``decode_smoothing``),
        inverted by InverseMelScale + GriffinLim (deterministic init)."""
        mel_BFT = smooth_frames(self.decode_mel(codes_BQT), self.config.decode_smoothing).exp()
        return self.griffin_lim(self.inverse_mel(mel_BFT).clamp(min=0.0))

    # ------------------------------------------------------------------ persistence
    def describe(self) -> dict:
        described = {"name": self.name, "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                     "num_levels": self.num_levels, "codebook_size": self.codebook_size,
                     # the token bitrate, Q × log2(K) bits per frame (12 × 10 bits at 50/s = 6 kbps, as SoundStream)
                     "bandwidth_kbps": self.num_levels * math.log2(self.codebook_size) * self.frame_rate / 1000,
                     "n_mels": self.config.n_mels, "n_fft": self.config.n_fft}
        if len(self.config.decode_smoothing) > 1:  # off ([1.0]) is left out: older codecs describe as they did
            described["decode_smoothing"] = list(self.config.decode_smoothing)
        if self.config.first_level_cepstra:  # likewise left out at 0
            described["first_level_cepstra"] = self.config.first_level_cepstra
        return described

    def save(self, directory) -> None:
        save_component(directory, {"name": self.name, "config": dataclasses.asdict(self.config)},
                       {"codebooks": self._require_fitted()})

    @classmethod
    def load(cls, directory) -> "MelRVQCodec":
        config, tensors = load_component(directory, "MelRVQCodec")
        if config["name"] != cls.name:
            raise ValueError(f"{directory} holds codec {config['name']!r}, expected {cls.name!r}")
        if "codebooks" not in tensors:
            raise ValueError(f"{directory}: weights have no 'codebooks' tensor, got {sorted(tensors)}")
        settings = dict(config["config"])
        settings.setdefault("decode_smoothing", [1.0])  # saved before the setting existed: decode as it did then
        settings.setdefault("first_level_cepstra", 0)  # likewise: match whole frames, as it was fitted
        try:
            melrvq_config = MelRVQConfig(**settings)
        except (TypeError, ValueError) as err:  # an unknown key, a bad value or one above soundstorm.limits
            raise ValueError(f"{directory}/config.json: {err}") from err
        return cls(melrvq_config, tensors["codebooks"])
