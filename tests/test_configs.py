"""Every primary config, group option and experiment composes, and every section passes the
builders' strict schemas (so a misspelt key in a yaml fails here, not in a run). The wheel ships
every yaml."""

from __future__ import annotations

import configparser
import fnmatch
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from soundstorm import SoundStormConfig, builders, hydra_sweep

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def compose_cfg(name: str, overrides: list[str]):
    with initialize_config_module("soundstorm.configs", version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=True)


def check_sections(cfg) -> None:
    """Validate every section present with the builders (null data-facing model sizes filled in)."""
    from soundstorm.model import SoundStorm

    if "model" in cfg:
        model = builders.resolved(cfg.model)
        model.update({k: 4 for k in builders.DATA_FACING if model[k] is None})
        model_config = builders.build_model_config(model)
    else:
        model_config = SoundStormConfig.tiny()
    if "sampler" in cfg:
        builders.build_sampler(cfg.sampler, model_config.num_levels)
    if "optim" in cfg:
        builders.build_optimizer(cfg.optim, SoundStorm(SoundStormConfig.tiny()))
    if "backend" in cfg:
        builders.strict(builders.BackendChoice, cfg.backend, "backend")
    if "data" in cfg:
        builders.strict(builders.DataConfig, cfg.data, "data")
    if "evaluation" in cfg:
        builders.build_evaluation(cfg.evaluation)
    if "trainer" in cfg:
        builders.build_trainer_config(cfg.trainer)
    if "logger" in cfg:
        from soundstorm.train.logging import LoggerConfig

        builders.strict(LoggerConfig, cfg.logger, "logger")
    for key, registry in (("codec", builders.CODECS), ("semantic", builders.TOKENIZERS)):
        if key in cfg:
            section = builders.resolved(cfg[key])
            builders.strict(registry[section["name"]][0], section, key, drop=builders.SELECTORS)


CASES = [("train", [f"{group}={name}"]) for group in ("model", "codec", "semantic", "optim", "sampler", "trainer",
                                                      "logger", "backend", "data") for name in options(group)]
CASES += [("train", [f"experiment={name}"]) for name in options("experiment")]
# experiments that select an optional Hydra plugin (sweep_slurm, optuna_tiny) need the sweep extra
NEEDS_EXTRA = {f"experiment={name}": hydra_sweep.missing_plugin([f"experiment={name}"]) for name in options("experiment")}
CASES += [(primary, [f"{group}={name}"]) for primary in ("eval", "generate")
          for group in ("codec", "semantic", "sampler", "backend") for name in options(group)]


@pytest.mark.parametrize("primary,overrides", CASES, ids=[f"{p}:{','.join(o)}" for p, o in CASES])
def test_composes_and_sections_validate(primary, overrides):
    if NEEDS_EXTRA.get(overrides[0]):
        pytest.skip(NEEDS_EXTRA[overrides[0]])
    extra = {"train": ["data.root=/tokens"], "eval": ["data.root=/tokens", "checkpoint=/c"],
             "generate": ["checkpoint=/c", "assets=/tokens", "inputs=[a.npy]"]}[primary]
    cfg = compose_cfg(primary, overrides + extra)
    assert cfg.hydra.job.chdir is False
    check_sections(cfg)


def test_model_levels_come_from_the_codec():
    cfg = compose_cfg("train", ["data.root=/t", "codec=melrvq", "codec.num_levels=6", "codec.codebook_size=128",
                                "semantic=mfcc_kmeans", "semantic.vocab_size=50"])
    model = builders.resolved(cfg.model)
    assert (model["num_levels"], model["codebook_size"], model["semantic_vocab_size"]) == (6, 128, 50)
    assert model["semantic_upsample"] is None  # from the token manifest
    with pytest.raises(ValueError, match="semantic_upsample"):
        builders.build_model_config(cfg.model, None)


def test_unknown_key_in_a_section_fails_loudly():
    cfg = compose_cfg("train", ["data.root=/t", "+trainer.max_stepz=3"])
    with pytest.raises(ValueError, match="max_stepz"):
        builders.build_trainer_config(cfg.trainer)


def test_wheel_ships_every_yaml_and_package():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    globs = [g.strip() for g in setup["options.package_data"]["soundstorm.configs"].split(",")]
    for path in CONFIGS.rglob("*.yaml"):
        rel = path.relative_to(CONFIGS).as_posix()
        assert any(fnmatch.fnmatch(rel, g) and rel.count("/") == g.count("/") for g in globs), rel
    packages = set(setup["options"]["packages"].split())
    for init in (ROOT / "soundstorm").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT).as_posix().replace("/", ".")
        if not rel.startswith("soundstorm.configs"):
            assert rel in packages, rel
    scripts = setup["options.entry_points"]["console_scripts"]
    for name in ("soundstorm-train", "soundstorm-eval", "soundstorm-generate"):
        assert name in scripts


@pytest.mark.parametrize("name", ["paper", "small", "tiny"])
def test_model_yaml_is_the_code_preset(name):
    """configs/model/NAME.yaml and SoundStormConfig.NAME() (the benchmark's preset) are one definition."""
    cfg = compose_cfg("train", [f"model={name}", "data.root=/t"])
    model = builders.resolved(cfg.model)
    sizes = {k: getattr(SoundStormConfig.preset(name), k) for k in builders.DATA_FACING}
    assert builders.build_model_config({**model, **sizes}) == SoundStormConfig.preset(name)
    assert builders.build_model_config({**model, **sizes, "depth": 1}).depth == 1


def test_sections_validate_into_the_components_dataclasses():
    from soundstorm.evaluation.config import EvaluationConfig
    from soundstorm.sampler import SamplerConfig

    cfg = compose_cfg("train", ["data.root=/t", "sampler.temperature=[0.5,1.0,1.0,1.0]"])
    sampler = builders.build_sampler(cfg.sampler, 4)
    assert sampler == SamplerConfig(temperature=(0.5, 1.0, 1.0, 1.0))
    assert isinstance(builders.build_evaluation(cfg.evaluation), EvaluationConfig)
    with pytest.raises(ValueError, match="top_kk"):
        builders.build_sampler({**builders.resolved(cfg.sampler), "top_kk": 3}, 4)
    with pytest.raises(ValueError, match="full_key: dim"):
        builders.build_model_config({**builders.resolved(cfg.model), "name": "custom", "num_levels": 4,
                                     "codebook_size": 8, "semantic_vocab_size": 8, "semantic_upsample": 2})


@pytest.mark.parametrize("overrides, expected", [(["workers=2"], "half"), (["workers=2", "num_threads=1"], 1),
                                                 (["workers=1"], "all")])
def test_prepare_workers_share_the_cores_unless_num_threads_is_set(overrides, expected):
    """prepare's worker processes take the caller's thread count: with workers=N and no num_threads each gets
    the cores divided by N (at least 1), not all of them; num_threads=1 gives one each."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    try:
        with threadpool_limits():  # build_prepare limits the OpenMP/BLAS pools; restored on exit
            with initialize_config_module("soundstorm.configs", version_base="1.3"):
                cfg = compose(config_name="prepare", overrides=["input=x", "output=y", *overrides])
            options, _, _ = builders.build_prepare(cfg)
            want = {"half": max(1, before // 2), "all": before}.get(expected, expected)
            assert torch.get_num_threads() == want and options.workers == int(overrides[0].split("=")[1])
    finally:
        torch.set_num_threads(before)
