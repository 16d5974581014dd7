"""Data at scale: long recordings cut at silences (≤ max_seconds), and items that read only their
own tensors (bytes read per item measured by the kernel's ``rchar``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from soundstorm.codecs import MelRVQCodec, MelRVQConfig
from soundstorm.data import TokenDataset, TokenManifest
from soundstorm.data.prepare import PrepareOptions, prepare
from soundstorm.data.segment import SegmentConfig, segment_bounds, silence_cut_points
from soundstorm.semantic import MFCCKMeans, MFCCKMeansConfig

RATE = 16_000


def bursts_and_pauses(burst_seconds, pause_seconds=0.5, seed=0) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Noise bursts separated by near-silent pauses; returns the wave and the pauses' sample ranges."""
    rng = np.random.default_rng(seed)
    parts, pauses, at = [], [], 0
    for seconds in burst_seconds:
        burst = 0.3 * rng.standard_normal(int(seconds * RATE)) * np.sin(np.linspace(0, np.pi, int(seconds * RATE)))
        pause = 1e-4 * rng.standard_normal(int(pause_seconds * RATE))
        parts += [burst, pause]
        at += burst.size
        pauses.append((at, at + pause.size))
        at += pause.size
    return torch.from_numpy(np.concatenate(parts).astype(np.float32)), pauses


def test_a_long_recording_becomes_segments_of_at_most_max_seconds_cut_in_pauses():
    wav_N, pauses = bursts_and_pauses([3.0, 2.5, 4.0, 3.5, 2.0, 4.5, 3.0, 2.5, 3.0])
    config = SegmentConfig(max_seconds=8.0, min_seconds=1.0)
    bounds = segment_bounds(wav_N, RATE, config)
    assert len(bounds) >= 4
    assert bounds[0][0] == 0 and bounds[-1][1] == wav_N.shape[0]
    assert all(end == next_begin for (_, end), (next_begin, _) in zip(bounds, bounds[1:]))  # contiguous
    assert all(end - begin <= 8.0 * RATE for begin, end in bounds)
    for _, end in bounds[:-1]:  # every cut lies inside a pause
        assert any(lo <= end < hi for lo, hi in pauses), end
    assert len(silence_cut_points(wav_N, RATE, config)) == len(pauses)


def test_without_pauses_cuts_are_hard_at_max_seconds_and_short_files_stay_whole():
    noise_N = torch.from_numpy(np.random.default_rng(0).standard_normal(25 * RATE).astype(np.float32))
    config = SegmentConfig(max_seconds=10.0)
    assert segment_bounds(noise_N, RATE, config) == [(0, 10 * RATE), (10 * RATE, 20 * RATE), (20 * RATE, 25 * RATE)]
    assert segment_bounds(noise_N[: 9 * RATE], RATE, config) == [(0, 9 * RATE)]
    assert segment_bounds(noise_N, RATE, SegmentConfig(max_seconds=None)) == [(0, 25 * RATE)]


@pytest.mark.parametrize("field, value", [("max_seconds", 1.5), ("threshold_db", 3.0), ("min_silence_seconds", 0)])
def test_segment_config_refuses_bad_values(field, value):
    with pytest.raises(ValueError, match=f"segment.{field}"):
        SegmentConfig(**{field: value})


def _prepare(folder, out, max_shards=None):
    codec = MelRVQCodec(MelRVQConfig(sample_rate=16_000, num_levels=2, codebook_size=16, n_mels=20, n_fft=512,
                                     fit_iters=3, griffin_lim_iters=1))
    tokenizer = MFCCKMeans(MFCCKMeansConfig(vocab_size=8, fit_iters=3))
    options = PrepareOptions(input=str(folder), output=str(out), shard_size=1, max_shards=max_shards,
                             progress=False, segment=SegmentConfig(max_seconds=6.0))
    return prepare(options, codec, tokenizer)


@pytest.fixture(scope="module")
def long_recording_tokens(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long_audio")
    long_N, _ = bursts_and_pauses([2.5, 2.0, 3.0, 2.5, 2.0, 3.0, 2.5], seed=1)
    sf.write(folder / "a_long.wav", long_N.numpy(), RATE)
    sf.write(folder / "b_short.wav", bursts_and_pauses([2.0], seed=2)[0].numpy(), RATE)
    out = tmp_path_factory.mktemp("long_tokens") / "tokens"
    assert _prepare(folder, out, max_shards=1) is None  # interrupted after one shard ...
    manifest = _prepare(folder, out)  # ... and resumed
    return folder, out, manifest


def test_prepare_stores_segments_and_resumes(long_recording_tokens):
    folder, out, manifest = long_recording_tokens
    segments = [u for u in manifest.utterances if u["utt_id"].startswith("a_long_seg")]
    assert len(segments) >= 3 and all(u["duration"] <= 6.0 for u in segments)
    assert [u["utt_id"] for u in manifest.utterances if "seg" not in u["utt_id"]] == ["b_short"]
    assert segments[0]["segment"][0] == 0.0 and all(a["segment"][1] == b["segment"][0]
                                                    for a, b in zip(segments, segments[1:]))
    again = _prepare(folder, out)  # a finished folder: everything resumes, nothing changes
    assert again.utterances == manifest.utterances


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def test_an_item_reads_only_its_own_tensors(long_recording_tokens, monkeypatch):
    from soundstorm.data import reader, shards

    def whole_shard(*args, **kwargs):
        raise AssertionError("an item loaded a whole shard")

    monkeypatch.setattr(reader, "read_shard", whole_shard)  # (memory maps would escape rchar)
    monkeypatch.setattr(shards, "load_state_dict", whole_shard)
    _, out, manifest = long_recording_tokens
    dataset = TokenDataset(out, min_seconds=1.0, max_seconds=3.0)
    own_bytes, read_bytes = 0, 0
    for index, utt in enumerate(dataset.utterances):
        path = out / f"{utt['shard']}.safetensors"
        with safe_open(str(path), framework="pt") as f:  # the library's reading: the reference values
            expected_QT, expected_S = f.get_tensor(f"codes.{utt['index']}"), f.get_tensor(f"semantic.{utt['index']}")
        own = sum(b - a for a, b, _ in utt["tensors"].values())
        assert own == sum(t.numel() * t.element_size() for t in (expected_QT, expected_S))
        own_bytes += own
        before = _rchar()
        item = dataset.utterance(index)
        read_bytes += _rchar() - before
        assert torch.equal(item["codes"], expected_QT.long()) and torch.equal(item["semantic"], expected_S.long())
    assert 0 < read_bytes <= 2 * own_bytes, (read_bytes, own_bytes)


def test_folders_without_byte_ranges_read_the_header_once(long_recording_tokens):
    _, out, manifest = long_recording_tokens
    with_ranges = TokenDataset(out)
    expected = [with_ranges.utterance(i) for i in range(len(with_ranges))]
    data = json.loads((out / "manifest.json").read_text())
    for utt in data["utterances"]:
        del utt["tensors"]
    (out / "manifest.json").write_text(json.dumps(data))
    try:
        without = TokenDataset(out)
        for i, item in enumerate(expected):
            got = without.utterance(i)
            assert torch.equal(got["codes"], item["codes"]) and torch.equal(got["semantic"], item["semantic"])
    finally:
        manifest.save(out)


def test_loader_bench_store_is_valid_safetensors_and_items_read_about_their_size(tmp_path):
    from soundstorm.bench import loader

    manifest = loader.build_store(tmp_path / "store", min_bytes=3_000_000, shard_size=64, seed=1)
    utt = manifest.utterances[70]
    with safe_open(str(tmp_path / "store" / f"{utt['shard']}.safetensors"), framework="pt") as f:
        codes_QT = f.get_tensor(f"codes.{utt['index']}")
    assert tuple(codes_QT.shape) == (8, utt["num_frames"]) and not codes_QT.any()
    result = loader.measure(tmp_path / "store", num_items=50, num_whole_shard=2)
    assert result["num_utterances"] == len(manifest.utterances) > 64
    assert 1.0 <= result["per_item"]["read_over_own_max"] <= 2.0
    assert result["whole_shard_per_item"]["bytes_per_item_mean"] > 20 * result["per_item"]["bytes_read_per_item_mean"]


def test_loader_bench_cli_refuses_bad_arguments(capsys):
    from soundstorm.bench import loader

    with pytest.raises(SystemExit) as exit_info:
        loader.main(["--gigabytes", "0"])
    assert exit_info.value.code == 2 and "--gigabytes" in capsys.readouterr().err
