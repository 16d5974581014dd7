"""Durations without labels (soundstorm/t2s/align.py) and the aligned batches, data and generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from soundstorm.t2s.align import (BOUNDARY_ID, align_durations, fit_durations, frame_symbols, uniform_durations,
                                  viterbi_durations, with_boundaries)
from soundstorm.t2s.batch import TARGET, TEXT, pack
from soundstorm.t2s.generate import round_durations


def test_uniform_durations_split_frames_by_position():
    assert uniform_durations(4, 10).tolist() == [3, 2, 3, 2]  # edges round(2.5 j)
    assert uniform_durations(3, 0).tolist() == [0, 0, 0]
    assert all(uniform_durations(n, s).sum() == s for n in (1, 7, 50) for s in (0, 1, 13, 400))
    with pytest.raises(ValueError, match="num_symbols"):
        uniform_durations(0, 5)


def _planted(durations, num_tokens: int = 8, sure: float = 0.9):
    """Emissions where symbol j says token j with probability ``sure``, and the tokens of ``durations``."""
    symbols = np.arange(len(durations)) % num_tokens
    log_emit_YV = np.full((num_tokens, num_tokens), np.log((1 - sure) / (num_tokens - 1)))
    np.fill_diagonal(log_emit_YV, np.log(sure))
    return symbols, log_emit_YV, frame_symbols(symbols, durations)


def test_viterbi_recovers_a_planted_alignment_with_skipped_symbols():
    durations = np.array([3, 1, 0, 4, 2, 0, 5, 1])  # zero-duration symbols are skipped, never two in a row
    symbols, log_emit_YV, tokens = _planted(durations)
    found = viterbi_durations(log_emit_YV[symbols][:, tokens])
    assert found.tolist() == durations.tolist()
    assert align_durations([symbols], [tokens], log_emit_YV)[0].tolist() == durations.tolist()


def test_viterbi_durations_always_sum_to_the_frames():
    rng = np.random.default_rng(0)
    for num_symbols, num_frames in ((1, 5), (2, 1), (6, 3), (30, 90), (5, 0)):
        found = viterbi_durations(rng.normal(size=(num_symbols, num_frames)))
        assert found.shape == (num_symbols,) and found.sum() == num_frames and (found >= 0).all()


def test_hard_em_learns_the_alignment_from_unlabelled_utterances():
    """Symbols and tokens never seen paired: EM must find both the emission table and the durations."""
    rng = np.random.default_rng(0)
    num_symbols, num_tokens = 12, 12
    true_token = rng.permutation(num_tokens)  # symbol y mostly emits token true_token[y]
    texts, semantic, truth = [], [], []
    for _ in range(150):
        text = rng.integers(0, num_symbols, size=rng.integers(5, 15))
        durations = rng.integers(1, 8, size=text.size)
        frames = frame_symbols(text, durations)
        noisy = np.where(rng.random(frames.size) < 0.15, rng.integers(0, num_tokens, frames.size), true_token[frames])
        texts.append(text), semantic.append(noisy), truth.append(frames)

    def frame_accuracy(found):
        return np.mean(np.concatenate([frame_symbols(t, d) == f for t, d, f in zip(texts, found, truth)]))

    uniform, _ = fit_durations(texts, semantic, num_symbols, num_tokens, iterations=0)
    learnt, log_emit_YV = fit_durations(texts, semantic, num_symbols, num_tokens, iterations=4)
    assert all(d.sum() == s.size for d, s in zip(learnt, semantic))
    assert frame_accuracy(uniform) < 0.6
    assert frame_accuracy(learnt) > 0.9, frame_accuracy(learnt)
    assert (log_emit_YV.argmax(axis=1) == true_token).all()


def test_fit_durations_names_bad_inputs():
    with pytest.raises(ValueError, match="one token sequence per text"):
        fit_durations([[1, 2]], [], 4, 4)
    with pytest.raises(ValueError, match="text 0 has symbol ids outside"):
        fit_durations([[9]], [np.array([0])], 4, 4)
    with pytest.raises(ValueError, match="semantic tokens 0 are outside"):
        fit_durations([[1]], [np.array([7])], 4, 4)
    with pytest.raises(ValueError, match="iterations"):
        fit_durations([[1]], [np.array([0])], 4, 4, iterations=-1)


def test_pack_tells_each_target_position_its_symbol():
    ids = with_boundaries([5, 6, 7])
    assert ids == [BOUNDARY_ID, 5, 6, 7, BOUNDARY_ID]
    batch = pack([ids, [8]], [torch.tensor([1, 2]), None], [torch.arange(6), 2], 16, [[1, 2, 0, 2, 1], None])
    assert batch["aligned"][0].tolist() == [0] * 7 + [BOUNDARY_ID, 5, 5, 7, 7, BOUNDARY_ID]
    assert batch["durations"][0, :5].tolist() == [1, 2, 0, 2, 1]
    assert batch["has_durations"].tolist() == [True, False]
    assert (batch["aligned"][1] == 0).all() and (batch["durations"][1] == 0).all()
    assert ((batch["aligned"][0] > 0) <= (batch["segment"][0] == TARGET)).all()
    assert ((batch["durations"][0] > 0) <= (batch["segment"][0] == TEXT)).all()
    with pytest.raises(ValueError, match=r"durations\[0\] must hold 5 non-negative frame counts summing to the 6"):
        pack([ids], [None], [torch.arange(6)], 16, [[1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="2 duration lists for 1 texts"):
        pack([ids], [None], [torch.arange(6)], 16, [None, None])


def test_round_durations_keeps_the_total_and_the_proportions():
    assert round_durations(torch.tensor([1.0, 1.0, 2.0]), 8) == [2, 2, 4]
    assert round_durations(torch.tensor([1.0, 3.0]), 8) == [2, 6]
    assert round_durations(torch.zeros(3), 3) == [1, 1, 1]  # nothing predicted: spread evenly
    for total in (1, 7, 100):
        out = round_durations(torch.rand(9), total)
        assert sum(out) == total and min(out) >= 0


def test_aligned_dataset_frames_texts_and_gives_durations(espeak_tokens):
    from soundstorm.t2s.data import T2SCollate, T2SDataset

    train = T2SDataset(espeak_tokens, frontend="chars", aligned=True, prompt_probability=0.0)
    plain = T2SDataset(espeak_tokens, frontend="chars", aligned=False, prompt_probability=0.0)
    assert train.emission is not None and plain.durations is None
    for j in range(len(train)):
        item = train[j]
        assert item["text_ids"] == with_boundaries(plain[j]["text_ids"])
        assert int(item["durations"].sum()) == item["semantic"].numel() and len(item["durations"]) == len(item["text_ids"])
    again = T2SDataset(espeak_tokens, frontend="chars", aligned=True, prompt_probability=0.0, emission=train.emission)
    assert all((a == b).all() for a, b in zip(again.durations, train.durations))  # same table, same alignment
    batch = T2SCollate(0, 0, 16)([(j, train[j]) for j in range(2)])
    assert batch["has_durations"].all() and (batch["aligned"][batch["segment"] == TARGET] > 0).all()
