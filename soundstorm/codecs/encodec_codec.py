"""EncodecCodec: the ``encodec`` package's 24 kHz model (75 frames/s) at a chosen bandwidth.

``pretrained=True`` loads Meta's weights with encodec's own loader (downloaded on first use, or
read from ``repository``). ``pretrained=False`` builds the same architecture with seeded random
weights; its codebooks are all zero (every frame → token 0) until :meth:`EncodecCodec.fit`
initialises them by residual k-means on the encoder's output frames. Q = bandwidth / 0.75 kbps.
Needs the ``encodec`` package (which needs torchaudio): ``pip install 'soundstorm[encodec]'``.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from soundstorm._optional import require
from soundstorm.io import check_fingerprint, load_component, save_component, weights_fingerprint
from soundstorm._kmeans import fit_residual
from soundstorm.codecs.base import check_codes, check_wav

BANDWIDTHS_KBPS = (1.5, 3.0, 6.0, 12.0, 24.0)


class EncodecCodec:
    """EnCodec 24 kHz; ``num_levels`` follows from ``bandwidth`` (kbps)."""

    name = "encodec_24khz"

    def __init__(self, bandwidth: float = 6.0, pretrained: bool = True, repository=None, seed: int = 0,
                 fit_iters: int = 30, fit_max_frames: int = 100_000):
        if bandwidth not in BANDWIDTHS_KBPS:
            raise ValueError(f"EncodecCodec bandwidth={bandwidth!r} kbps is not supported; expected one of "
                             f"{list(BANDWIDTHS_KBPS)}")
        if repository is not None and not pretrained:
            raise ValueError("EncodecCodec: repository= only applies with pretrained=True")
        self.pretrained, self.seed = bool(pretrained), int(seed)
        self.fit_iters, self.fit_max_frames = int(fit_iters), int(fit_max_frames)
        EncodecModel = require("encodec", "EncodecCodec").EncodecModel
        with warnings.catch_warnings():  # encodec uses the deprecated torch.nn.utils.weight_norm
            warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
            model = self._build(EncodecModel, pretrained, repository)
        model.set_target_bandwidth(float(bandwidth))
        self.model = model.eval()
        self.bandwidth = float(bandwidth)
        self.sample_rate = int(model.sample_rate)
        self.frame_rate = float(model.frame_rate)
        self.num_levels = int(model.quantizer.get_num_quantizers_for_bandwidth(model.frame_rate, self.bandwidth))
        self.codebook_size = int(model.quantizer.bins)
        self.hop_length = int(math.prod(model.encoder.ratios))

    def _build(self, EncodecModel, pretrained: bool, repository):
        if not pretrained:
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                return EncodecModel.encodec_model_24khz(pretrained=False)
        try:
            return EncodecModel.encodec_model_24khz(pretrained=True, repository=Path(repository) if repository else None)
        except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
            raise RuntimeError(f"could not load the pretrained EnCodec 24 kHz weights ({err}); they are "
                               "downloaded on first use (needs internet) or read from repository=DIR holding "
                               "encodec_24khz-d7cc33bc.th; offline, use pretrained=False and fit()") from err

    @property
    def _codebooks(self):
        return [layer._codebook for layer in self.model.quantizer.vq.layers[: self.num_levels]]

    @property
    def is_fitted(self) -> bool:
        return all(bool(book.inited.item()) for book in self._codebooks)

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.hop_length)

    @torch.no_grad()
    def fit(self, wavs: list[torch.Tensor]) -> "EncodecCodec":
        """Residual k-means on the encoder frames of ``wavs`` (1-D, 24 kHz) → the Q used codebooks."""
        if not wavs:
            raise ValueError("EncodecCodec.fit needs at least one waveform, got none")
        frames = [self.model.encoder(w.reshape(1, 1, -1).float())[0].t() for w in wavs]  # [T, D] each
        codebooks_QKD = fit_residual(torch.cat(frames), self.num_levels, self.codebook_size, self.seed,
                                     self.fit_iters, self.fit_max_frames, what="EncodecCodec.fit")
        for book, embed_KD in zip(self._codebooks, codebooks_QKD):
            book.embed.data.copy_(embed_KD)
            book.embed_avg.data.copy_(embed_KD)
            book.cluster_size.data.fill_(1.0)
            book.inited.data.fill_(1.0)
        return self

    @torch.no_grad()
    def codebook_vectors(self) -> torch.Tensor:
        """``[Q, K, D]`` quantised latent vectors (after each level's output projection): a frame's latent,
        which the decoder turns into audio, is the sum of its codes' vectors."""
        self._require_fitted()
        layers = self.model.quantizer.vq.layers[: self.num_levels]
        return torch.stack([layer.project_out(layer.codebook) for layer in layers]).float()

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise ValueError("EncodecCodec(pretrained=False) has all-zero codebooks (every frame would be token 0); "
                             "call fit(wavs) or load_codec(directory) first")

    @torch.no_grad()
    def encode(self, wav_BN: torch.Tensor) -> torch.Tensor:
        self._require_fitted()
        wav_B1N = check_wav(wav_BN)[:, None, :]
        frames = self.model.encode(wav_B1N)
        return torch.cat([codes_BQT for codes_BQT, _ in frames], dim=-1).long()

    @torch.no_grad()
    def decode(self, codes_BQT: torch.Tensor) -> torch.Tensor:
        self._require_fitted()
        codes_BQT = check_codes(codes_BQT, self.num_levels, self.codebook_size)
        return self.model.decode([(codes_BQT, None)])[:, 0, :]

    def describe(self) -> dict:
        return {"name": self.name, "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                "num_levels": self.num_levels, "codebook_size": self.codebook_size,
                "bandwidth_kbps": self.bandwidth, "pretrained": self.pretrained}

    def save(self, directory) -> None:
        """Pretrained: the settings only. Untrained: settings, seed, weight fingerprint, fitted codebooks."""
        config = {"name": self.name, "bandwidth": self.bandwidth, "pretrained": self.pretrained, "seed": self.seed,
                  "fit_iters": self.fit_iters, "fit_max_frames": self.fit_max_frames}
        tensors = {"placeholder": torch.zeros(1)}
        if not self.pretrained:
            self._require_fitted()
            config["fingerprint"] = weights_fingerprint(self.model)
            tensors = {f"codebook_{q}": book.embed for q, book in enumerate(self._codebooks)}
        save_component(directory, config, tensors)

    @classmethod
    def load(cls, directory) -> "EncodecCodec":
        config, tensors = load_component(directory, "EncodecCodec")
        if config["name"] != cls.name:
            raise ValueError(f"{directory} holds codec {config['name']!r}, expected {cls.name!r}")
        codec = cls(config["bandwidth"], config["pretrained"], seed=config["seed"], fit_iters=config["fit_iters"],
                    fit_max_frames=config["fit_max_frames"])
        if not codec.pretrained:
            check_fingerprint(codec.model, config["fingerprint"], f"EncodecCodec at {directory}")
            for q, book in enumerate(codec._codebooks):
                book.embed.data.copy_(tensors[f"codebook_{q}"])
                book.embed_avg.data.copy_(tensors[f"codebook_{q}"])
                book.inited.data.fill_(1.0)
        return codec
