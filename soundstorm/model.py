"""The SoundStorm model (paper §3.1): token embeddings summed per frame, a Conformer, Q heads.

Per codec frame the model sums the embedding of the (duplicated) semantic token and of the Q
acoustic tokens, each level with its own table that includes a mask id (``codebook_size``). The
attention length is therefore the number of frames, whatever Q is. Q dense heads predict each
level's codebook; the sampler asks for one level at a time and only that head is computed.

``SoundStorm.loss`` applies the §3.2 masking (see :mod:`soundstorm.masking`) and returns the
masked cross-entropy on the trained level plus per-level metrics as tensors (no host sync).
Weights are saved as safetensors plus a JSON config (``save_pretrained`` / ``from_pretrained``; the
file helpers are :mod:`soundstorm.io`); ``from_checkpoint`` loads a training checkpoint for inference.
Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from soundstorm._checks import (check_int_tensor, check_lengths, check_level, check_positive_ints, check_range,
                                dataclass_from_dict, frame_mask, values_readable)
from soundstorm.conformer import Conformer
from soundstorm.io import (check_finite_state, check_weights_fit, load_state_dict, load_weights, read_json,
                           read_model_dir, save_model_dir)
from soundstorm.masking import corrupt, masked_loss
from soundstorm.quantize import check_inference_dtype, is_quantized, quantize_int8

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
EMA_WEIGHTS_NAME = "ema.safetensors"
CHECKPOINT_META_NAME = "meta.json"  # a training checkpoint's step and file list (soundstorm.train.checkpoint)
FORMAT = "soundstorm/v1"
PRESETS = ("paper", "small", "tiny")


@dataclass
class SoundStormConfig:
    """Sizes of the model. ``SoundStormConfig.paper()`` is the paper's ≈350M preset."""

    num_levels: int = 12
    codebook_size: int = 1024
    semantic_vocab_size: int = 1024
    semantic_upsample: int = 2
    dim: int = 1024
    depth: int = 12
    heads: int = 16
    ff_dim: int = 4096
    conv_kernel: int = 5
    conv_expansion: int = 2
    dropout: float = 0.0

    def __post_init__(self):
        check_positive_ints("SoundStormConfig", self, ("num_levels", "codebook_size", "semantic_vocab_size",
                                                       "semantic_upsample", "dim", "depth", "heads", "ff_dim",
                                                       "conv_kernel", "conv_expansion"))
        if self.dim % self.heads:
            raise ValueError(f"SoundStormConfig.dim={self.dim} must be divisible by heads={self.heads}")
        if (self.dim // self.heads) % 2:
            raise ValueError(f"SoundStormConfig.dim/heads={self.dim // self.heads} must be even (rotary embeddings)")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"SoundStormConfig.conv_kernel must be odd, got {self.conv_kernel}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SoundStormConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def mask_id(self) -> int:
        """The id of a masked acoustic position, at every level."""
        return self.codebook_size

    @classmethod
    def paper(cls, **overrides) -> "SoundStormConfig":
        """Paper §3.1: Q=12, codebook 1024, 12 layers × 1024, 16 heads, FFN 4096, kernel 5."""
        return cls(**{**dict(num_levels=12, codebook_size=1024, semantic_vocab_size=1024, semantic_upsample=2,
                             dim=1024, depth=12, heads=16, ff_dim=4096, conv_kernel=5), **overrides})

    @classmethod
    def small(cls, **overrides) -> "SoundStormConfig":
        """Dim 192, 4 layers (≈9M parameters with Q = 12 and 1024-entry vocabularies, mostly embeddings and heads)."""
        return cls(**{**dict(num_levels=12, codebook_size=1024, semantic_vocab_size=1024, semantic_upsample=2,
                             dim=192, depth=4, heads=4, ff_dim=768, conv_kernel=5), **overrides})

    @classmethod
    def tiny(cls, **overrides) -> "SoundStormConfig":
        """A few-hundred-thousand-parameter model for tests."""
        return cls(**{**dict(num_levels=4, codebook_size=32, semantic_vocab_size=16, semantic_upsample=2,
                             dim=32, depth=2, heads=2, ff_dim=64, conv_kernel=3), **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def preset(cls, name: str, **overrides) -> "SoundStormConfig":
        """The named preset (``paper``, ``small``, ``tiny``): the one definition used by the Hydra model
        configs (their null fields) and by the benchmark."""
        if name not in PRESETS:
            raise ValueError(f"model preset {name!r} is unknown; expected one of {PRESETS}")
        return getattr(cls, name)(**overrides)

    @classmethod
    def from_dict(cls, data: dict) -> "SoundStormConfig":
        return dataclass_from_dict(cls, data)


class SoundStorm(nn.Module):
    """Bidirectional Conformer over summed semantic + acoustic token embeddings."""

    checkpoint_format = FORMAT  # the config.json "format" its checkpoints carry (checked on resume and load)

    def __init__(self, config: SoundStormConfig):
        super().__init__()
        if not isinstance(config, SoundStormConfig):
            raise ValueError(f"config must be a SoundStormConfig, got {type(config).__name__}")
        self.config = config
        q, v, d = config.num_levels, config.codebook_size, config.dim
        self.semantic_embed = nn.Embedding(config.semantic_vocab_size, d)
        # One table of Q × (V + 1) rows: level q's id c lives at row q * (V + 1) + c.
        self.acoustic_embed = nn.Embedding(q * (v + 1), d)
        self.register_buffer("level_offsets", torch.arange(q) * (v + 1), persistent=False)
        self.backbone = Conformer(d, config.depth, config.heads, config.ff_dim, config.conv_kernel, config.dropout,
                                  config.conv_expansion)
        self.head_norm = nn.LayerNorm(d)
        self.head_weight = nn.Parameter(torch.randn(q, d, v) * d**-0.5)  # Q dense heads, [Q, D, V]
        self.head_bias = nn.Parameter(torch.zeros(q, v))
        # Unit-variance token embeddings (nn.Embedding's default), not GPT's 0.02: the blocks are
        # pre-LN, so a tiny input is swamped by the first blocks' O(1) outputs and the model sits on a
        # plateau of near-uniform predictions before it uses the tokens at all (the CPU quickstart's
        # losses with both: docs/quickstart.md, "What made a 25-minute model speak").
        nn.init.normal_(self.semantic_embed.weight, std=1.0)
        nn.init.normal_(self.acoustic_embed.weight, std=1.0)

    # ------------------------------------------------------------------ inputs
    def check_inputs(self, codes, semantic, lengths=None, values: bool | None = None):
        """Validate ``codes [B, Q, T]``, ``semantic [B, S]`` and ``lengths [B]``; return them.

        Shapes and dtypes always; the ids' and lengths' values when ``values`` (default: where reading
        them back costs no device sync and no graph break, :func:`soundstorm._checks.values_readable`)."""
        cfg = self.config
        codes_BQT = check_int_tensor("codes", codes, 3, "[B, Q, T]")
        semantic_BS = check_int_tensor("semantic", semantic, 2, "[B, S]")
        batch_size, num_levels, num_frames = codes_BQT.shape
        if num_levels != cfg.num_levels:
            raise ValueError(f"codes has {num_levels} levels (shape {tuple(codes_BQT.shape)}), "
                             f"expected num_levels={cfg.num_levels}")
        if semantic_BS.shape[0] != batch_size:
            raise ValueError(f"semantic has batch {semantic_BS.shape[0]}, codes has batch {batch_size}")
        if semantic_BS.shape[1] * cfg.semantic_upsample != num_frames:
            raise ValueError(f"semantic length {semantic_BS.shape[1]} × semantic_upsample {cfg.semantic_upsample} "
                             f"= {semantic_BS.shape[1] * cfg.semantic_upsample} must equal the {num_frames} codec frames")
        if values is None:
            values = values_readable(codes_BQT, semantic_BS, lengths)
        if values:
            check_range("codes", codes_BQT, 0, cfg.codebook_size + 1)
            check_range("semantic", semantic_BS, 0, cfg.semantic_vocab_size)
        lengths_B = None if lengths is None else check_lengths(lengths, batch_size, num_frames, values=values)
        return codes_BQT, semantic_BS, lengths_B

    def embed_semantic(self, semantic_BS: torch.Tensor) -> torch.Tensor:
        """The semantic tokens' embeddings at the codec frame rate: ``[B, T, D]``."""
        return self.semantic_embed(semantic_BS.repeat_interleave(self.config.semantic_upsample, dim=1))

    def embed(self, codes_BQT: torch.Tensor, semantic_BS: torch.Tensor,
              semantic_BTD: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of the semantic and the Q acoustic embeddings per frame: ``[B, T, D]``.

        ``semantic_BTD``: :meth:`embed_semantic` computed once and reused (the sampler's passes
        share it; the result is bit-identical).
        """
        if semantic_BTD is None:
            semantic_BTD = self.embed_semantic(semantic_BS)
        rows_BQT = codes_BQT + self.level_offsets[None, :, None]
        return semantic_BTD + self.acoustic_embed(rows_BQT).sum(dim=1)

    # ------------------------------------------------------------------ forward
    def hidden(self, codes_BQT, semantic_BS, lengths_B=None, semantic_BTD=None) -> torch.Tensor:
        """Backbone output ``[B, T, D]`` (inputs assumed valid; see :meth:`check_inputs`)."""
        batch_size, _, num_frames = codes_BQT.shape
        valid_BT = None if lengths_B is None else frame_mask(lengths_B, batch_size, num_frames, codes_BQT.device)
        return self.head_norm(self.backbone(self.embed(codes_BQT, semantic_BS, semantic_BTD), valid_BT))

    def level_logits(self, hidden_BTD: torch.Tensor, level_B: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T, V]`` of one level per example (``level_B`` long, 0-based): one head only."""
        weight_BDV = self.head_weight.index_select(0, level_B)
        bias_BV = self.head_bias.index_select(0, level_B)
        return torch.bmm(hidden_BTD, weight_BDV.to(hidden_BTD.dtype)) + bias_BV[:, None, :].to(hidden_BTD.dtype)

    def token_logits(self, hidden_ND: torch.Tensor, level: int) -> torch.Tensor:
        """Logits ``[N, V]`` of level ``level`` (0-based int) for ``N`` gathered frames' hidden states
        ``[N, D]``: the training loss's path when it computes the head only where a token is scored."""
        weight_DV = self.head_weight[level].to(hidden_ND.dtype)
        return torch.addmm(self.head_bias[level].to(hidden_ND.dtype), hidden_ND, weight_DV)

    def forward(self, codes, semantic, lengths=None, *, level=None, validate: bool = True,
                semantic_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for masked-token prediction.

        codes: ``[B, Q, T]`` long, a masked position holds ``config.mask_id`` (at any level).
        semantic: ``[B, S]`` long with ``S × semantic_upsample == T``.
        lengths: optional ``[B]`` real frames per example; padding never influences real frames.
        level: None → all levels, ``[B, Q, T, V]``; an int or a ``[B]``/scalar long tensor → that
        level only, ``[B, T, V]`` (the sampler's path: one head computed).
        validate: shapes and dtypes are checked, and the values where that is free (CPU tensors, eager):
        ``forward`` never syncs with a device nor breaks a compiled graph. Set False to skip even that
        inside loops whose inputs were checked once (the sampler).
        semantic_embedding: optional ``embed_semantic(semantic)`` ``[B, T, D]``, computed once by
        the sampler for all its passes.
        """
        if validate:
            values = values_readable(codes, semantic, lengths, level)
            codes, semantic, lengths = self.check_inputs(codes, semantic, lengths, values)
            if level is not None:
                check_level(level, self.config.num_levels, codes.shape[0], values)
        hidden_BTD = self.hidden(codes, semantic, lengths, semantic_embedding)
        if level is None:
            logits_BTQV = torch.einsum("btd,qdv->btqv", hidden_BTD, self.head_weight.to(hidden_BTD.dtype))
            return (logits_BTQV + self.head_bias.to(hidden_BTD.dtype)).permute(0, 2, 1, 3)
        level_B = torch.as_tensor(level, device=codes.device, dtype=torch.long).expand(codes.shape[0])
        return self.level_logits(hidden_BTD, level_B)

    # ------------------------------------------------------------------ training
    def loss(self, codes, semantic, lengths=None, generator: torch.Generator | None = None, *, validate: bool = True):
        """Paper §3.2 objective on clean ``codes [B, Q, T]``.

        Returns ``(loss, metrics)``: the mean cross-entropy over the masked tokens of each example's
        level, and tensors ``loss_per_level [Q]``, ``accuracy_per_level [Q]``, ``tokens_per_level [Q]``
        (sums over the batch, divided per level; a level no example drew has 0 tokens and NaN-free 0).
        ``validate=False`` skips the input checks (they read values back to the host), for use
        inside a compiled training step once the data pipeline is trusted.
        """
        if validate:  # the training entry point: values are read once here, whatever the device
            codes, semantic, lengths = self.check_inputs(codes, semantic, lengths, values=True)
            check_range("codes (clean, no mask ids, in loss)", codes, 0, self.config.codebook_size)
        corruption = corrupt(codes, lengths, generator, mask_id=self.config.mask_id, validate=validate)
        return masked_loss(self, codes, semantic, lengths, corruption)

    # ------------------------------------------------------------------ weights
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed).

        An int8 model is refused: save the float32 model and quantise it when loading."""
        if is_quantized(self):
            raise ValueError("save_pretrained: this model has int8 quantised layers; save the float32 model and load "
                             "it with SoundStorm.from_pretrained(directory, dtype='int8')")
        save_model_dir(directory, FORMAT, self.config.to_dict(), self.state_dict(), CONFIG_NAME, WEIGHTS_NAME)

    @classmethod
    def from_pretrained(cls, directory, map_location="cpu", dtype: str = "float32") -> "SoundStorm":
        """Load a model saved by :meth:`save_pretrained` from any directory; never unpickles.

        ``dtype="int8"``: ready for CPU inference with int8 linear layers, quantised from the saved
        fp32 weights as they are loaded (:func:`soundstorm.quantize.quantize_int8`)."""
        _check_int8_device(dtype, map_location)
        config, state = read_model_dir(directory, FORMAT, SoundStormConfig, "SoundStorm directory", map_location,
                                       CONFIG_NAME, WEIGHTS_NAME, ignore=("tokens",),  # tokens: what it was trained on
                                       build=cls, count_fields=("depth", "num_levels"))
        model = cls(config)
        load_weights(model, state, Path(directory) / WEIGHTS_NAME)
        model = model.to(map_location)
        return quantize_int8(model) if dtype == "int8" else model

    @classmethod
    def from_checkpoint(cls, directory, use_ema: bool = True, map_location="cpu",
                        dtype: str = "float32", ema_field: str = "use_ema") -> tuple["SoundStorm", bool]:
        """``(model in eval mode, used_ema)`` from a training checkpoint or a ``save_pretrained``
        directory; the EMA weights replace the raw ones when ``use_ema`` and the directory has them.
        ``dtype="int8"`` quantises the result (EMA applied first) as :meth:`from_pretrained` does.

        Refused, naming the file: a directory of another kind (a text-to-semantic checkpoint), a config
        that does not fit the weights, non-finite weights (raw or EMA), and an ``ema.safetensors`` that
        the checkpoint's ``meta.json`` lists but that is missing (with ``use_ema`` the raw weights would
        otherwise be used without a word; ``ema_field`` is the setting named to opt out of EMA)."""
        _check_int8_device(dtype, map_location)
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"checkpoint={str(directory)!r}: directory not found")
        model = cls.from_pretrained(directory, map_location=map_location)
        ema_path = directory / EMA_WEIGHTS_NAME
        if use_ema and not ema_path.is_file() and EMA_WEIGHTS_NAME in listed_files(directory):
            raise FileNotFoundError(f"{directory / CHECKPOINT_META_NAME} lists {EMA_WEIGHTS_NAME}, but {ema_path} is "
                                    f"missing (deleted, or not copied with the checkpoint); copy the whole checkpoint "
                                    f"folder again, or set {ema_field}=false to use the raw (non-EMA) weights")
        if use_ema and ema_path.is_file():
            check_weights_fit({k: tuple(v.shape) for k, v in model.state_dict().items() if v.is_floating_point()},
                              ema_path)
            ema_state = load_state_dict(ema_path, device=map_location)
            check_finite_state(ema_state, ema_path)
            model.load_state_dict({**model.state_dict(), **ema_state})
            return _in_dtype(model, dtype), True
        return _in_dtype(model, dtype), False


def listed_files(directory) -> list[str]:
    """The files a training checkpoint's ``meta.json`` lists (none for a ``save_pretrained`` directory, which
    has no ``meta.json``); an unreadable list is a ValueError naming the file."""
    path = Path(directory) / CHECKPOINT_META_NAME
    if not path.is_file():
        return []
    meta = read_json(path, "a checkpoint's meta.json (its step and file list)")
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ValueError(f"{path} has no list of file names under 'files'; expected the meta.json the trainer "
                         "writes (copy the checkpoint folder again)")
    return files


def _check_int8_device(dtype: str, map_location) -> None:
    check_inference_dtype(dtype, "dtype")
    if dtype == "int8" and torch.device(map_location).type != "cpu":
        raise ValueError(f"dtype='int8' runs on the CPU only, got map_location={map_location!r}")


def _in_dtype(model: SoundStorm, dtype: str) -> SoundStorm:
    return quantize_int8(model) if dtype == "int8" else model.eval()
