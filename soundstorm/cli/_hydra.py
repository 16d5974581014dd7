"""The Hydra entry point every soundstorm CLI shares: user errors in the command line exit 2.

Two kinds of user error never reach a CLI's own code, so each CLI would otherwise handle them its
own way (or not at all):

* a command line Hydra cannot compose (an unknown config group option ``model=huge``, a key that no
  file defines given without ``+``, a malformed override ``'seed=['``): Hydra prints its message and
  exits 1, which the README reserves for operating-system errors; here it exits 2, as every other
  user error, with Hydra's message kept and a ``prog: error:`` line after it;
* a key nothing reads (``+foo=1``, a misspelt ``+trainer.max_step=5``, a typo in a user's
  experiment file): the composed config is checked against the CLI's closed schema
  (:mod:`soundstorm.config_keys`: the keys of the CLI's own YAML file and the dataclasses its
  sections are validated into) before the CLI's work starts; an unknown key is refused with exit 2,
  naming it and the nearest known key.

``-m`` (multirun), ``--help``, ``--cfg`` and the other Hydra flags behave as with ``hydra.main``: the
wrapper only adds the check and the exit status. A composition error is told from a failure inside
the task by whether the task had started (an error inside it keeps Hydra's exit status 1).
"""

from __future__ import annotations

import functools
import importlib.resources
import sys
from typing import Any, Callable

import hydra
import yaml
from omegaconf import DictConfig, OmegaConf

from soundstorm import builders
from soundstorm.backends import OPTIONS as BACKEND_OPTIONS
from soundstorm.config_keys import LEAF, OPEN, dataclass_schema, unknown_key_message, unknown_keys, union, yaml_schema
from soundstorm.evaluation.config import EvaluationConfig
from soundstorm.model import SoundStormConfig
from soundstorm.sampler import SamplerConfig
from soundstorm.train.logging import LoggerConfig
from soundstorm.train.loop import TrainerConfig
from soundstorm.train.optim import OptimConfig

CONFIG_PATH = "pkg://soundstorm.configs"


def _by_name(registry: dict) -> Callable[[Any], Any]:
    """The schema of a codec / semantic section: the fields of the component its ``name`` selects."""

    def schema(section):
        name = section.get("name") if isinstance(section, dict) else None
        if not isinstance(name, str) or name not in registry:
            return OPEN  # the builder refuses an unknown name, naming the choices
        return dataclass_schema(registry[name][0], **{key: LEAF for key in builders.SELECTORS})

    return schema


def section_schemas() -> dict:
    """The schema of each config group shared by the CLIs: the dataclass its builder validates it into."""
    named = {"name": LEAF}
    return {
        "model": dataclass_schema(SoundStormConfig, **named),
        "sampler": dataclass_schema(SamplerConfig, **named),
        "optim": dataclass_schema(OptimConfig, **named),
        "trainer": dataclass_schema(TrainerConfig),
        "logger": dataclass_schema(LoggerConfig),
        "data": dataclass_schema(builders.DataConfig),
        "evaluation": dataclass_schema(EvaluationConfig),
        "backend": {"name": LEAF, "options": {key: LEAF for table in BACKEND_OPTIONS.values() for key in table}},
        "codec": _by_name(builders.CODECS),
        "semantic": _by_name(builders.TOKENIZERS),
    }


def primary_yaml(config_name: str) -> dict:
    """The CLI's own config file (``configs/<config_name>.yaml``) as plain data, less ``defaults``/``hydra``."""
    text = importlib.resources.files("soundstorm.configs").joinpath(f"{config_name}.yaml").read_text()
    data = yaml.safe_load(text) or {}
    return {k: v for k, v in data.items() if k not in ("defaults", "hydra")}


def cli_schema(config_name: str, sections: tuple[str, ...] = (), **extra) -> dict:
    """A CLI's closed schema: the keys of its own YAML file, the shared ``sections`` it composes
    (:func:`section_schemas`) and ``extra`` ``{key: schema}`` (its own dataclasses)."""
    shared = section_schemas()
    return union(yaml_schema(primary_yaml(config_name)), {name: shared[name] for name in sections}, extra)


def check_config(cfg: DictConfig, schema: dict, prog: str) -> None:
    """Refuse (``ValueError``) a composed config holding a key ``schema`` does not know."""
    found = unknown_keys(OmegaConf.to_container(cfg, resolve=False), schema)
    if found:
        raise ValueError(unknown_key_message(found, prog))


def hydra_main(prog: str, config_name: str, schema: Callable[[], dict]):
    """``@hydra_main("soundstorm-generate", "generate", lambda: cli_schema(...))`` on ``task(cfg)``: the
    decorated name is the console script's ``main()`` (see the module docstring). ``schema`` is called
    when the config has been composed (so importing a CLI module stays cheap)."""

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        started = []

        @functools.wraps(task)  # Hydra names the job after the task's module
        def checked(cfg: DictConfig):
            started.append(True)
            try:
                check_config(cfg, schema(), prog)
            except ValueError as err:
                print(f"{prog}: error: {err}", file=sys.stderr)
                sys.exit(2)
            return task(cfg)

        app = hydra.main(config_path=CONFIG_PATH, config_name=config_name, version_base="1.3")(checked)

        def main() -> Any:
            started.clear()
            try:
                return app()
            except SystemExit as stop:
                if stop.code == 1 and not started:  # Hydra could not compose the config: a user error
                    print(f"{prog}: error: the command line could not be composed into a config (Hydra's message "
                          f"above); see `{prog} --help`", file=sys.stderr)
                    sys.exit(2)
                raise

        main.__doc__ = task.__doc__
        main.task, main.schema = checked, schema
        return main

    return decorate
