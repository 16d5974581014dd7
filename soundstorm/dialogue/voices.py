"""Choosing the two voices of a dialogue: the pair a speaker verifier finds least alike.

A listener (and the per-turn attribution check of :func:`soundstorm.dialogue.evaluate_dialogue`) can
only tell the turns apart if the two voices differ; picking two corpus voices by how many utterances
they have can pair two variants of one base voice. This picks, among candidate voice recordings, the
two whose verifier embeddings have the lowest cosine similarity.
"""

from __future__ import annotations

import itertools

import torch

from soundstorm.evaluation.speaker import cosine


def least_alike_pair(embeddings: dict[str, torch.Tensor]) -> tuple[str, str, float]:
    """``(a, b, similarity)``: the two names whose embeddings are least similar (ties: first in order)."""
    if len(embeddings) < 2:
        raise ValueError(f"least_alike_pair needs at least two voices, got {sorted(embeddings)}")
    pairs = [(cosine(embeddings[a], embeddings[b]), a, b) for a, b in itertools.combinations(embeddings, 2)]
    similarity, a, b = min(pairs, key=lambda p: p[0])
    return a, b, float(similarity)
