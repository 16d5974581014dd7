"""The text-to-semantic stage: text (phonemes) + a voice prompt → semantic tokens for SoundStorm."""

from soundstorm.t2s.generate import generate_semantic, predict_num_frames
from soundstorm.t2s.model import T2SConfig, TextToSemantic

__all__ = ["T2SConfig", "TextToSemantic", "generate_semantic", "predict_num_frames"]
