"""MFCCKMeans, the offline semantic tokenizer: MFCC frames at 25 Hz + k-means (HuBERT iteration 1).

Features: 13 MFCCs with deltas and delta-deltas (39 dims; :mod:`soundstorm.dsp`) at 16 kHz with a 40 ms
hop (25 frames/s), normalised by the mean and standard deviation measured when fitting, then
assigned to the nearest of ``vocab_size`` k-means centroids (scikit-learn) — the targets HuBERT's
first training iteration clusters.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from soundstorm import dsp
from soundstorm._checks import check_positive_ints
from soundstorm import limits
from soundstorm.io import load_component, save_component
from soundstorm._kmeans import fit_kmeans, nearest
from soundstorm.semantic.base import check_mono


@dataclass
class MFCCKMeansConfig:
    """Settings of :class:`MFCCKMeans`; ``sample_rate / frame_rate`` must be an integer hop."""

    sample_rate: int = 16_000
    frame_rate: float = 25.0
    vocab_size: int = 1024
    n_mfcc: int = 13
    n_mels: int = 40
    n_fft: int = 1024
    fit_iters: int = 30
    fit_max_frames: int = 100_000
    seed: int = 0

    def __post_init__(self):
        check_positive_ints("MFCCKMeansConfig", self, ("sample_rate", "vocab_size", "n_mfcc", "n_mels", "n_fft",
                                                       "fit_iters", "fit_max_frames"))
        for name, limit in (("sample_rate", "max_sample_rate"), ("n_fft", "max_n_fft"), ("n_mels", "max_n_mels"),
                            ("n_mfcc", "max_n_mels"), ("vocab_size", "max_codebook_size")):
            limits.check_at_most(getattr(self, name), limit, f"MFCCKMeansConfig.{name}")
        hop = self.sample_rate / self.frame_rate if self.frame_rate > 0 else 0.0
        if self.frame_rate <= 0 or hop != int(hop):
            raise ValueError(f"MFCCKMeansConfig.frame_rate={self.frame_rate} must divide sample_rate="
                             f"{self.sample_rate} into an integer hop")

    @property
    def hop_length(self) -> int:
        return int(self.sample_rate / self.frame_rate)


class MFCCKMeans:
    """MFCC + deltas, normalised, k-means. Unfitted until :meth:`fit` or :meth:`load`."""

    name = "mfcc_kmeans"

    def __init__(self, config: MFCCKMeansConfig | None = None, state: dict[str, torch.Tensor] | None = None):
        self.config = config = config or MFCCKMeansConfig()
        self.sample_rate, self.frame_rate, self.vocab_size = config.sample_rate, float(config.frame_rate), config.vocab_size
        win = min(config.n_fft, 2 * config.hop_length)
        self.mfcc = dsp.MFCC(config.sample_rate, config.n_mfcc, config.n_fft, win, config.hop_length, config.n_mels)
        self.state = None
        if state is not None:
            self._set_state(state)

    def _set_state(self, state: dict[str, torch.Tensor]) -> None:
        dim = 3 * self.config.n_mfcc
        expected = {"centroids": (self.vocab_size, dim), "mean": (dim,), "std": (dim,)}
        for key, shape in expected.items():
            if key not in state or tuple(state[key].shape) != shape:
                got = tuple(state[key].shape) if key in state else None
                raise ValueError(f"MFCCKMeans state {key!r} has shape {got}, expected {shape}")
        self.state = {k: state[k].float() for k in expected}

    @property
    def is_fitted(self) -> bool:
        return self.state is not None

    def features(self, wav_BN: torch.Tensor) -> torch.Tensor:
        """Un-normalised MFCC + Δ + ΔΔ frames ``[B, S, 3 * n_mfcc]``, ``S = num_frames(N)``."""
        mfcc_BCS = self.mfcc(check_mono(wav_BN))
        delta_BCS = dsp.compute_deltas(mfcc_BCS)
        feats_BCS = torch.cat([mfcc_BCS, delta_BCS, dsp.compute_deltas(delta_BCS)], dim=1)
        return feats_BCS.transpose(1, 2)

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.config.hop_length + 1

    def fit(self, wavs: list[torch.Tensor]) -> "MFCCKMeans":
        """Fit normalisation and centroids on ``wavs`` (1-D tensors at ``sample_rate``)."""
        if not wavs:
            raise ValueError("MFCCKMeans.fit needs at least one waveform, got none")
        frames_ND = torch.cat([self.features(w.reshape(1, -1))[0] for w in wavs])
        mean_D, std_D = frames_ND.mean(0), frames_ND.std(0).clamp(min=1e-5)
        cfg = self.config
        centroids = fit_kmeans((frames_ND - mean_D) / std_D, cfg.vocab_size, cfg.seed, cfg.fit_iters,
                               cfg.fit_max_frames, what="MFCCKMeans.fit")
        self._set_state({"centroids": centroids, "mean": mean_D, "std": std_D})
        return self

    @torch.no_grad()
    def tokenize(self, wav_BN: torch.Tensor, lengths_B: torch.Tensor | None = None) -> torch.Tensor:
        """Ids ``[B, S]``. ``lengths_B`` is accepted for API symmetry (frames are local)."""
        if self.state is None:
            raise ValueError("MFCCKMeans is not fitted: call fit(wavs) or load_tokenizer(directory) first")
        feats_BSD = (self.features(wav_BN) - self.state["mean"]) / self.state["std"]
        batch, num_frames, dim = feats_BSD.shape
        return nearest(feats_BSD.reshape(-1, dim), self.state["centroids"]).reshape(batch, num_frames)

    def describe(self) -> dict:
        return {"name": self.name, "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                "vocab_size": self.vocab_size, "n_mfcc": self.config.n_mfcc}

    def save(self, directory) -> None:
        if self.state is None:
            raise ValueError("MFCCKMeans is not fitted; nothing to save")
        save_component(directory, {"name": self.name, "config": dataclasses.asdict(self.config)}, self.state)

    @classmethod
    def load(cls, directory) -> "MFCCKMeans":
        config, tensors = load_component(directory, "MFCCKMeans")
        if config["name"] != cls.name:
            raise ValueError(f"{directory} holds tokenizer {config['name']!r}, expected {cls.name!r}")
        try:
            mfcc_config = MFCCKMeansConfig(**config["config"])
        except (TypeError, ValueError) as err:  # an unknown key, a bad value or one above soundstorm.limits
            raise ValueError(f"{directory}/config.json: {err}") from err
        return cls(mfcc_config, tensors)
