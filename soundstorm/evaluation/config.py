"""What an evaluation does: one dataclass for ``soundstorm-eval`` and for evaluation during training.

The ``evaluation`` section of the Hydra configs is validated straight into :class:`EvaluationConfig`
(:mod:`soundstorm.builders`); the teacher-forced metrics, the generation evaluator and the
pluggable WER / speaker metrics all read it whole. Seconds are converted with the codec's frame rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from soundstorm._checks import check_positive_ints
from soundstorm.evaluation.speech_plan import SpeechEvalConfig


@dataclass
class EvaluationConfig:
    """Teacher-forced mask ratios and batches, generation settings and optional metric plug-ins.

    asr / verifier: a recognizer (→ WER of the unprompted generation) and a speaker verifier (→ cosine
    similarity to the reference), named as everywhere (``pocketsphinx``, ``whisper``, ``resemblyzer`` or
    ``package.module:attr``, built by :func:`~soundstorm.evaluation.asr.build_recognizer` /
    :func:`~soundstorm.evaluation.speaker.build_verifier` with ``*_options``); None leaves them out.
    compare_int8: also generate with an int8 copy of the model (CPU) and report agreement with float32
    per level and the metrics of both (:mod:`soundstorm.evaluation.int8`).
    speech: the speech table (:mod:`soundstorm.evaluation.speech_table`), off unless ``speech.enabled``.
    """

    mask_ratios: List[float] = field(default_factory=lambda: [0.3, 0.6, 1.0])
    max_batches: int = 16
    max_utterances: int = 16
    prompt_seconds: float = 3.0
    window_seconds: float = 10.0
    window_prompt_seconds: float = 1.0
    num_examples: int = 2
    long_seconds: float = 30.0
    long_prompt_seconds: float = 3.0
    unigram_max_utterances: int = 2000
    use_ema: bool = True
    asr: Optional[str] = None
    asr_options: Dict[str, Any] = field(default_factory=dict)
    verifier: Optional[str] = None
    verifier_options: Dict[str, Any] = field(default_factory=dict)
    compare_int8: bool = False
    seed: int = 0
    speech: SpeechEvalConfig = field(default_factory=SpeechEvalConfig)

    def __post_init__(self):
        check_positive_ints("evaluation", self, ("max_utterances", "max_batches"))
        if isinstance(self.num_examples, bool) or not isinstance(self.num_examples, int) or self.num_examples < 0:
            raise ValueError(f"evaluation.num_examples must be an integer >= 0, got {self.num_examples!r}")
        for name in ("prompt_seconds", "window_seconds", "window_prompt_seconds", "long_seconds",
                     "long_prompt_seconds"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"evaluation.{name} must be >= 0 seconds, got {getattr(self, name)!r}")
        if not self.window_seconds > 0:
            raise ValueError(f"evaluation.window_seconds must be > 0, got {self.window_seconds!r}")
