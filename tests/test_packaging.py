"""Packaging: every subpackage is listed in setup.cfg, console scripts resolve, configs ship."""

import configparser
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def test_every_subpackage_is_listed_in_setup_cfg():
    listed = set(_setup_cfg()["options"]["packages"].split())
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "soundstorm").rglob("__init__.py")
               if "configs" not in p.parent.relative_to(ROOT).parts}
    on_disk.add("soundstorm.configs")
    assert on_disk <= listed, f"add to setup.cfg [options] packages: {sorted(on_disk - listed)}"


def test_console_scripts_point_at_main_functions():
    scripts = [line.strip() for line in _setup_cfg()["options.entry_points"]["console_scripts"].splitlines()
               if line.strip()]
    assert scripts, "no console scripts registered"
    for line in scripts:
        name, target = (part.strip() for part in line.split("="))
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name


def test_configs_are_importable_as_a_package():
    import soundstorm.configs

    assert Path(soundstorm.configs.__file__).parent.name == "configs"
