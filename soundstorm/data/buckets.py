"""Static batch shapes: the padded frame counts a run's batches can take (length buckets).

XLA compiles one graph per distinct tensor shape, so on a static-shape backend every batch is
padded up to one of a few frame counts. Two ways to choose them, user settings first:

* ``frame_buckets`` (a sorted list of frame counts): pad to the smallest bucket that fits;
* ``frames_multiple``: pad to a multiple of it;

and, when neither is set on a static-shape backend, :func:`derive_frame_buckets` spreads
``num_buckets`` buckets evenly between the shortest and the longest training window (each a
multiple of the semantic upsample, so semantic frames stay whole). :func:`possible_frame_shapes`
lists the padded lengths a dataset can produce (what the run logs and the compile guard allows).
"""

from __future__ import annotations

import math
from typing import Sequence


def check_frame_buckets(frame_buckets: Sequence[int], upsample: int) -> tuple[int, ...]:
    """``frame_buckets`` as a tuple, checked: positive multiples of ``upsample``, strictly increasing."""
    buckets = tuple(frame_buckets)
    if not buckets or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 or b % upsample for b in buckets) \
            or list(buckets) != sorted(set(buckets)):
        raise ValueError(f"data.frame_buckets={list(buckets)!r} must be a non-empty, strictly increasing list of "
                         f"positive multiples of the semantic upsample {upsample}")
    return buckets


def padded_length(length: int, frames_multiple: int, frame_buckets: Sequence[int] | None = None) -> int:
    """The frame count a batch whose longest item has ``length`` frames is padded to."""
    if frame_buckets:
        for bucket in frame_buckets:
            if length <= bucket:
                return int(bucket)
        raise ValueError(f"an item of {length} frames is longer than the largest of data.frame_buckets="
                         f"{list(frame_buckets)}; add a bucket >= {length} or lower data.max_seconds")
    return math.ceil(length / frames_multiple) * frames_multiple


def derive_frame_buckets(min_frames: int, max_frames: int, num_buckets: int, upsample: int) -> tuple[int, ...]:
    """``num_buckets`` frame counts evenly spread over ``(min_frames, max_frames]``, the last one
    ``max_frames``, each rounded up to a multiple of ``upsample`` (duplicates merged)."""
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, int) or num_buckets < 1:
        raise ValueError(f"data.num_buckets must be a positive integer, got {num_buckets!r}")
    if not 0 < min_frames <= max_frames:
        raise ValueError(f"need 0 < min_frames <= max_frames, got {min_frames} and {max_frames}")
    edges = [min_frames + (max_frames - min_frames) * k / num_buckets for k in range(1, num_buckets + 1)]
    return tuple(sorted({math.ceil(edge / upsample) * upsample for edge in edges}))


def window_frame_range(num_semantic_frames: Sequence[int], min_seconds: float, max_seconds: float,
                       semantic_rate: float, upsample: int) -> tuple[int, int, int]:
    """``(shortest any window, shortest full window, longest window)`` in codec frames for windows of
    ``min_seconds..max_seconds`` cut from utterances of ``num_semantic_frames`` (as the dataset cuts them)."""
    if not num_semantic_frames:
        raise ValueError("no utterances: cannot derive frame buckets from an empty dataset")
    shortest = max(1, round(min_seconds * semantic_rate))
    longest = max(1, round(max_seconds * semantic_rate))
    any_min = min(min(n, shortest) for n in num_semantic_frames)
    full_min = min(max(num_semantic_frames), shortest)
    full_max = min(max(num_semantic_frames), longest)
    return any_min * upsample, full_min * upsample, full_max * upsample


def possible_frame_shapes(min_frames: int, max_frames: int, frames_multiple: int,
                          frame_buckets: Sequence[int] | None = None) -> list[int]:
    """Every padded frame count a batch can have when items have ``min_frames..max_frames`` frames."""
    if frame_buckets:
        low, high = (padded_length(n, frames_multiple, frame_buckets) for n in (min_frames, max_frames))
        return [b for b in frame_buckets if low <= b <= high]
    low = padded_length(min_frames, frames_multiple)
    return list(range(low, padded_length(max_frames, frames_multiple) + 1, frames_multiple))
