"""Cutting long recordings into training segments at silences (at most ``max_seconds`` each).

LibriLight files run for minutes to an hour, but training draws windows of at most 30 s (paper
§4) and an item should read only about its window's bytes. ``soundstorm-prepare`` therefore cuts
each recording longer than ``max_seconds`` into segments and stores each as its own utterance:

* frame energies (RMS in dB over ``frame_seconds``) below ``threshold_db`` relative to the
  recording's loudest frame are silent; a run of at least ``min_silence_seconds`` of silent frames
  is a candidate cut, at its middle;
* from the start, each segment ends at the last candidate cut that keeps it within
  ``max_seconds`` (and at least ``min_seconds`` long); with none, it is cut hard at
  ``max_seconds``. So every segment is at most ``max_seconds`` and most end in a pause.

``max_seconds: null`` stores recordings whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch


@dataclass
class SegmentConfig:
    """Silence-based cutting of long recordings (``segment.*`` in ``configs/prepare.yaml``)."""

    max_seconds: Optional[float] = 30.0
    min_seconds: float = 1.0
    min_silence_seconds: float = 0.3
    threshold_db: float = -35.0
    frame_seconds: float = 0.02

    def __post_init__(self):
        for name in ("min_seconds", "min_silence_seconds", "frame_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"segment.{name} must be a positive number of seconds, got {value!r}")
        if self.max_seconds is not None:
            if isinstance(self.max_seconds, bool) or not isinstance(self.max_seconds, (int, float)) \
                    or not self.max_seconds >= 2 * self.min_seconds:
                raise ValueError(f"segment.max_seconds must be null or >= 2 × segment.min_seconds "
                                 f"({2 * self.min_seconds}), got {self.max_seconds!r}")
        if isinstance(self.threshold_db, bool) or not isinstance(self.threshold_db, (int, float)) \
                or not self.threshold_db < 0:
            raise ValueError(f"segment.threshold_db must be < 0 (dB below the loudest frame), got {self.threshold_db!r}")


def silence_cut_points(wav_N: torch.Tensor, sample_rate: int, config: SegmentConfig) -> np.ndarray:
    """Sample indices at the middle of every silence of at least ``min_silence_seconds``."""
    hop = max(1, round(config.frame_seconds * sample_rate))
    num_frames = wav_N.shape[0] // hop
    frames_FH = wav_N[: num_frames * hop].double().view(num_frames, hop)
    energy_db_F = 10.0 * torch.log10(frames_FH.pow(2).mean(dim=1) + 1e-12)
    silent_F = (energy_db_F < energy_db_F.max() + config.threshold_db).numpy().astype(np.int8)
    edges = np.diff(np.concatenate([[0], silent_F, [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # runs [start, end) in frames
    long_enough = (ends - starts) * hop >= config.min_silence_seconds * sample_rate
    return ((starts[long_enough] + ends[long_enough]) * hop) // 2


def segment_bounds(wav_N: torch.Tensor, sample_rate: int, config: SegmentConfig) -> list[tuple[int, int]]:
    """``[(begin, end), ...]`` sample ranges covering ``wav_N``, each at most ``max_seconds`` long."""
    num_samples = wav_N.shape[0]
    if config.max_seconds is None or num_samples <= config.max_seconds * sample_rate:
        return [(0, num_samples)]
    max_len = math.floor(config.max_seconds * sample_rate)
    min_len = math.ceil(config.min_seconds * sample_rate)
    cuts = silence_cut_points(wav_N, sample_rate, config)
    bounds, begin = [], 0
    while num_samples - begin > max_len:
        eligible = cuts[(cuts >= begin + min_len) & (cuts <= begin + max_len)]
        end = int(eligible[-1]) if eligible.size else begin + max_len
        bounds.append((begin, end))
        begin = end
    bounds.append((begin, num_samples))
    return bounds
