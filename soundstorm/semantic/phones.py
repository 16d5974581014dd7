"""PhoneTokenizer, an offline content tokenizer: a small frame-level phone classifier; ids = its argmax.

Why: MFCC k-means clusters carry the voice (pitch, formants, timbre), so a model conditioned on them
copies the source speaker and no voice prompt can change it. A classifier trained to name the
*phone* in each frame, on speech of several speakers, keeps what is said and drops most of who
says it. Its training labels are the corpus's own phone alignments (festival writes them:
``soundstorm-synth-corpus --engine festival``); with real data, HuBERT k-means is the recipe.

Features: 40 log-mel bands at 100 frames/s (16 kHz), normalised per utterance (mean and standard
deviation over its real frames: removes the channel and part of the speaker), ``±context`` frames
stacked. An MLP predicts the phone; log-probabilities are averaged over the feature frames of each
token frame (``frame_rate`` must divide 100) and the most likely phone is the id.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
import torch
from torch import nn

from soundstorm import dsp, limits
from soundstorm._checks import check_positive_ints
from soundstorm.io import check_weights_fit, load_component, save_component
from soundstorm.semantic.base import check_mono

FEATURE_RATE = 100  # feature frames per second (10 ms hop)


@dataclass
class PhoneTokenizerConfig:
    """Settings of :class:`PhoneTokenizer`; ``vocab_size`` bounds the phone inventory found when fitting."""

    sample_rate: int = 16_000
    frame_rate: float = 25.0
    vocab_size: int = 64
    n_mels: int = 40
    context: int = 5
    hidden: int = 256
    fit_epochs: int = 8
    fit_batch_size: int = 256
    fit_lr: float = 2e-3
    fit_max_frames: int = 200_000
    seed: int = 0
    phones: List[str] = dataclasses.field(default_factory=list)  # the inventory, id order; filled by fit

    def __post_init__(self):
        check_positive_ints("PhoneTokenizerConfig", self, ("sample_rate", "vocab_size", "n_mels", "hidden",
                                                          "fit_epochs", "fit_batch_size", "fit_max_frames"))
        for name, limit in (("sample_rate", "max_sample_rate"), ("n_mels", "max_n_mels"),
                            ("vocab_size", "max_codebook_size")):
            limits.check_at_most(getattr(self, name), limit, f"PhoneTokenizerConfig.{name}")
        if isinstance(self.context, bool) or not isinstance(self.context, int) or self.context < 0:
            raise ValueError(f"PhoneTokenizerConfig.context must be an integer >= 0, got {self.context!r}")
        ratio = FEATURE_RATE / self.frame_rate if self.frame_rate > 0 else 0.0
        if self.frame_rate <= 0 or ratio != int(ratio):
            raise ValueError(f"PhoneTokenizerConfig.frame_rate={self.frame_rate} must divide {FEATURE_RATE} "
                             "(feature frames per second) into an integer")
        if self.sample_rate % FEATURE_RATE:
            raise ValueError(f"PhoneTokenizerConfig.sample_rate={self.sample_rate} must be a multiple of {FEATURE_RATE}")
        if len(self.phones) > self.vocab_size:
            raise ValueError(f"PhoneTokenizerConfig.phones has {len(self.phones)} phones, more than vocab_size="
                             f"{self.vocab_size}")

    @property
    def frames_per_token(self) -> int:
        return int(FEATURE_RATE / self.frame_rate)


def phone_labels(phones: list, num_frames: int, inventory: dict[str, int]) -> torch.Tensor:
    """Label ``[F]`` of each 10 ms frame (centre ``f / 100`` s) from ``[[phone, end_seconds], ...]``."""
    if not phones:
        raise ValueError("a phone alignment is empty; expected [[phone, end_seconds], ...]")
    ends = np.array([float(end) for _, end in phones])
    index = np.searchsorted(ends, np.arange(num_frames) / FEATURE_RATE, side="right").clip(max=len(phones) - 1)
    return torch.tensor([inventory[phones[i][0]] for i in index], dtype=torch.long)


class PhoneTokenizer:
    """Per-utterance normalised log-mel → MLP phone classifier → argmax ids. Unfitted until fit/load."""

    name = "phone_classifier"
    needs_alignments = True  # prepare passes the corpus's ``phones`` to fit()

    def __init__(self, config: PhoneTokenizerConfig | None = None, state: dict[str, torch.Tensor] | None = None):
        self.config = config = config or PhoneTokenizerConfig()
        self.sample_rate, self.frame_rate = config.sample_rate, float(config.frame_rate)
        self.vocab_size = config.vocab_size
        hop = config.sample_rate // FEATURE_RATE
        self.mel = dsp.MelSpectrogram(config.sample_rate, 4 * hop, hop, config.n_mels, win_length=int(2.5 * hop))
        width = config.n_mels * (2 * config.context + 1)
        with torch.random.fork_rng():  # seeded initial weights without touching the caller's generator
            torch.manual_seed(config.seed)
            self.net = nn.Sequential(nn.Linear(width, config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.hidden),
                                     nn.ReLU(), nn.Linear(config.hidden, config.vocab_size))
        self.is_fitted = False
        if state is not None:
            self.net.load_state_dict(state)
            self.is_fitted = True

    @staticmethod
    def net_shapes(config: PhoneTokenizerConfig) -> dict[str, tuple]:
        """The classifier's tensor shapes for ``config`` (checked against saved weights before building it)."""
        width = config.n_mels * (2 * config.context + 1)
        return {"0.weight": (config.hidden, width), "0.bias": (config.hidden,),
                "2.weight": (config.hidden, config.hidden), "2.bias": (config.hidden,),
                "4.weight": (config.vocab_size, config.hidden), "4.bias": (config.vocab_size,)}

    def num_frames(self, num_samples: int) -> int:
        return num_samples // (self.config.sample_rate // FEATURE_RATE * self.config.frames_per_token) + 1

    def features(self, wav_BN: torch.Tensor, lengths_B: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised, context-stacked log-mel ``[B, F, n_mels * (2 context + 1)]`` at 100 frames/s."""
        wav_BN = check_mono(wav_BN)
        logmel_BFM = torch.log(self.mel(wav_BN) + 1e-6).transpose(1, 2)
        num_frames = logmel_BFM.shape[1]
        if lengths_B is None:
            lengths_B = torch.full((wav_BN.shape[0],), wav_BN.shape[1])
        real_B = (lengths_B // (self.config.sample_rate // FEATURE_RATE) + 1).clamp(max=num_frames)
        valid_BF1 = (torch.arange(num_frames)[None, :] < real_B[:, None]).unsqueeze(-1).float()
        count_B11 = real_B.float().view(-1, 1, 1)
        mean_B1M = (logmel_BFM * valid_BF1).sum(1, keepdim=True) / count_B11
        var_B1M = (((logmel_BFM - mean_B1M) * valid_BF1) ** 2).sum(1, keepdim=True) / count_B11
        normed_BFM = (logmel_BFM - mean_B1M) / var_B1M.clamp(min=1e-4).sqrt() * valid_BF1
        c = self.config.context
        padded_BFM = torch.nn.functional.pad(normed_BFM.transpose(1, 2), (c, c), mode="replicate").transpose(1, 2)
        return padded_BFM.unfold(1, 2 * c + 1, 1).flatten(2)

    def fit(self, wavs: list[torch.Tensor], alignments: list | None = None) -> "PhoneTokenizer":
        """Train the classifier on ``wavs`` (1-D, at ``sample_rate``) and their ``[[phone, end], ...]``."""
        if not wavs:
            raise ValueError("PhoneTokenizer.fit needs at least one waveform, got none")
        if alignments is None or len(alignments) != len(wavs) or any(not a for a in alignments):
            raise ValueError("PhoneTokenizer.fit needs a phone alignment per waveform (corpus manifest field "
                             "'phones': [[phone, end_seconds], ...], written by soundstorm-synth-corpus --engine "
                             "festival)")
        inventory = sorted({str(p) for a in alignments for p, _ in a})
        if len(inventory) > self.vocab_size:
            raise ValueError(f"the alignments use {len(inventory)} phones, more than semantic vocab_size="
                             f"{self.vocab_size}")
        self.config = dataclasses.replace(self.config, phones=inventory)
        ids = {p: i for i, p in enumerate(inventory)}
        feats, labels = [], []
        for wav_N, phones in zip(wavs, alignments):
            feats_FD = self.features(wav_N.reshape(1, -1))[0]
            feats.append(feats_FD)
            labels.append(phone_labels(phones, feats_FD.shape[0], ids))
        self._train(torch.cat(feats), torch.cat(labels))
        self.is_fitted = True
        return self

    def _train(self, feats_ND: torch.Tensor, labels_N: torch.Tensor) -> None:
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        keep = torch.randperm(feats_ND.shape[0], generator=generator)[: cfg.fit_max_frames]
        feats_ND, labels_N = feats_ND[keep], labels_N[keep]
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.fit_lr, weight_decay=1e-4)
        num_steps = cfg.fit_epochs * max(1, feats_ND.shape[0] // cfg.fit_batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.fit_lr, total_steps=num_steps)
        self.net.train()
        step = 0
        for _ in range(cfg.fit_epochs):
            order = torch.randperm(feats_ND.shape[0], generator=generator)
            for lo in range(0, feats_ND.shape[0] - cfg.fit_batch_size + 1, cfg.fit_batch_size):
                batch = order[lo: lo + cfg.fit_batch_size]
                loss = nn.functional.cross_entropy(self.net(feats_ND[batch]), labels_N[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if step < num_steps - 1:
                    schedule.step()
                step += 1
        self.net.eval()

    @torch.no_grad()
    def log_probs(self, wav_BN: torch.Tensor, lengths_B: torch.Tensor | None = None) -> torch.Tensor:
        """Phone log-probabilities per token frame ``[B, S, V]`` (feature frames averaged)."""
        if not self.is_fitted:
            raise ValueError("PhoneTokenizer is not fitted: call fit(wavs, alignments) or load_tokenizer(directory)")
        logp_BFV = torch.log_softmax(self.net(self.features(wav_BN, lengths_B)), dim=-1)
        num_tokens, per = self.num_frames(wav_BN.shape[-1]), self.config.frames_per_token
        missing = num_tokens * per - logp_BFV.shape[1]
        if missing > 0:
            logp_BFV = torch.cat([logp_BFV, logp_BFV[:, -1:].expand(-1, missing, -1)], dim=1)
        logp_BFV = logp_BFV[:, : num_tokens * per]
        return logp_BFV.reshape(logp_BFV.shape[0], num_tokens, per, -1).mean(2)

    def tokenize(self, wav_BN: torch.Tensor, lengths_B: torch.Tensor | None = None) -> torch.Tensor:
        """Ids ``[B, S]``: the most likely phone of each token frame (unused ids are never chosen)."""
        logp_BSV = self.log_probs(wav_BN, lengths_B)
        logp_BSV[..., len(self.config.phones):] = float("-inf")
        return logp_BSV.argmax(-1)

    def describe(self) -> dict:
        return {"name": self.name, "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                "vocab_size": self.vocab_size, "context": self.config.context, "hidden": self.config.hidden}

    def save(self, directory) -> None:
        if not self.is_fitted:
            raise ValueError("PhoneTokenizer is not fitted; nothing to save")
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        save_component(directory, {"name": self.name, "config": dataclasses.asdict(self.config)}, state)

    @classmethod
    def load(cls, directory) -> "PhoneTokenizer":
        config, tensors = load_component(directory, "PhoneTokenizer")
        if config["name"] != cls.name:
            raise ValueError(f"{directory} holds tokenizer {config['name']!r}, expected {cls.name!r}")
        try:
            phone_config = PhoneTokenizerConfig(**config["config"])
        except (TypeError, ValueError) as err:  # an unknown key, a bad value or one above soundstorm.limits
            raise ValueError(f"{directory}/config.json: {err}") from err
        check_weights_fit(cls.net_shapes(phone_config), Path(directory) / "weights.safetensors",
                          Path(directory) / "config.json", phone_config)
        return cls(phone_config, tensors)
