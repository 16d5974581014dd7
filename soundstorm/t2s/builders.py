"""Builders of the text-to-semantic stage: its Hydra sections → T2SConfig, datasets, batches.

Like :mod:`soundstorm.builders` (whose data, optim, trainer, logger and backend builders the stage
shares), this is the only text-to-semantic code that reads OmegaConf; the ``t2s_model`` section is
validated straight into :class:`~soundstorm.t2s.model.T2SConfig`, so a misspelt key fails with a
``ValueError`` naming it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from soundstorm.builders import load_data_root, resolved, strict
from soundstorm.data import LengthBucketSampler
from soundstorm.t2s.data import T2SDataset, make_t2s_batch_source
from soundstorm.t2s.model import T2SConfig


@dataclass
class T2SEvalSection:
    """Held-out scoring during training: teacher-forced at these mask ratios, over ``max_batches``."""

    mask_ratios: list = dataclasses.field(default_factory=lambda: [0.5, 1.0])
    max_batches: int = 4
    seed: int = 0


def build_t2s_config(cfg, manifest=None):
    """``T2SConfig`` from the ``t2s_model`` section; a null ``semantic_vocab_size`` comes from ``manifest``,
    and a given one must match it."""
    data = dict(resolved(cfg))
    data.pop("name", None)
    if manifest is not None:
        vocab = int(manifest.semantic["vocab_size"])
        if data.get("semantic_vocab_size") is None:
            data["semantic_vocab_size"] = vocab
        elif data["semantic_vocab_size"] != vocab:
            raise ValueError(f"t2s_model.semantic_vocab_size={data['semantic_vocab_size']} but the token manifest's "
                             f"semantic tokenizer ({manifest.semantic['name']}) has vocab_size={vocab}")
    if data.get("semantic_vocab_size") is None:
        raise ValueError("t2s_model.semantic_vocab_size is null and no token manifest was given; set data.root")
    return strict(T2SConfig, data, "t2s_model")


def build_t2s_datasets(cfg, model_config, prompt_probability: float, seed: int = 0):
    """``(section, train T2SDataset, held-out T2SDataset or None)``; the token folder and its split by
    sentence are SoundStorm's (:func:`soundstorm.builders.load_data_root`)."""
    data = load_data_root(cfg)
    s = data.section
    common = dict(frontend=model_config.frontend, seed=seed, prompt_probability=prompt_probability,
                  max_prompt_frames=model_config.max_prompt_frames, max_seconds=s.max_seconds,
                  semantic_vocab_size=model_config.semantic_vocab_size, manifest=data.manifest)
    train = T2SDataset(s.root, utt_ids=data.train_ids, aligned=model_config.aligned, **common)
    heldout = T2SDataset(s.root, utt_ids=data.heldout_ids, aligned=model_config.aligned, emission=train.emission,
                         **common) if data.heldout_ids else None
    return s, train, heldout


def build_t2s_batch_source(section, dataset, backend, seed: int, mask_id: int):
    """The trainer's ``batches(epoch, skip)`` over this rank's share of length-bucketed batches."""
    info = backend.dist
    sampler = LengthBucketSampler(dataset, section.batch_size, seed=seed, num_replicas=info.world_size,
                                  rank=info.rank, drop_last=True, bucket_batches=section.bucket_batches)

    def batches_for_epoch(epoch):
        sampler.set_epoch(epoch)
        return list(sampler)

    return make_t2s_batch_source(dataset, batches_for_epoch, seed, mask_id, section.num_workers,
                                 backend.wrap_dataloader)


def build_t2s_evaluation(cfg):
    section = strict(T2SEvalSection, cfg, "evaluation")
    if not section.mask_ratios or any(not 0.0 < float(r) <= 1.0 for r in section.mask_ratios):
        raise ValueError(f"evaluation.mask_ratios must be non-empty values in (0, 1], got {section.mask_ratios}")
    return section
