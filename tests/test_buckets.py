"""Static batch shapes: frame buckets derived from the windows, padding to them, the shape count."""

from __future__ import annotations

import pytest
import torch

from soundstorm.data import collate
from soundstorm.data.buckets import (derive_frame_buckets, padded_length, possible_frame_shapes,
                                     window_frame_range)


def test_derived_buckets_span_the_windows_in_multiples_of_the_upsample():
    assert derive_frame_buckets(100, 200, 4, 2) == (126, 150, 176, 200)
    assert derive_frame_buckets(3, 2250, 3, 3) == (753, 1503, 2250)
    assert derive_frame_buckets(200, 200, 4, 2) == (200,)  # fixed-length windows: one shape
    with pytest.raises(ValueError, match="num_buckets"):
        derive_frame_buckets(100, 200, 0, 2)


def test_padding_goes_to_the_smallest_bucket_that_fits():
    assert [padded_length(n, 2, (126, 150, 200)) for n in (2, 126, 128, 200)] == [126, 126, 150, 200]
    assert padded_length(101, 50) == 150
    with pytest.raises(ValueError, match="frame_buckets"):
        padded_length(202, 2, (126, 200))


def test_possible_shapes_cover_every_window_length():
    buckets = (126, 150, 176, 200)
    shapes = possible_frame_shapes(4, 200, 2, buckets)
    assert shapes == list(buckets)
    assert {padded_length(n, 2, buckets) for n in range(4, 201, 2)} == set(shapes)
    assert possible_frame_shapes(130, 160, 2, buckets) == [150, 176]
    assert possible_frame_shapes(101, 300, 100) == [200, 300]
    assert {padded_length(n, 100) for n in range(101, 301)} == {200, 300}


def test_window_range_follows_the_dataset_rule():
    # windows of 2..4 s at 25 semantic frames/s (upsample 2); one utterance shorter than the shortest window
    assert window_frame_range([30, 200, 120], 2.0, 4.0, 25.0, 2) == (60, 100, 200)
    assert window_frame_range([80], 2.0, 4.0, 25.0, 2) == (100, 100, 160)


def test_collate_pads_to_a_bucket():
    items = [{"codes": torch.ones(2, 10, dtype=torch.long), "semantic": torch.ones(5, dtype=torch.long),
              "utt_id": "a"}]
    batch = collate(items, frame_buckets=[8, 12, 20])
    assert batch["codes"].shape == (1, 2, 12) and batch["semantic"].shape == (1, 6)
    assert batch["lengths"].tolist() == [10]
    with pytest.raises(ValueError, match="strictly increasing"):
        collate(items, frame_buckets=[12, 8])
