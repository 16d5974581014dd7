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


def test_every_config_file_ships_in_the_wheel():
    """Each yaml under configs/ matches a package_data pattern of soundstorm.configs (a deeper folder would
    be left out of the wheel, and Hydra would not find it once installed)."""
    import fnmatch

    patterns = [p.strip() for p in _setup_cfg()["options.package_data"]["soundstorm.configs"].split(",")]
    files = [p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")]
    assert len(files) > 20
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, pattern) and f.count("/") == pattern.count("/")
                                             for pattern in patterns)]
    assert not unshipped, f"add package_data patterns for {unshipped}"
