"""The text-to-semantic model: a masked, non-autoregressive generator (MaskGCT style).

One bidirectional Conformer (the one SoundStorm uses, :mod:`soundstorm.conformer`) reads a packed
sequence ``[text | voice prompt | target]`` (see :mod:`soundstorm.t2s.batch`) and predicts the
masked target semantic tokens; generation fills them by confidence-based parallel decoding with
SoundStorm's sampler (:func:`soundstorm.sampler.decode`, one level). The number of target tokens
comes from a small length predictor: a Conformer over the text and prompt whose per-symbol
durations add up to the predicted (log) number of semantic frames. It predicts a count only, and
the generator learns the tokens by cross-entropy, so any semantic token type works (phone-like or
HuBERT k-means alike).

``aligned=True`` (the default of new models) lets a duration model serve the generator: the length
predictor's per-symbol durations are trained on durations found without labels
(:mod:`soundstorm.t2s.align`), and every target position also reads the embedding of the text symbol
it is aligned to. The generator still predicts the tokens by cross-entropy (it is not a length
regulator that copies phones into frames), but it no longer has to discover the alignment itself,
which is what kept the unaligned model from learning in a CPU quickstart's budget (docs/dialogue.md
has both measured). Checkpoints written before the
option (format ``soundstorm-t2s/v1``) load as ``aligned=False``.

Weights are saved as safetensors plus a JSON config, as :meth:`SoundStorm.save_pretrained` does.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from soundstorm._checks import check_positive_ints, dataclass_from_dict, frame_mask
from soundstorm.conformer import Conformer
from soundstorm.io import load_weights, read_model_dir, save_model_dir
from soundstorm.t2s.batch import PAD, TARGET, TEXT
from soundstorm.t2s.text import VOCAB_SIZE, check_frontend

FORMAT = "soundstorm-t2s/v2"
# v1 (before the aligned option) is the unaligned model
OLDER_FORMATS = {"soundstorm-t2s/v1": {"aligned": False, "duration_loss_weight": 0.0}}
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


@dataclass
class T2SConfig:
    """Sizes of the text-to-semantic model; ``semantic_vocab_size`` comes from the token manifest."""

    semantic_vocab_size: int = 1024
    frontend: str = "phonemes"
    dim: int = 256
    depth: int = 6
    heads: int = 4
    ff_dim: int = 1024
    conv_kernel: int = 5
    conv_expansion: int = 2
    length_depth: int = 2
    num_progress_freqs: int = 16
    max_prompt_frames: int = 75
    length_loss_weight: float = 1.0
    dropout: float = 0.0
    aligned: bool = True
    duration_loss_weight: float = 1.0

    def __post_init__(self):
        check_positive_ints("T2SConfig", self, ("semantic_vocab_size", "dim", "depth", "heads", "ff_dim",
                                                "conv_kernel", "conv_expansion", "length_depth",
                                                "num_progress_freqs", "max_prompt_frames"))
        check_frontend(self.frontend)
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(f"T2SConfig.dim={self.dim} must be divisible by heads={self.heads} into even head sizes")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"T2SConfig.conv_kernel must be odd, got {self.conv_kernel}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"T2SConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("length_loss_weight", "duration_loss_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"T2SConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.aligned, bool):
            raise ValueError(f"T2SConfig.aligned must be true or false, got {self.aligned!r}")

    @property
    def mask_id(self) -> int:
        return self.semantic_vocab_size

    @classmethod
    def tiny(cls, **overrides) -> "T2SConfig":
        return cls(**{**dict(semantic_vocab_size=16, dim=32, depth=2, heads=2, ff_dim=64, conv_kernel=3,
                             length_depth=1, num_progress_freqs=4, max_prompt_frames=8), **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "T2SConfig":
        return dataclass_from_dict(cls, data)


def _log_total(duration_BL: torch.Tensor) -> torch.Tensor:
    """``log`` of the summed symbol durations ``[B]`` (the predicted number of target frames)."""
    return torch.log(duration_BL.sum(dim=-1) + 1e-3)


class TextToSemantic(nn.Module):
    """Masked generator of semantic tokens from text (+ a voice prompt), with a length predictor."""

    checkpoint_format = FORMAT  # the config.json "format" its checkpoints carry (checked on resume and load)

    def __init__(self, config: T2SConfig):
        super().__init__()
        if not isinstance(config, T2SConfig):
            raise ValueError(f"config must be a T2SConfig, got {type(config).__name__}")
        self.config = config
        d = config.dim
        self.text_embed = nn.Embedding(VOCAB_SIZE, d)
        self.semantic_embed = nn.Embedding(config.semantic_vocab_size + 1, d)  # + the mask id
        self.segment_embed = nn.Embedding(PAD + 1, d)
        self.progress_proj = nn.Linear(2 * config.num_progress_freqs, d)
        self.register_buffer("freqs", math.pi * torch.arange(1, config.num_progress_freqs + 1).float(),
                             persistent=False)
        self.backbone = Conformer(d, config.depth, config.heads, config.ff_dim, config.conv_kernel, config.dropout,
                                  config.conv_expansion)
        self.length_backbone = Conformer(d, config.length_depth, config.heads, config.ff_dim, config.conv_kernel,
                                         config.dropout, config.conv_expansion)
        self.head_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.semantic_vocab_size)
        self.duration_head = nn.Linear(d, 1)
        tables = [self.text_embed, self.semantic_embed, self.segment_embed]
        if config.aligned:  # the aligned text symbol of each target position
            self.aligned_embed = nn.Embedding(VOCAB_SIZE, d)
            tables.append(self.aligned_embed)
        # Unit-variance tables (nn.Embedding's default), as in SoundStorm: with 0.02 the tokens are
        # invisible next to the O(1) progress features and the pre-LN blocks' outputs.
        for table in tables:
            nn.init.normal_(table.weight, std=1.0)

    # ------------------------------------------------------------------ inputs
    def embed(self, tokens_BL, segment_BL, progress_BL, aligned_BL=None) -> torch.Tensor:
        """Per position: the token's embedding (text or semantic table), its segment, its progress, and
        for an aligned model's target positions the embedding of their aligned text symbol."""
        is_text_BL = segment_BL == TEXT
        text_BLD = self.text_embed(torch.where(is_text_BL, tokens_BL, 0).clamp(max=VOCAB_SIZE - 1))
        semantic_BLD = self.semantic_embed(torch.where(is_text_BL, 0, tokens_BL).clamp(max=self.config.mask_id))
        angles_BLF = progress_BL[..., None] * self.freqs
        progress_BLD = self.progress_proj(torch.cat([angles_BLF.sin(), angles_BLF.cos()], dim=-1))
        has_progress_BL1 = ((segment_BL == TEXT) | (segment_BL == TARGET))[..., None].to(progress_BLD.dtype)
        out_BLD = torch.where(is_text_BL[..., None], text_BLD, semantic_BLD) + self.segment_embed(segment_BL) \
            + progress_BLD * has_progress_BL1
        if self.config.aligned and aligned_BL is not None:
            is_target_BL1 = (segment_BL == TARGET)[..., None].to(out_BLD.dtype)
            out_BLD = out_BLD + self.aligned_embed(aligned_BL.clamp(0, VOCAB_SIZE - 1)) * is_target_BL1
        return out_BLD

    # ------------------------------------------------------------------ forward
    def forward(self, tokens_BL, segment_BL, progress_BL, lengths_B, aligned_BL=None) -> torch.Tensor:
        """Logits ``[B, L, V]`` over the semantic vocabulary at every position (targets are read).

        An aligned model needs ``aligned_BL`` (see :func:`soundstorm.t2s.batch.pack`)."""
        if self.config.aligned and aligned_BL is None:
            raise ValueError("this text-to-semantic model is aligned (T2SConfig.aligned=true): forward() needs "
                             "aligned_BL, the text symbol of each target position (pack(..., durations=...))")
        batch_size, num_positions = tokens_BL.shape
        valid_BL = frame_mask(lengths_B, batch_size, num_positions, tokens_BL.device)
        hidden_BLD = self.backbone(self.embed(tokens_BL, segment_BL, progress_BL, aligned_BL), valid_BL)
        return self.head(self.head_norm(hidden_BLD))

    def symbol_durations(self, tokens_BL, segment_BL, progress_BL, context_B) -> torch.Tensor:
        """Predicted frames per text symbol ``[B, L]`` (0 off the text), from the text and prompt only."""
        batch_size, num_positions = tokens_BL.shape
        valid_BL = frame_mask(context_B, batch_size, num_positions, tokens_BL.device)
        hidden_BLD = self.length_backbone(self.embed(tokens_BL, segment_BL, progress_BL), valid_BL)
        duration_BL = F.softplus(self.duration_head(hidden_BLD).squeeze(-1))
        return duration_BL * ((segment_BL == TEXT) & valid_BL).to(duration_BL.dtype)

    # ------------------------------------------------------------------ training
    def loss(self, tokens, segment, progress, lengths, context, target_frames, inputs, loss_mask, aligned=None,
             durations=None, has_durations=None):
        """Masked cross-entropy on the masked target tokens + weighted log-length squared error (+ for an
        aligned model the weighted squared error of ``log(1 + frames)`` per text symbol).

        Returns ``(loss, metrics)``; metrics hold tensors (no host sync): ``token_loss``,
        ``token_accuracy``, ``num_tokens``, ``length_loss``, ``length_abs_rel_error`` and
        ``duration_loss`` (0 for an unaligned model).
        """
        if self.config.aligned and (aligned is None or durations is None or has_durations is None):
            raise ValueError("an aligned text-to-semantic model trains on aligned batches: they need aligned, "
                             "durations and has_durations (T2SDataset(aligned=True) computes them)")
        logits_BLV = self(inputs, segment, progress, lengths, aligned).float()
        weight_BL = loss_mask.to(logits_BLV.dtype)
        ce_BL = F.cross_entropy(logits_BLV.transpose(1, 2), tokens.clamp(max=self.config.semantic_vocab_size - 1),
                                reduction="none")
        num_tokens = weight_BL.sum()
        token_loss = (ce_BL * weight_BL).sum() / num_tokens.clamp(min=1.0)
        correct_BL = (logits_BLV.argmax(dim=-1) == tokens).to(weight_BL.dtype)
        # the length predictor sees the text and prompt only: target positions act as padding
        duration_BL = self.symbol_durations(tokens, segment, progress, context)
        log_frames_B = _log_total(duration_BL)
        log_target_B = target_frames.to(log_frames_B.dtype).clamp(min=1.0).log()
        length_loss = (log_frames_B - log_target_B).pow(2).mean()
        loss = token_loss + self.config.length_loss_weight * length_loss
        duration_loss = torch.zeros((), device=loss.device)
        if self.config.aligned:
            # examples without durations (none in an aligned dataset) add nothing; no host sync to check
            text_BL = ((segment == TEXT) & has_durations[:, None]).to(duration_BL.dtype)
            error_BL = (torch.log1p(duration_BL) - torch.log1p(durations.to(duration_BL.dtype))).pow(2)
            duration_loss = (error_BL * text_BL).sum() / text_BL.sum().clamp(min=1.0)
            loss = loss + self.config.duration_loss_weight * duration_loss
        accuracy = (correct_BL * weight_BL).sum() / num_tokens.clamp(min=1.0)
        metrics = {"token_loss": token_loss, "token_accuracy": accuracy,
                   "num_tokens": num_tokens, "length_loss": length_loss, "duration_loss": duration_loss,
                   "length_abs_rel_error": (log_frames_B.exp() / log_target_B.exp() - 1).abs().mean()}
        return loss, metrics

    # ------------------------------------------------------------------ weights
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed)."""
        save_model_dir(directory, FORMAT, self.config.to_dict(), self.state_dict(), CONFIG_NAME, WEIGHTS_NAME)

    @classmethod
    def from_pretrained(cls, directory, map_location="cpu") -> "TextToSemantic":
        """Load a model written by :meth:`save_pretrained` (or a training checkpoint); never unpickles."""
        config, state = read_model_dir(directory, FORMAT, T2SConfig, "text-to-semantic directory (written by "
                                       "save_pretrained() or soundstorm-train-t2s)", map_location, CONFIG_NAME,
                                       WEIGHTS_NAME, ignore=("tokens",),  # tokens: the folder it was trained on
                                       older_formats=OLDER_FORMATS, build=cls,
                                       count_fields=("depth", "length_depth"))
        model = cls(config)
        load_weights(model, state, Path(directory) / WEIGHTS_NAME)
        model.source = str(directory)  # named by errors about what this model predicts (t2s.generate)
        return model.to(map_location)
