"""Builders: the only code that turns Hydra/OmegaConf configs into objects.

Each config section is merged into a structured dataclass first, so a misspelt or unknown key
fails loudly (``ValueError`` naming it) instead of being ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from soundstorm.codecs import EncodecCodec, MelRVQCodec, MelRVQConfig, load_codec
from soundstorm.semantic import HubertKMeans, MFCCKMeans, MFCCKMeansConfig, load_tokenizer


# ---------------------------------------------------------------- codec / semantic (issue 3)
@dataclass
class MelRVQSection(MelRVQConfig):
    name: str = "melrvq"
    pretrained_dir: Optional[str] = None


@dataclass
class EncodecSection:
    name: str = "encodec_24khz"
    bandwidth: float = 6.0
    pretrained: bool = True
    repository: Optional[str] = None
    seed: int = 0
    fit_iters: int = 30
    fit_max_frames: int = 100_000
    pretrained_dir: Optional[str] = None


@dataclass
class MFCCKMeansSection(MFCCKMeansConfig):
    name: str = "mfcc_kmeans"
    pretrained_dir: Optional[str] = None


@dataclass
class HubertKMeansSection:
    name: str = "hubert_kmeans"
    layer: int = 6
    vocab_size: int = 1024
    downsample: int = 2
    pretrained: bool = True
    seed: int = 0
    fit_iters: int = 30
    fit_max_frames: int = 100_000
    pretrained_dir: Optional[str] = None


CODEC_SECTIONS = {"melrvq": MelRVQSection, "encodec_24khz": EncodecSection}
SEMANTIC_SECTIONS = {"mfcc_kmeans": MFCCKMeansSection, "hubert_kmeans": HubertKMeansSection}


def strict(schema, cfg, where: str):
    """Merge ``cfg`` into the dataclass ``schema`` and build it; unknown keys or bad types → ValueError."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg))
    except OmegaConfBaseException as err:
        raise ValueError(f"invalid {where} config: {err}") from err


def _section(cfg, sections: dict, where: str):
    if not isinstance(cfg, (DictConfig, dict)) or "name" not in cfg:
        raise ValueError(f"the {where} config needs a 'name', one of {sorted(sections)}; got {cfg!r}")
    if cfg["name"] not in sections:
        raise ValueError(f"{where}.name={cfg['name']!r} is unknown; expected one of {sorted(sections)}")
    return strict(sections[cfg["name"]], cfg, where)


def _fields_of(section, base) -> dict:
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(base)}


def build_codec(cfg):
    """A codec from a ``codec`` config section; with ``pretrained_dir`` the saved codec is loaded and
    must agree with the section's settings. Offline codecs come back unfitted otherwise."""
    section = _section(cfg, CODEC_SECTIONS, "codec")
    if section.name == "melrvq":
        codec = MelRVQCodec(MelRVQConfig(**_fields_of(section, MelRVQConfig)))
    else:
        codec = EncodecCodec(section.bandwidth, section.pretrained, section.repository, section.seed,
                             section.fit_iters, section.fit_max_frames)
    return _maybe_load(codec, section.pretrained_dir, load_codec, "codec")


def build_semantic(cfg):
    """A semantic tokenizer from a ``semantic`` config section (same ``pretrained_dir`` rule)."""
    section = _section(cfg, SEMANTIC_SECTIONS, "semantic")
    if section.name == "mfcc_kmeans":
        tokenizer = MFCCKMeans(MFCCKMeansConfig(**_fields_of(section, MFCCKMeansConfig)))
    else:
        tokenizer = HubertKMeans(section.layer, section.vocab_size, section.downsample, section.pretrained,
                                 section.seed, section.fit_iters, section.fit_max_frames)
    return _maybe_load(tokenizer, section.pretrained_dir, load_tokenizer, "semantic")


def _maybe_load(component, directory, loader, where: str):
    if directory is None:
        return component
    saved = loader(directory)
    if saved.describe() != component.describe():
        raise ValueError(f"{where}.pretrained_dir={directory} holds {saved.describe()}, but the {where} config "
                         f"describes {component.describe()}")
    return saved


@dataclass
class PrepareSection:
    input: str
    output: str
    codec: Any = None
    semantic: Any = None
    batch_size: int = 8
    shard_size: int = 256
    shard_format: str = "safetensors"
    fit_max_files: int = 200
    fit_seed: int = 0
    max_shards: Optional[int] = None
    progress: bool = True
    num_threads: Optional[int] = None


def build_prepare(cfg):
    """``(PrepareOptions, codec, tokenizer)`` for :func:`soundstorm.data.prepare.prepare`."""
    import torch

    from soundstorm.data.prepare import PrepareOptions

    if OmegaConf.is_missing(cfg, "input") or OmegaConf.is_missing(cfg, "output"):
        raise ValueError("soundstorm-prepare needs input=FOLDER_OR_MANIFEST and output=TOKEN_FOLDER")
    section = strict(PrepareSection, cfg, "prepare")
    if section.num_threads is not None:  # torch intra-op threads and scikit-learn's OpenMP pool
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(section.num_threads)
        threadpool_limits(limits=section.num_threads)
    options = PrepareOptions(**{f.name: getattr(section, f.name) for f in dataclasses.fields(PrepareOptions)})
    return options, build_codec(cfg.codec), build_semantic(cfg.semantic)
