"""Builders of ``soundstorm-dialogue``: its Hydra config → validated settings, the pipeline, the scorers.

The only dialogue code that reads OmegaConf (as :mod:`soundstorm.builders` is for the rest).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

from omegaconf import DictConfig, OmegaConf

from soundstorm.builders import resolved, strict
from soundstorm.builders import build_sampler
from soundstorm.dialogue.pipeline import DialoguePipeline
from soundstorm.evaluation.asr import build_recognizer
from soundstorm.evaluation.speaker import build_verifier
from soundstorm.sampler import SamplerConfig


@dataclass
class T2SSamplerSection:
    steps: int = 16
    temperature: float = 1.0
    top_k: Optional[int] = None
    choice_noise: float = 4.5


@dataclass
class DialogueEvalSection:
    asr: Optional[str] = "pocketsphinx"
    verifier: Optional[str] = "resemblyzer"
    silence_db: float = 40.0
    reference: bool = False


@dataclass
class DialogueSettings:
    t2s_checkpoint: str
    soundstorm_checkpoint: str
    assets: str
    script: str
    voices: Dict[str, Any]
    prompt_seconds: float = 3.0
    pause_seconds: float = 0.4
    trim_db: Optional[float] = 40.0
    speed: float = 1.0
    use_ema: bool = True
    seed: int = 0
    out_dir: str = "outputs/dialogue"
    overwrite: bool = False  # true: replace an earlier dialogue's outputs in out_dir (refused otherwise)
    t2s_sampler: T2SSamplerSection = dataclasses.field(default_factory=T2SSamplerSection)
    evaluation: DialogueEvalSection = dataclasses.field(default_factory=DialogueEvalSection)
    silence_db: float = 40.0


def build_dialogue_settings(cfg: DictConfig) -> DialogueSettings:
    """Validated settings; a field left unset (``???``) is a ``ValueError`` naming it."""
    for name in ("t2s_checkpoint", "soundstorm_checkpoint", "assets", "script"):
        if OmegaConf.is_missing(cfg, name) or cfg.get(name) in (None, ""):
            raise ValueError(f"{name} is not set; see `soundstorm-dialogue --help` or configs/dialogue.yaml")
    voices = cfg.get("voices")
    if not isinstance(voices, DictConfig) or len(voices) < 1:
        raise ValueError(f"voices must map speaker names to prompt wavs (voices.A=a.wav voices.B=b.wav), got {voices}")
    for name in voices:
        if OmegaConf.is_missing(voices, name) or voices[name] in (None, ""):
            raise ValueError(f"voices.{name} is not set; expected voices.{name}=PROMPT.wav (or remove it with "
                             f"~voices.{name})")
    keys = [f.name for f in dataclasses.fields(DialogueSettings) if f.name != "silence_db"]
    section = {k: resolved(cfg[k]) for k in keys if k in cfg}
    settings = strict(DialogueSettings, section, "dialogue")
    settings.silence_db = settings.evaluation.silence_db
    settings.voices = {str(k): str(v) for k, v in settings.voices.items()}
    return settings


def build_pipeline(cfg, settings: DialogueSettings, device):
    s = settings.t2s_sampler
    t2s_sampler = SamplerConfig(steps=(s.steps,), temperature=s.temperature, top_k=s.top_k, choice_noise=s.choice_noise)
    t2s_sampler.resolve(1)
    pipeline = DialoguePipeline.from_pretrained(settings.t2s_checkpoint, settings.soundstorm_checkpoint,
                                                settings.assets,
                                                use_ema=settings.use_ema, device=device, t2s_sampler=t2s_sampler,
                                                prompt_seconds=settings.prompt_seconds,
                                                pause_seconds=settings.pause_seconds, trim_db=settings.trim_db)
    pipeline.sampler = build_sampler(cfg.sampler, pipeline.soundstorm.config.num_levels)
    return pipeline


def build_scorers(settings: DialogueSettings):
    """``(recognizer or None, verifier or None)`` named by ``evaluation.asr`` / ``evaluation.verifier``
    (``pocketsphinx`` / ``resemblyzer``, ``pkg.module:attr``, or null for none)."""
    scorers = []
    for field, build in (("asr", build_recognizer), ("verifier", build_verifier)):
        name = getattr(settings.evaluation, field)
        scorers.append(None if name in (None, "", "null") else build(name, field=f"evaluation.{field}"))
    return tuple(scorers)
