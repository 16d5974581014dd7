"""The speech table's ``text_to_semantic`` row: the first stage as the table's ``semantic_from_text``.

The speech table (:mod:`soundstorm.evaluation.speech_table`, core) scores whatever semantic tokens it
is given; it never imports this application. ``soundstorm-eval`` builds the row's source here, from
``evaluation.speech.t2s_checkpoint``, and hands the table a plain callable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from soundstorm.t2s.generate import generate_semantic
from soundstorm.t2s.model import TextToSemantic

SemanticFromText = Callable[[str, torch.Tensor, int], torch.Tensor]


def load_semantic_from_text(checkpoint, soundstorm_model, field: str = "evaluation.speech.t2s_checkpoint"
                            ) -> SemanticFromText | None:
    """``semantic_from_text(text, prompt_semantic_P, seed) -> semantic_S`` of the text-to-semantic model in
    ``checkpoint`` (None → None: no row), on the SoundStorm model's device; its semantic vocabulary must be
    SoundStorm's (the same tokenizer)."""
    if checkpoint is None:
        return None
    if not Path(checkpoint).is_dir():
        raise FileNotFoundError(f"{field}={str(checkpoint)!r}: directory not found")
    t2s = TextToSemantic.from_pretrained(checkpoint, map_location=next(soundstorm_model.parameters()).device).eval()
    if t2s.config.semantic_vocab_size != soundstorm_model.config.semantic_vocab_size:
        raise ValueError(f"{field}={str(checkpoint)!r} predicts {t2s.config.semantic_vocab_size} semantic ids, the "
                         f"SoundStorm checkpoint reads {soundstorm_model.config.semantic_vocab_size}: they were not "
                         "trained on the same tokenizer")

    def semantic_from_text(text: str, prompt_semantic_P: torch.Tensor, seed: int) -> torch.Tensor:
        return generate_semantic(t2s, [text], [prompt_semantic_P], generator=torch.Generator().manual_seed(seed))[0]

    return semantic_from_text
