"""Every primary config, group option and experiment composes, and every section passes the
builders' strict schemas (so a misspelt key in a yaml fails here, not in a run). The wheel ships
every yaml."""

from __future__ import annotations

import configparser
import fnmatch
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from soundstorm import builders

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def compose_cfg(name: str, overrides: list[str]):
    with initialize_config_module("soundstorm.configs", version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=True)


def check_sections(cfg) -> None:
    for key, schema in (("model", builders.ModelSection), ("sampler", builders.SamplerSection),
                        ("optim", builders.OptimSection), ("backend", builders.BackendSection),
                        ("data", builders.DataSection), ("evaluation", builders.EvaluationSection)):
        if key in cfg:
            builders.strict(schema, builders.resolved(cfg[key]), key)
    if "trainer" in cfg:
        builders.build_trainer_config(cfg.trainer)
    if "logger" in cfg:
        from soundstorm.train.logging import LoggerConfig

        builders.strict(LoggerConfig, builders.resolved(cfg.logger), "logger")
    for key, sections in (("codec", builders.CODEC_SECTIONS), ("semantic", builders.SEMANTIC_SECTIONS)):
        if key in cfg:
            section = builders.resolved(cfg[key])
            builders.strict(sections[section["name"]], section, key)


CASES = [("train", [f"{group}={name}"]) for group in ("model", "codec", "semantic", "optim", "sampler", "trainer",
                                                      "logger", "backend", "data") for name in options(group)]
CASES += [("train", [f"experiment={name}"]) for name in options("experiment")]
CASES += [(primary, [f"{group}={name}"]) for primary in ("eval", "generate")
          for group in ("codec", "semantic", "sampler", "backend") for name in options(group)]


@pytest.mark.parametrize("primary,overrides", CASES, ids=[f"{p}:{','.join(o)}" for p, o in CASES])
def test_composes_and_sections_validate(primary, overrides):
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
