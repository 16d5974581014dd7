"""Builders: the only core code that turns Hydra/OmegaConf configs into objects.

Each config section is validated straight into its component's own dataclass (``SoundStormConfig``,
``SamplerConfig``, ``OptimConfig``, ``MelRVQConfig``, ``MFCCKMeansConfig``, ``EvaluationConfig``, …)
by :func:`strict`, so a misspelt or unknown key fails loudly (``ValueError`` naming it) and a field
exists in exactly one place. Keys that only select or locate a component (``name``,
``pretrained_dir``) are taken off first. Components configured by constructor arguments (EnCodec,
HuBERT + k-means) are checked against a schema generated from the constructor's signature.

Arrows point one way: the CLIs (and the applications' own builders) call these; nothing below imports
this module (``tests/test_imports.py``).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from threadpoolctl import threadpool_limits

import soundstorm.hydra_sweep  # noqa: F401  (registers the ${soundstorm.job_dir:...} / sweep_group resolvers)
from soundstorm._checks import dataclass_from_dict
from soundstorm.assets import Assets, check_configured, load_assets
from soundstorm.backends import get_backend
from soundstorm.bench import BenchConfig
from soundstorm.codecs import EncodecCodec, MelRVQCodec, MelRVQConfig, load_codec
from soundstorm.config_keys import check_keys, dataclass_schema
from soundstorm.data import LengthBucketSampler, TokenDataset, TokenManifest
from soundstorm.data.buckets import derive_frame_buckets, padded_length
from soundstorm.data.prepare import PrepareOptions
from soundstorm.data.split import split_utterances
from soundstorm.evaluation.asr import build_recognizer
from soundstorm.evaluation.config import EvaluationConfig
from soundstorm.evaluation.metrics import SpeakerSimilarity, WordErrorRate
from soundstorm.evaluation.speaker import build_verifier
from soundstorm.io import CorruptFileError, atomic_write_bytes, check_output_dir
from soundstorm.masking import check_level_weights
from soundstorm.model import PRESETS, SoundStorm, SoundStormConfig
from soundstorm.sampler import SamplerConfig
from soundstorm.semantic import (HubertKMeans, MFCCKMeans, MFCCKMeansConfig, PhoneTokenizer, PhoneTokenizerConfig,
                                 load_tokenizer, upsample_ratio)
from soundstorm.train.checkpoint import check_resumable, resume_candidates
from soundstorm.train.data import make_batch_source
from soundstorm.train.eval_hook import TrainingEvaluator
from soundstorm.train.final_metrics import objective
from soundstorm.train.graphs import GraphBudget
from soundstorm.train.logging import LoggerConfig, RunLogger
from soundstorm.train.loop import Trainer, TrainerConfig
from soundstorm.train.optim import OptimConfig, make_optimizer, make_scheduler

SELECTORS = ("name", "pretrained_dir")  # keys that choose / locate a component, not its settings


def resolved(cfg):
    """A config node as a plain container with interpolations resolved against the whole config
    (``strict`` validates a section on its own, where ``${trainer.max_steps}`` could not be found)."""
    if isinstance(cfg, DictConfig):
        try:
            return OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as err:
            raise ValueError(f"cannot resolve config: {err}") from err
    return cfg


def strict(schema, cfg, where: str, drop: tuple[str, ...] = ()):
    """Validate ``cfg`` (less the keys in ``drop``) into the dataclass ``schema`` and build it;
    unknown keys (named with the nearest known one, :mod:`soundstorm.config_keys`) or bad types →
    ValueError naming them (the dataclass's own checks run too)."""
    data = resolved(cfg)
    if not isinstance(data, dict):
        raise ValueError(f"the {where} config must be a mapping, got {data!r}")
    data = {k: v for k, v in data.items() if k not in drop}
    check_keys(data, dataclass_schema(schema), f"the {where} config")  # names the nearest known key
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), data))
    except OmegaConfBaseException as err:
        raise ValueError(f"invalid {where} config: {err}") from err


def signature_schema(component) -> type:
    """A dataclass generated from ``component.__init__``'s keyword arguments (names, types, defaults)."""
    hints = typing.get_type_hints(component.__init__)
    fields = [(name, hints.get(name, Any), dataclasses.field(default=param.default))
              for name, param in inspect.signature(component.__init__).parameters.items() if name != "self"]
    return dataclasses.make_dataclass(f"{component.__name__}Arguments", fields)


# ---------------------------------------------------------------- codec / semantic
CODECS = {"melrvq": (MelRVQConfig, lambda c: MelRVQCodec(c)),
          "encodec_24khz": (signature_schema(EncodecCodec), lambda c: EncodecCodec(**dataclasses.asdict(c)))}
TOKENIZERS = {"mfcc_kmeans": (MFCCKMeansConfig, lambda c: MFCCKMeans(c)),
              "phone_classifier": (PhoneTokenizerConfig, lambda c: PhoneTokenizer(c)),
              "hubert_kmeans": (signature_schema(HubertKMeans), lambda c: HubertKMeans(**dataclasses.asdict(c)))}


def _component(cfg, registry: dict, where: str):
    """``(component, pretrained_dir)`` for a codec / semantic section named by its ``name``."""
    data = resolved(cfg)
    if not isinstance(data, dict) or "name" not in data:
        raise ValueError(f"the {where} config needs a 'name', one of {sorted(registry)}; got {cfg!r}")
    if data["name"] not in registry:
        raise ValueError(f"{where}.name={data['name']!r} is unknown; expected one of {sorted(registry)}")
    schema, make = registry[data["name"]]
    return make(strict(schema, data, where, drop=SELECTORS)), data.get("pretrained_dir")


def build_codec(cfg):
    """A codec from a ``codec`` config section; with ``pretrained_dir`` the saved codec is loaded and
    must agree with the section's settings. Offline codecs come back unfitted otherwise."""
    codec, directory = _component(cfg, CODECS, "codec")
    return _maybe_load(codec, directory, load_codec, "codec")


def build_semantic(cfg):
    """A semantic tokenizer from a ``semantic`` config section (same ``pretrained_dir`` rule)."""
    tokenizer, directory = _component(cfg, TOKENIZERS, "semantic")
    return _maybe_load(tokenizer, directory, load_tokenizer, "semantic")


def _maybe_load(component, directory, loader, where: str):
    if directory is None:
        return component
    saved = loader(directory)
    if saved.describe() != component.describe():
        raise ValueError(f"{where}.pretrained_dir={directory} holds {saved.describe()}, but the {where} config "
                         f"describes {component.describe()}")
    return saved


def build_assets(folder, field: str, codec_cfg=None, semantic_cfg=None) -> Assets:
    """The codec and tokenizer saved in a token folder (:func:`soundstorm.assets.load_assets`): their
    settings are read from the folder, not typed again; a ``codec`` / ``semantic`` section, when one is
    given, must agree with them (a mismatch is refused here, before any work)."""
    assets = load_assets(folder, field)
    for cfg, registry, kind in ((codec_cfg, CODECS, "codec"), (semantic_cfg, TOKENIZERS, "semantic")):
        data = resolved(cfg)
        if data is None:
            continue
        if not isinstance(data, dict) or data.get("name") not in registry:
            raise ValueError(f"{kind}.name={data.get('name') if isinstance(data, dict) else data!r} is unknown; "
                             f"expected one of {sorted(registry)} (or no {kind} section: the saved one is used)")
        settings = dataclasses.asdict(strict(registry[data["name"]][0], data, kind, drop=SELECTORS))
        check_configured(kind, {"name": data["name"], **settings}, data.get("pretrained_dir"), assets, field)
    return assets


def build_prepare(cfg):
    """``(PrepareOptions, codec, tokenizer)`` for :func:`soundstorm.data.prepare.prepare`."""
    if OmegaConf.is_missing(cfg, "input") or OmegaConf.is_missing(cfg, "output"):
        raise ValueError("soundstorm-prepare needs input=FOLDER_OR_MANIFEST and output=TOKEN_FOLDER")
    options = strict(PrepareOptions, cfg, "prepare", drop=("codec", "semantic", "num_threads"))
    # output: checked, created and locked by the CLI's claim (soundstorm.outputs), after these checks
    num_threads = cfg.get("num_threads")
    if num_threads is not None:  # torch intra-op threads and scikit-learn's OpenMP pool
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer or null, got {num_threads!r}")
    elif options.workers > 1:  # the cores shared among the worker processes, not each taking them all
        num_threads = max(1, torch.get_num_threads() // options.workers)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
        threadpool_limits(limits=num_threads)
    return options, build_codec(cfg.codec), build_semantic(cfg.semantic)


# ================================================================ model, sampler, backend
@dataclasses.dataclass
class BackendChoice:
    """The ``backend`` section: which backend and its keyword options (``get_backend(name, **options)``)."""

    name: str = "auto"
    options: Any = dataclasses.field(default_factory=dict)


def build_backend(cfg):
    """A backend (``soundstorm.backends``) from the ``backend`` section; joins torchrun's job."""
    choice = strict(BackendChoice, cfg, "backend")
    backend = get_backend(choice.name, **dict(choice.options or {}))
    backend.init_distributed()
    return backend


DATA_FACING = ("num_levels", "codebook_size", "semantic_vocab_size", "semantic_upsample")


def build_model_config(cfg, manifest=None, sizes_from_preset: bool = False):
    """``SoundStormConfig`` from the ``model`` section. ``name`` picks a preset (``SoundStormConfig.paper()``
    etc.) whose values fill the section's null architecture fields; null data-facing sizes come from
    ``manifest`` (or, with ``sizes_from_preset`` and no manifest, e.g. the benchmark, from the preset),
    and the result is checked against the manifest (codec levels, codebook, semantic vocabulary, rate)."""
    data = dict(resolved(cfg))
    name = data.pop("name", "custom")
    preset = SoundStormConfig.preset(name).to_dict() if name in PRESETS else {}
    if manifest is not None:
        derived = {"num_levels": manifest.num_levels, "codebook_size": int(manifest.codec["codebook_size"]),
                   "semantic_vocab_size": int(manifest.semantic["vocab_size"]),
                   "semantic_upsample": manifest.semantic_upsample}
        data.update({k: v for k, v in derived.items() if data.get(k) is None})
    missing = [k for k in DATA_FACING if data.get(k) is None and not (sizes_from_preset and k in preset)]
    if missing:
        raise ValueError(f"model.{missing[0]} is null and no token manifest was given to fill it; set "
                         f"{', '.join('model.' + m for m in missing)} or data.root")
    for key, value in list(data.items()):
        if value is None and key in preset:
            data[key] = preset[key]
    config = strict(SoundStormConfig, data, "model")
    if manifest is not None:
        manifest.check_compatible(config)
    return config


def build_sampler(cfg, num_levels: int) -> SamplerConfig:
    """``SamplerConfig`` from the ``sampler`` section (its rules are the dataclass's own, checked as it is
    built), and refused here, before any work, when it does not fit a model of ``num_levels`` levels."""
    config = strict(SamplerConfig, cfg, "sampler", drop=("name",))
    config.resolve(num_levels)
    return config


def build_optimizer(cfg, model):
    """``(AdamW, LambdaLR warmup-cosine)`` from the ``optim`` section."""
    data = resolved(cfg)
    if isinstance(data, dict) and data.get("name", "adamw") != "adamw":
        raise ValueError(f"optim.name={data['name']!r} is unknown; expected 'adamw'")
    config = strict(OptimConfig, data, "optim", drop=("name",))
    config.betas = tuple(config.betas)
    optimizer = make_optimizer(model, config)
    return optimizer, make_scheduler(optimizer, config)


def build_trainer_config(cfg) -> TrainerConfig:
    return strict(TrainerConfig, cfg, "trainer")


def build_logger(cfg, run_config: dict | None, enabled: bool, resume_id: str | None = None) -> RunLogger:
    return RunLogger(strict(LoggerConfig, cfg, "logger"), run_config, enabled, resume_id)


# ================================================================ data
@dataclasses.dataclass
class DataConfig:
    """The ``data`` section: the token folder and how it is windowed (``TokenDataset``), split
    (by sentence, :mod:`soundstorm.data.split`), batched (``LengthBucketSampler``; ``batch_size`` per
    device) and loaded. Padding (``soundstorm.data.buckets``): ``frame_buckets`` or ``frames_multiple``
    when set; else, on a static-shape backend (XLA), ``num_buckets`` buckets derived from the training windows."""

    root: str = "???"
    min_seconds: float = 1.0
    max_seconds: float = 4.0
    frames_multiple: typing.Optional[int] = None
    frame_buckets: typing.Optional[typing.List[int]] = None
    num_buckets: int = 4
    batch_size: int = 16
    heldout_fraction: float = 0.05
    split_seed: int = 0
    num_workers: int = 0
    bucket_batches: int = 50
    audio_root: typing.Optional[str] = None  # where the speech table may read source audio (TokenManifest.audio_root)
    # share of training windows that open with 2-4 s of another utterance of the same speaker (TokenDataset.splice)
    cross_prompt_fraction: float = 0.0
    cross_prompt_seconds: typing.List[float] = dataclasses.field(default_factory=lambda: [2.0, 4.0])


@dataclasses.dataclass
class DataRoot:
    """A token folder read once: the ``data`` section, its manifest and the held-out split by sentence."""

    section: DataConfig
    manifest: TokenManifest
    train_ids: list
    heldout_ids: list


def load_data_root(cfg) -> DataRoot:
    """The ``data`` section's token folder, manifest and split (SoundStorm's and the text-to-semantic
    stage's training share it, so both hold out the same sentences)."""
    if isinstance(cfg, DictConfig) and OmegaConf.is_missing(cfg, "root") or not cfg.get("root"):
        raise ValueError("data.root is not set; expected data.root=TOKEN_FOLDER (written by soundstorm-prepare)")
    section = strict(DataConfig, cfg, "data")
    manifest = TokenManifest.load(section.root)
    train_ids, heldout_ids = split_utterances(manifest.utterances, section.heldout_fraction, section.split_seed)
    return DataRoot(section, manifest, train_ids, heldout_ids)


def build_datasets(cfg, model_config=None, seed: int = 0, static_shapes: bool = False):
    """``(DataConfig, train TokenDataset, held-out TokenDataset or None)`` split by sentence
    (:mod:`soundstorm.data.split`); with ``static_shapes`` (XLA) and no padding set, batches pad to
    ``num_buckets`` derived buckets."""
    data = load_data_root(cfg)
    s = data.section
    common = dict(min_seconds=s.min_seconds, max_seconds=s.max_seconds, seed=seed, audio_root=s.audio_root,
                  frames_multiple=s.frames_multiple, model_config=model_config, frame_buckets=s.frame_buckets,
                  manifest=data.manifest)
    # the splice is a training-data choice; held-out windows (teacher-forced evaluation) stay plain
    train = TokenDataset(s.root, utt_ids=data.train_ids, cross_prompt_fraction=s.cross_prompt_fraction,
                         cross_prompt_seconds=tuple(s.cross_prompt_seconds), **common)
    if static_shapes and s.frame_buckets is None and s.frames_multiple is None:
        _, shortest, longest = train.frame_range()
        common["frame_buckets"] = train.frame_buckets = derive_frame_buckets(shortest, longest, s.num_buckets,
                                                                             train.upsample)
    heldout = TokenDataset(s.root, utt_ids=data.heldout_ids, **common) if data.heldout_ids else None
    return s, train, heldout


def build_batch_source(data: DataConfig, dataset, backend, seed: int, mask_id: int, level_weights=None):
    """The trainer's ``batches(epoch, skip)`` over this rank's share of length-bucketed batches."""
    info = backend.dist
    process_batch = data.batch_size * backend.devices_per_process  # batch_size is per device
    sampler = LengthBucketSampler(dataset, process_batch, seed=seed, num_replicas=info.world_size,
                                  rank=info.rank, drop_last=True, bucket_batches=data.bucket_batches)

    def batches_for_epoch(epoch):
        sampler.set_epoch(epoch)
        return list(sampler)

    return make_batch_source(dataset, batches_for_epoch, dataset.collate, seed, mask_id, data.num_workers,
                             backend.wrap_dataloader, pin_memory=backend.pin_memory, level_weights=level_weights)


# ================================================================ evaluation
def build_evaluation(cfg) -> EvaluationConfig:
    return strict(EvaluationConfig, cfg, "evaluation")


def build_extra_metrics(evaluation: EvaluationConfig) -> list:
    """The WER / speaker-similarity metrics of the generation evaluation, from ``evaluation.asr`` /
    ``evaluation.verifier`` (built the one way every recognizer and verifier is built)."""
    metrics = []
    if evaluation.asr:
        metrics.append(WordErrorRate(build_recognizer(evaluation.asr, evaluation.asr_options, "evaluation.asr")))
    if evaluation.verifier:
        metrics.append(SpeakerSimilarity(build_verifier(evaluation.verifier, evaluation.verifier_options,
                                                        "evaluation.verifier")))
    return metrics


# ================================================================ a training run, step by step
def training_out_dir(cfg) -> Path:
    """``out_dir`` created and writable, with room for its ``checkpoints`` folder."""
    out_dir = check_output_dir(cfg.out_dir, "out_dir")
    if (out_dir / "checkpoints").exists() and not (out_dir / "checkpoints").is_dir():
        raise ValueError(f"{out_dir / 'checkpoints'} is a file, but training writes its checkpoints in that folder; "
                         "expected a folder: move the file away or choose another out_dir")
    return out_dir


def _level_weights(trainer: TrainerConfig, model_config: SoundStormConfig):
    """``trainer.level_weights`` as a float tensor over the model's levels (None: the paper's uniform draw)."""
    if trainer.level_weights is None:
        return None
    return check_level_weights(trainer.level_weights, model_config.num_levels, "trainer.level_weights").float()


def check_resume(resume_from: list[Path], model_config: dict, tokens: dict | None) -> None:
    """Before anything is written to ``out_dir`` (``config.yaml``, the wandb run): refuse a resume the trainer
    would refuse (another model size, another token folder), checked on the checkpoint it would restore, the
    newest whose ``config.json`` reads (the trainer checks again on the one it loads). A refused run must
    leave ``out_dir`` describing the run that wrote it."""
    for directory in resume_from:
        try:
            check_resumable(directory, model_config, tokens)
        except CorruptFileError:
            continue  # the trainer passes over a checkpoint it cannot read (load_newest_intact)
        return


def start_logging(cfg, backend, out_dir: Path, resume_from, run_id_file: str = "wandb_run_id.txt") -> RunLogger:
    """The run logger (resuming the wandb run of a resumed training), and the composed config recorded in
    ``out_dir/config.yaml`` (Hydra writes nothing itself)."""
    run_id_path = out_dir / run_id_file
    resume_id = run_id_path.read_text().strip() if resume_from and run_id_path.is_file() else None
    logger = build_logger(cfg.logger, OmegaConf.to_container(cfg, resolve=True), backend.dist.is_main, resume_id)
    if backend.dist.is_main:
        atomic_write_bytes(out_dir / "config.yaml", OmegaConf.to_yaml(cfg).encode())
        if logger.run_id:
            atomic_write_bytes(run_id_path, logger.run_id.encode())
    return logger


def _graph_budget(backend, train_set: TokenDataset, data: DataConfig, trainer: TrainerConfig) -> GraphBudget | None:
    """On a static-shape backend (XLA): how many compiled graphs the batch shapes allow."""
    if not backend.static_shapes:
        return None
    budget = GraphBudget(tuple(train_set.frame_shapes()), data.batch_size * backend.devices_per_process,
                         trainer.grad_accum, trainer.max_graphs)
    if backend.dist.is_main:
        print(f"static shapes: {budget.describe()}", flush=True)
    return budget


def build_training(cfg: DictConfig, backend, run_id_file: str = "wandb_run_id.txt"):
    """``(Trainer, checkpoints to resume from, newest first)``: every object of a training run from the
    composed ``train`` config (seeded model, optimizer, data, logger, evaluation hook). Everything a user
    typed is checked before any work: out_dir, the trainer section (before optim: its total_steps follows
    max_steps), and the codec/tokenizer saved in data.root against any codec/semantic section given."""
    seed, out_dir = int(cfg.seed), training_out_dir(cfg)
    trainer_config = build_trainer_config(cfg.trainer)
    data, train_set, heldout_set = build_datasets(cfg.data, None, seed, backend.static_shapes)
    assets = build_assets(data.root, "data.root", cfg.get("codec"), cfg.get("semantic"))
    model_config = build_model_config(cfg.model, train_set.manifest)
    level_weights = _level_weights(trainer_config, model_config)
    sampler_config = build_sampler(cfg.sampler, model_config.num_levels)
    evaluation = build_evaluation(cfg.evaluation)

    torch.manual_seed(seed)
    model = SoundStorm(model_config).to(backend.device)
    optimizer, scheduler = build_optimizer(cfg.optim, model)
    attention = backend.configure_model(model, trainer_config.activation_checkpointing)

    resume_from = resume_candidates(cfg.resume, out_dir / "checkpoints")
    check_resume(resume_from, model_config.to_dict(), assets.record)
    logger = start_logging(cfg, backend, out_dir, resume_from, run_id_file)
    batches = build_batch_source(data, train_set, backend, seed, model_config.mask_id, level_weights)
    evaluate = None
    if heldout_set is not None:
        evaluate = TrainingEvaluator(backend, heldout_set, evaluation, data.batch_size, lambda: assets.codec,
                                     sampler_config, logger, out_dir)
    if backend.dist.is_main:
        print(f"model: {model.num_parameters():,} parameters {model_config.to_dict()}; train utterances "
              f"{len(train_set)}, held-out {len(heldout_set) if heldout_set else 0}; backend "
              f"{backend.describe()}, {backend.dist.world_size} process(es); attention {attention}, activation "
              f"checkpointing {'on' if trainer_config.activation_checkpointing else 'off'}", flush=True)
    budget = _graph_budget(backend, train_set, data, trainer_config)
    trainer = Trainer(model, backend, optimizer, scheduler, trainer_config, out_dir, batches, logger, evaluate,
                      graph_budget=budget, tokens=assets.record)
    return trainer, resume_from


# ================================================================ sweeps
def check_sweep_objective(cfg) -> str | None:
    """``sweep_objective``: the name of a metric the trainer logs (``eval/loss``, ``train/loss``,
    ``eval/accuracy_level1``, ...) or null; checked before training, so a malformed one costs nothing."""
    name = cfg.get("sweep_objective")
    if name is not None and not (isinstance(name, str) and name.startswith(("eval/", "train/"))):
        raise ValueError(f"sweep_objective={name!r} is not a logged metric name; expected one starting with "
                         "'eval/' or 'train/' (e.g. eval/loss, the held-out loss) or null")
    return name


def sweep_objective(cfg) -> float | None:
    """The value a sweeper optimises: the final value of ``sweep_objective`` in ``out_dir``'s
    ``final_metrics.json`` (:func:`soundstorm.train.final_metrics.objective`); None when it is null."""
    name = check_sweep_objective(cfg)
    return None if name is None else objective(cfg.out_dir, name)


# ================================================================ benchmark, dry run
def build_bench_config(cfg) -> BenchConfig:
    """The ``bench`` config as a :class:`soundstorm.bench.BenchConfig`: the ``model``, ``sampler`` and
    ``backend`` groups built as everywhere (the model's data-facing sizes from its preset), the rest of the
    keys validated by the dataclass (an unknown key is a ValueError)."""
    data = dict(resolved(cfg))
    for key in ("hydra", "model", "sampler", "backend", "overwrite"):  # overwrite: the CLI's (soundstorm.outputs)
        data.pop(key, None)
    model = build_model_config(cfg.model, sizes_from_preset=True)
    choice = strict(BackendChoice, cfg.backend, "backend")
    return dataclass_from_dict(BenchConfig, {**data, "model": model, "sampler": build_sampler(cfg.sampler,
                                                                                              model.num_levels),
                                             "backend": choice.name, "backend_options": dict(choice.options or {})},
                               "bench options")


def build_dry_run(cfg) -> dict:
    """What ``soundstorm-train dry_run=true`` needs, without data, weights or a device: the model
    config (sizes from ``data.root``'s manifest when it exists, else from the codec and semantic
    architectures, built without weights), the per-device batch, the longest padded window in
    frames, the autocast dtype, and whether EMA and activation checkpointing are on."""

    def architecture(section):  # the component without weights: its rates and sizes only
        return {**OmegaConf.to_container(section, resolve=False), "pretrained_dir": None,
                **({"pretrained": False} if "pretrained" in section else {})}

    root = None if OmegaConf.is_missing(cfg.data, "root") else cfg.data.root
    if root and (Path(root) / "manifest.json").is_file():
        manifest = TokenManifest.load(root)
    else:
        codec, tokenizer = build_codec(architecture(cfg.codec)), build_semantic(architecture(cfg.semantic))
        manifest = TokenManifest(codec=codec.describe(), semantic=tokenizer.describe(),
                                 semantic_upsample=upsample_ratio(codec.frame_rate, tokenizer.frame_rate))
    model_config = build_model_config(cfg.model, manifest)
    data = strict(DataConfig, {**OmegaConf.to_container(cfg.data, resolve=False), "root": "unused"}, "data")
    up = model_config.semantic_upsample
    longest = max(1, round(data.max_seconds * manifest.semantic_frame_rate)) * up
    options = strict(BackendChoice, cfg.backend, "backend").options or {}
    trainer = build_trainer_config(cfg.trainer)
    return {"model_config": model_config, "batch_size": data.batch_size, "frame_rate": manifest.frame_rate,
            "num_frames": padded_length(longest, data.frames_multiple or up, data.frame_buckets),
            "seconds": longest / manifest.frame_rate, "ema": trainer.ema_decay > 0,
            "dtype": {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(options.get("dtype"), torch.float32),
            "checkpointing": trainer.activation_checkpointing}
