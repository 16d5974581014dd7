"""Where metrics go: one line per log interval on stdout, and wandb (online, offline or disabled).

:class:`RunLogger` is the only place that imports wandb. Only the main process logs; other ranks
get a logger whose methods do nothing. Per-level metrics arrive as lists and are flattened to
``train/loss_level1``, ``train/accuracy_level1``, ... (levels counted from 1, as in the paper).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class LoggerConfig:
    """``kind``: ``wandb`` or ``none`` (stdout only). ``mode``: wandb's online/offline/disabled.
    ``group``: the wandb group the run joins (the configs default it to the sweep folder's name in a
    Hydra multirun, so a sweep's runs sit together; none otherwise)."""

    kind: str = "wandb"
    project: str = "soundstorm"
    mode: str = "offline"
    entity: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    dir: str = "outputs"
    group: str | None = None

    def __post_init__(self):
        if self.kind not in ("wandb", "none"):
            raise ValueError(f"logger.kind must be 'wandb' or 'none', got {self.kind!r}")
        if self.mode not in WANDB_MODES:
            raise ValueError(f"logger.mode must be one of {WANDB_MODES}, got {self.mode!r}")
        if self.group is not None and not (isinstance(self.group, str) and self.group.strip()):
            raise ValueError(f"logger.group must be a non-empty string or null, got {self.group!r}")


def flatten_levels(metrics: dict) -> dict:
    """``{"train/loss_per_level": [a, b]}`` → ``{"train/loss_level1": a, "train/loss_level2": b}``."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (list, tuple)):
            base = key.replace("_per_level", "")
            out.update({f"{base}_level{i + 1}": float(v) for i, v in enumerate(value)})
        else:
            out[key] = value
    return out


def format_line(step: int, metrics: dict) -> str:
    """One stdout line: scalars, and per-level values grouped as ``loss_levels=a/b/c`` (level 1 first)."""
    parts, levels = [f"step {step}"], {}
    for key, value in metrics.items():
        name = key.removeprefix("train/")
        match = re.fullmatch(r"(.*)_level(\d+)", name)
        if match and isinstance(value, float):
            levels.setdefault(match.group(1), []).append(f"{value:.3g}")
        elif isinstance(value, float):
            parts.append(f"{name}={value:.4g}")
        elif isinstance(value, int):
            parts.append(f"{name}={value}")
    parts += [f"{name}_levels={'/'.join(values)}" for name, values in levels.items()]
    return " ".join(parts)


class RunLogger:
    """stdout + optional wandb. ``enabled=False`` (non-main ranks) turns every call into a no-op."""

    def __init__(self, config: LoggerConfig, run_config: dict | None = None, enabled: bool = True,
                 resume_id: str | None = None):
        self.config = config
        self.enabled = enabled
        self.run = None
        if enabled and config.kind == "wandb" and config.mode != "disabled":
            import wandb

            Path(config.dir).mkdir(parents=True, exist_ok=True)
            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(project=config.project, entity=config.entity, name=config.name,
                                  group=config.group, tags=list(config.tags), dir=config.dir, mode=config.mode,
                                  config=run_config,
                                  id=resume_id, resume="allow" if resume_id else None)

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else self.run.id

    def log(self, metrics: dict, step: int, echo: bool = True) -> None:
        if not self.enabled:
            return
        if echo:
            print(format_line(step, metrics), flush=True)
        if self.run is not None:
            self.run.log(metrics, step=step)

    def log_media(self, step: int, audio: dict | None = None, images: dict | None = None, sample_rate: int = 16000):
        """``audio``: name → 1-D float numpy wave; ``images``: name → PNG path."""
        if not self.enabled or self.run is None:
            return
        import wandb

        payload = {name: wandb.Audio(wave, sample_rate=sample_rate) for name, wave in (audio or {}).items()}
        payload.update({name: wandb.Image(str(path)) for name, path in (images or {}).items()})
        if payload:
            self.run.log(payload, step=step)

    def summary(self, values: dict) -> None:
        if self.enabled and self.run is not None:
            self.run.summary.update(values)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
