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
from soundstorm.semantic import (HubertKMeans, MFCCKMeans, MFCCKMeansConfig, PhoneTokenizer, PhoneTokenizerConfig,
                                load_tokenizer)


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
class PhoneTokenizerSection(PhoneTokenizerConfig):
    name: str = "phone_classifier"
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
SEMANTIC_SECTIONS = {"mfcc_kmeans": MFCCKMeansSection, "hubert_kmeans": HubertKMeansSection,
                     "phone_classifier": PhoneTokenizerSection}


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
    elif section.name == "phone_classifier":
        tokenizer = PhoneTokenizer(PhoneTokenizerConfig(**_fields_of(section, PhoneTokenizerConfig)))
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


# ================================================================ training / evaluation (issue 4)
# Sections of configs/{model,optim,sampler,trainer,logger,backend,data}/ and the train/eval/generate
# primary configs. Each is merged into a dataclass by ``strict`` (unknown keys fail loudly).
from typing import List  # noqa: E402

from soundstorm.evaluation.speech_plan import SpeechEvalConfig  # noqa: E402


def resolved(cfg):
    """A config node as a plain container with interpolations resolved against the whole config
    (``strict`` merges a section on its own, where ``${trainer.max_steps}`` could not be found)."""
    if isinstance(cfg, DictConfig):
        try:
            return OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as err:
            raise ValueError(f"cannot resolve config: {err}") from err
    return cfg


@dataclass
class ModelSection:
    """``SoundStormConfig`` fields; ``None`` for the four data-facing sizes means "from the token
    manifest" (the yaml interpolates them from the codec / semantic sections where those say)."""

    name: str = "custom"
    num_levels: Optional[int] = None
    codebook_size: Optional[int] = None
    semantic_vocab_size: Optional[int] = None
    semantic_upsample: Optional[int] = None
    dim: int = 256
    depth: int = 4
    heads: int = 4
    ff_dim: int = 1024
    conv_kernel: int = 5
    conv_expansion: int = 2
    dropout: float = 0.0


@dataclass
class SamplerSection:
    name: str = "paper"
    steps: Optional[List[int]] = None
    greedy: bool = False
    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    greedy_last: bool = True
    choice_noise: float = 4.5


@dataclass
class OptimSection:
    name: str = "adamw"
    lr: float = 3e-4
    betas: List[float] = dataclasses.field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_steps: int = 500
    total_steps: int = 10000
    min_lr_ratio: float = 0.1


@dataclass
class BackendSection:
    name: str = "auto"
    options: Any = dataclasses.field(default_factory=dict)


@dataclass
class DataSection:
    """The token folder and how it is windowed, split, batched (``batch_size`` per process)."""

    root: str = "???"
    min_seconds: float = 1.0
    max_seconds: float = 4.0
    frames_multiple: Optional[int] = None
    batch_size: int = 16
    heldout_fraction: float = 0.05
    split_seed: int = 0
    num_workers: int = 0
    bucket_batches: int = 50


@dataclass
class EvaluationSection:
    """Teacher-forced ratios and generation settings (see soundstorm.evaluation)."""

    mask_ratios: List[float] = dataclasses.field(default_factory=lambda: [0.3, 0.6, 1.0])
    max_batches: int = 4
    max_utterances: int = 8
    prompt_seconds: float = 3.0
    window_seconds: float = 10.0
    window_prompt_seconds: float = 2.0
    num_examples: int = 2
    long_seconds: float = 0.0
    long_prompt_seconds: float = 3.0
    unigram_max_utterances: int = 2000
    use_ema: bool = True
    asr: Optional[str] = None
    speaker: Optional[str] = None
    seed: int = 0
    speech: SpeechEvalConfig = dataclasses.field(default_factory=SpeechEvalConfig)


def build_backend(cfg):
    """A backend (``soundstorm.backends``) from the ``backend`` section; joins torchrun's job."""
    from soundstorm.backends import get_backend

    section = strict(BackendSection, resolved(cfg), "backend")
    backend = get_backend(section.name, **dict(section.options or {}))
    backend.init_distributed()
    return backend


def build_model_config(cfg, manifest=None):
    """``SoundStormConfig`` from the ``model`` section; ``None`` sizes come from ``manifest``, and the
    result is checked against it (codec levels, codebook, semantic vocabulary and rate)."""
    from soundstorm.model import SoundStormConfig

    section = strict(ModelSection, resolved(cfg), "model")
    values = {f.name: getattr(section, f.name) for f in dataclasses.fields(SoundStormConfig)}
    if manifest is not None:
        derived = {"num_levels": manifest.num_levels, "codebook_size": int(manifest.codec["codebook_size"]),
                   "semantic_vocab_size": int(manifest.semantic["vocab_size"]),
                   "semantic_upsample": manifest.semantic_upsample}
        values.update({k: v for k, v in derived.items() if values[k] is None})
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise ValueError(f"model.{missing[0]} is null and no token manifest was given to fill it; set "
                         f"{', '.join('model.' + m for m in missing)} or data.root")
    config = SoundStormConfig(**values)
    if manifest is not None:
        manifest.check_compatible(config)
    return config


def build_sampler(cfg, num_levels: int):
    """``SamplerConfig`` from the ``sampler`` section (``greedy: true`` → one greedy pass per level)."""
    from soundstorm.sampler import SamplerConfig

    s = strict(SamplerSection, resolved(cfg), "sampler")
    steps = tuple(s.steps) if s.steps is not None else ((1,) * num_levels if s.greedy else None)
    config = SamplerConfig(steps=steps, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                           greedy_last=s.greedy_last, choice_noise=s.choice_noise)
    config.resolve(num_levels)  # validate now, naming the field
    return config


def build_optimizer(cfg, model):
    """``(AdamW, LambdaLR warmup-cosine)`` from the ``optim`` section."""
    from soundstorm.train.optim import OptimConfig, make_optimizer, make_scheduler

    s = strict(OptimSection, resolved(cfg), "optim")
    if s.name != "adamw":
        raise ValueError(f"optim.name={s.name!r} is unknown; expected 'adamw'")
    config = OptimConfig(lr=s.lr, betas=tuple(s.betas), eps=s.eps, weight_decay=s.weight_decay,
                         warmup_steps=s.warmup_steps, total_steps=s.total_steps, min_lr_ratio=s.min_lr_ratio)
    optimizer = make_optimizer(model, config)
    return optimizer, make_scheduler(optimizer, config)


def build_trainer_config(cfg):
    from soundstorm.train.loop import TrainerConfig

    return strict(TrainerConfig, resolved(cfg), "trainer")


def build_logger(cfg, run_config: dict | None, enabled: bool, resume_id: str | None = None):
    from soundstorm.train.logging import LoggerConfig, RunLogger

    return RunLogger(strict(LoggerConfig, resolved(cfg), "logger"), run_config, enabled, resume_id)


def build_datasets(cfg, model_config=None, seed: int = 0):
    """``(section, train TokenDataset, held-out TokenDataset or None)``, split by sentence (:mod:`soundstorm.data.split`)."""
    from soundstorm.data import TokenDataset, TokenManifest
    from soundstorm.data.split import split_utterances

    if isinstance(cfg, DictConfig) and OmegaConf.is_missing(cfg, "root") or not cfg.get("root"):
        raise ValueError("data.root is not set; expected data.root=TOKEN_FOLDER (written by soundstorm-prepare)")
    s = strict(DataSection, resolved(cfg), "data")
    manifest = TokenManifest.load(s.root)
    train_ids, heldout_ids = split_utterances(manifest.utterances, s.heldout_fraction, s.split_seed)
    common = dict(min_seconds=s.min_seconds, max_seconds=s.max_seconds, seed=seed,
                  frames_multiple=s.frames_multiple, model_config=model_config)
    train = TokenDataset(s.root, utt_ids=train_ids, **common)
    heldout = TokenDataset(s.root, utt_ids=heldout_ids, **common) if heldout_ids else None
    return s, train, heldout


def build_batch_source(section, dataset, backend, seed: int, mask_id: int):
    """The trainer's ``batches(epoch, skip)`` over this rank's share of length-bucketed batches."""
    from soundstorm.data import LengthBucketSampler
    from soundstorm.train.data import make_batch_source

    info = backend.dist
    sampler = LengthBucketSampler(dataset, section.batch_size, seed=seed, num_replicas=info.world_size,
                                  rank=info.rank, drop_last=True, bucket_batches=section.bucket_batches)

    def batches_for_epoch(epoch):
        sampler.set_epoch(epoch)
        return list(sampler)

    return make_batch_source(dataset, batches_for_epoch, dataset.collate, seed, mask_id, section.num_workers,
                             backend.wrap_dataloader)


def build_evaluation(cfg):
    return strict(EvaluationSection, resolved(cfg), "evaluation")


def build_extra_metrics(section) -> list:
    """The pluggable WER / speaker-similarity metrics named by ``evaluation.asr`` / ``evaluation.speaker``."""
    from soundstorm.evaluation.metrics import SpeakerSimilarity, WordErrorRate, load_callable

    metrics = []
    if section.asr:
        metrics.append(WordErrorRate(load_callable(section.asr)))
    if section.speaker:
        metrics.append(SpeakerSimilarity(load_callable(section.speaker)))
    return metrics
