"""Durations of text symbols in semantic frames, found without labels: monotonic alignment by hard EM.

Why: a masked generator that must discover on its own which text symbol each target frame speaks
learns slowly (docs/dialogue.md); given the aligned symbol of each frame (FastSpeech's length
regulator used as *conditioning*, not as the output), it only has to learn what each symbol sounds
like in tokens. The durations come from the training corpus itself, for any semantic token type:

* emission model: ``log p(token | symbol)``, a ``[num_symbols, vocab]`` table of smoothed counts;
* alignment: the best monotonic path (Viterbi) through an utterance's symbols, one symbol per frame;
  from symbol j a frame may stay on j, go to j + 1, or skip one symbol (j + 2), so punctuation,
  stress marks and spaces can take zero frames; the path starts on one of the first two symbols
  and ends on one of the last two;
* hard EM: start from durations proportional to position (the uniform alignment), count
  (symbol, token) pairs along the paths, re-estimate the table, re-align; a few rounds converge.

This is IBM-model-1-style alignment with a monotonic constraint, not a phone recogniser: nothing
here assumes phone-like tokens (HuBERT k-means clusters align the same way), only that the tokens
say something about the text. A symbol's duration is its number of frames; they sum to the
utterance's number of semantic frames.

Shape letters: N text symbols, S semantic frames, V semantic vocabulary, Y symbol vocabulary.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

NEG = -1e30
BOUNDARY_ID = 1  # the space character in soundstorm.t2s.text's vocabulary (id = ord(c) - 31)


def uniform_durations(num_symbols: int, num_frames: int) -> np.ndarray:
    """``[N]`` durations proportional to position: symbol j gets frames ``[S·j/N, S·(j+1)/N)``."""
    if num_symbols < 1 or num_frames < 0:
        raise ValueError(f"need num_symbols >= 1 and num_frames >= 0, got {num_symbols}, {num_frames}")
    edges = np.floor(np.arange(num_symbols + 1) * num_frames / num_symbols + 0.5).astype(np.int64)
    return np.diff(edges)


def viterbi_durations(log_emit_NS: np.ndarray) -> np.ndarray:
    """Durations ``[N]`` of the best monotonic path (stay, advance one, or skip one symbol per frame).

    ``log_emit_NS[j, t]`` is the log-probability of frame t's token under symbol j.
    """
    num_symbols, num_frames = log_emit_NS.shape
    if num_frames == 0:
        return np.zeros(num_symbols, dtype=np.int64)
    score_N = np.full(num_symbols, NEG)
    score_N[: min(2, num_symbols)] = log_emit_NS[: min(2, num_symbols), 0]
    back_SN = np.zeros((num_frames, num_symbols), dtype=np.int8)  # 0 stay, 1 from j-1, 2 from j-2
    for t in range(1, num_frames):
        prev1 = np.concatenate([[NEG], score_N[:-1]])
        prev2 = np.concatenate([[NEG, NEG], score_N[:-2]])[:num_symbols]
        stacked_3N = np.stack([score_N, prev1, prev2])
        choice_N = stacked_3N.argmax(axis=0)
        back_SN[t] = choice_N
        score_N = stacked_3N[choice_N, np.arange(num_symbols)] + log_emit_NS[:, t]
    end_choices = range(max(0, num_symbols - 2), num_symbols)
    j = max(end_choices, key=lambda k: score_N[k])
    durations = np.zeros(num_symbols, dtype=np.int64)
    for t in range(num_frames - 1, -1, -1):
        durations[j] += 1
        j -= int(back_SN[t, j])
    return durations


def fit_durations(text_ids: Sequence[Sequence[int]], semantic: Sequence[np.ndarray], symbol_vocab: int,
                  semantic_vocab: int, iterations: int = 4, smoothing: float = 0.5):
    """Align every utterance; returns ``(durations, log_emit_YV)``.

    ``durations[i]`` is ``[N_i]`` int frames per symbol summing to ``len(semantic[i])``: the Viterbi
    alignment under ``log_emit_YV``, the table of the last round (so :func:`align_durations` with it
    gives the same durations; ``iterations=0``: the uniform durations and the table counted from
    them). Deterministic (no randomness).
    """
    if len(text_ids) != len(semantic):
        raise ValueError(f"fit_durations needs one token sequence per text, got {len(text_ids)} texts and "
                         f"{len(semantic)} token sequences")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    texts = [np.asarray(ids, dtype=np.int64) for ids in text_ids]
    tokens = [np.asarray(s, dtype=np.int64).reshape(-1) for s in semantic]
    for i, (ids, toks) in enumerate(zip(texts, tokens)):
        if ids.size == 0:
            raise ValueError(f"text {i} has no symbol")
        if ids.min() < 0 or ids.max() >= symbol_vocab:
            raise ValueError(f"text {i} has symbol ids outside [0, {symbol_vocab})")
        if toks.size and (toks.min() < 0 or toks.max() >= semantic_vocab):
            raise ValueError(f"semantic tokens {i} are outside [0, {semantic_vocab})")
    durations = [uniform_durations(ids.size, toks.size) for ids, toks in zip(texts, tokens)]
    log_emit_YV = _emission_table(texts, tokens, durations, symbol_vocab, semantic_vocab, smoothing)
    for round_index in range(iterations):
        durations = [viterbi_durations(log_emit_YV[ids][:, toks]) for ids, toks in zip(texts, tokens)]
        if round_index < iterations - 1:  # the last alignment keeps the table it was found under
            log_emit_YV = _emission_table(texts, tokens, durations, symbol_vocab, semantic_vocab, smoothing)
    return durations, log_emit_YV


def _emission_table(texts, tokens, durations, symbol_vocab: int, semantic_vocab: int, smoothing: float) -> np.ndarray:
    """``log p(token | symbol)`` from the (symbol, token) pairs of the alignments, add-``smoothing``."""
    counts_YV = np.full((symbol_vocab, semantic_vocab), float(smoothing))
    for ids, toks, dur in zip(texts, tokens, durations):
        np.add.at(counts_YV, (np.repeat(ids, dur), toks), 1.0)
    return np.log(counts_YV / counts_YV.sum(axis=1, keepdims=True))


def align_durations(text_ids: Sequence[Sequence[int]], semantic: Sequence[np.ndarray],
                    log_emit_YV: np.ndarray) -> list[np.ndarray]:
    """Durations of each utterance under a fitted emission table (e.g. held-out data, the training
    set's table)."""
    if len(text_ids) != len(semantic):
        raise ValueError(f"align_durations needs one token sequence per text, got {len(text_ids)} and {len(semantic)}")
    out = []
    for ids, toks in zip(text_ids, semantic):
        ids, toks = np.asarray(ids, dtype=np.int64), np.asarray(toks, dtype=np.int64).reshape(-1)
        out.append(viterbi_durations(log_emit_YV[ids][:, toks]))
    return out


def with_boundaries(text_ids: Sequence[int]) -> list[int]:
    """``text_ids`` framed by the space symbol at both ends: the leading and trailing silence of an
    utterance align there instead of inflating its first and last phonemes."""
    return [BOUNDARY_ID, *[int(i) for i in text_ids], BOUNDARY_ID]


def frame_symbols(text_ids: Sequence[int], durations: Sequence[int]) -> np.ndarray:
    """``[S]`` the symbol id each frame is aligned to (the length regulator)."""
    return np.repeat(np.asarray(text_ids, dtype=np.int64), np.asarray(durations, dtype=np.int64))
