"""HubertKMeans: k-means over one layer of torchaudio's HuBERT-base, pooled to 25 frames/s.

HuBERT-base produces 768-d frames at 50/s from 16 kHz audio. We take the output of transformer
layer ``layer``, average ``downsample`` consecutive frames (2 → 25/s, the paper's semantic rate),
and assign each to the nearest of ``vocab_size`` centroids fitted with scikit-learn.
``pretrained=True`` loads ``torchaudio.pipelines.HUBERT_BASE`` (weights downloaded by torchaudio on
first use); ``pretrained=False`` builds the same architecture with seeded random weights (tests).
Needs torchaudio (its HuBERT model and pipeline): ``pip install 'soundstorm[hubert]'``.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from soundstorm._optional import require
from soundstorm.io import check_fingerprint, load_component, save_component, weights_fingerprint
from soundstorm._kmeans import fit_kmeans, nearest
from soundstorm.semantic.base import check_mono

HOP = 320  # HuBERT's convolutional front end: 20 ms at 16 kHz
RECEPTIVE_EXTRA = 80  # its first window is 400 samples = HOP + 80


class HubertKMeans:
    """HuBERT-base layer features + k-means, ``frame_rate = 50 / downsample``."""

    name = "hubert_kmeans"

    def __init__(self, layer: int = 6, vocab_size: int = 1024, downsample: int = 2, pretrained: bool = True,
                 seed: int = 0, fit_iters: int = 30, fit_max_frames: int = 100_000):
        if not 1 <= layer <= 12:
            raise ValueError(f"HubertKMeans layer={layer!r} must be in 1..12 (HuBERT-base has 12 layers)")
        for field, value in (("vocab_size", vocab_size), ("downsample", downsample)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HubertKMeans {field} must be a positive integer, got {value!r}")
        self.layer, self.vocab_size, self.downsample = layer, vocab_size, downsample
        self.pretrained, self.seed, self.fit_iters, self.fit_max_frames = bool(pretrained), seed, fit_iters, fit_max_frames
        torchaudio = require("torchaudio", "HubertKMeans (torchaudio's HuBERT-base)")
        if pretrained:
            bundle = torchaudio.pipelines.HUBERT_BASE
            try:
                model = bundle.get_model()
            except (OSError, RuntimeError) as err:
                raise RuntimeError(f"could not load torchaudio's HUBERT_BASE weights ({err}); they are downloaded on "
                                   "first use (needs internet); offline, use pretrained=False or MFCCKMeans") from err
            self.sample_rate = int(bundle.sample_rate)
        else:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                model = torchaudio.models.hubert_base()
            self.sample_rate = 16_000
        self.model = model.eval()
        self.frame_rate = self.sample_rate / HOP / downsample
        self.centroids = None

    @property
    def is_fitted(self) -> bool:
        return self.centroids is not None

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / (HOP * self.downsample))

    @torch.no_grad()
    def features(self, wav_BN: torch.Tensor) -> torch.Tensor:
        """Pooled layer features ``[B, S, 768]`` with ``S = num_frames(N)`` (padded to whole frames)."""
        wav_BN = check_mono(wav_BN)
        step = HOP * self.downsample
        num_semantic = self.num_frames(wav_BN.shape[1])
        wav_BN = F.pad(wav_BN, (0, num_semantic * step - wav_BN.shape[1] + RECEPTIVE_EXTRA))
        layers, _ = self.model.extract_features(wav_BN, None, num_layers=self.layer)
        feats_BTD = layers[self.layer - 1][:, : num_semantic * self.downsample]
        return feats_BTD.reshape(feats_BTD.shape[0], num_semantic, self.downsample, -1).mean(dim=2)

    def fit(self, wavs: list[torch.Tensor]) -> "HubertKMeans":
        """Fit the centroids on ``wavs`` (1-D tensors at 16 kHz)."""
        if not wavs:
            raise ValueError("HubertKMeans.fit needs at least one waveform, got none")
        frames_ND = torch.cat([self.features(w.reshape(1, -1))[0] for w in wavs])
        self.centroids = fit_kmeans(frames_ND, self.vocab_size, self.seed, self.fit_iters, self.fit_max_frames,
                                    what="HubertKMeans.fit")
        return self

    @torch.no_grad()
    def tokenize(self, wav_BN: torch.Tensor, lengths_B: torch.Tensor | None = None) -> torch.Tensor:
        """Ids ``[B, S]``. With ``lengths_B`` (samples) each item is run on its own unpadded audio,
        because HuBERT's first convolution normalises over time (GroupNorm), so zero padding would
        change every frame; positions past an item's own ``num_frames`` are 0."""
        if self.centroids is None:
            raise ValueError("HubertKMeans is not fitted: call fit(wavs) or load_tokenizer(directory) first")
        wav_BN = check_mono(wav_BN)
        ids_BS = torch.zeros(wav_BN.shape[0], self.num_frames(wav_BN.shape[1]), dtype=torch.long)
        if lengths_B is None:
            lengths_B = torch.full((wav_BN.shape[0],), wav_BN.shape[1])
        for b, length in enumerate(torch.as_tensor(lengths_B).tolist()):
            feats_SD = self.features(wav_BN[b : b + 1, : int(length)])[0]
            ids_BS[b, : feats_SD.shape[0]] = nearest(feats_SD, self.centroids)
        return ids_BS

    def describe(self) -> dict:
        return {"name": self.name, "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                "vocab_size": self.vocab_size, "layer": self.layer, "pretrained": self.pretrained}

    def save(self, directory) -> None:
        if self.centroids is None:
            raise ValueError("HubertKMeans is not fitted; nothing to save")
        config = {"name": self.name, "layer": self.layer, "vocab_size": self.vocab_size, "downsample": self.downsample,
                  "pretrained": self.pretrained, "seed": self.seed, "fit_iters": self.fit_iters,
                  "fit_max_frames": self.fit_max_frames}
        if not self.pretrained:
            config["fingerprint"] = weights_fingerprint(self.model)
        save_component(directory, config, {"centroids": self.centroids})

    @classmethod
    def load(cls, directory) -> "HubertKMeans":
        config, tensors = load_component(directory, "HubertKMeans")
        if config["name"] != cls.name:
            raise ValueError(f"{directory} holds tokenizer {config['name']!r}, expected {cls.name!r}")
        tokenizer = cls(config["layer"], config["vocab_size"], config["downsample"], config["pretrained"],
                        config["seed"], config["fit_iters"], config["fit_max_frames"])
        if not tokenizer.pretrained:
            check_fingerprint(tokenizer.model, config["fingerprint"], f"HubertKMeans at {directory}")
        if tuple(tensors.get("centroids", torch.empty(0)).shape[:1]) != (tokenizer.vocab_size,):
            raise ValueError(f"{directory}: centroids do not have vocab_size={tokenizer.vocab_size} rows")
        tokenizer.centroids = tensors["centroids"].float()
        return tokenizer
