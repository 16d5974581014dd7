"""TokenDataset windows, collate, length-bucketed and distributed sampling, split, manifest checks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from conftest import single_thread
from soundstorm import SoundStormConfig
from soundstorm.data import LengthBucketSampler, TokenDataset, TokenManifest, collate, split_heldout


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def matching_config(**overrides):
    return SoundStormConfig.tiny(**{**dict(num_levels=4, codebook_size=64, semantic_vocab_size=32,
                                           semantic_upsample=2), **overrides})


@pytest.mark.parametrize("field, value, manifest_value", [
    ("num_levels", 8, 4), ("codebook_size", 1024, 64), ("semantic_vocab_size", 1024, 32), ("semantic_upsample", 3, 2),
])
def test_manifest_mismatch_names_field_and_values(espeak_tokens, field, value, manifest_value):
    manifest = TokenManifest.load(espeak_tokens)
    manifest.check_compatible(matching_config())
    pattern = rf"{field}: manifest has {manifest_value} .*model config has {value}"
    with pytest.raises(ValueError, match=pattern):
        manifest.check_compatible(matching_config(**{field: value}))
    with pytest.raises(ValueError, match=pattern):
        TokenDataset(espeak_tokens, model_config=matching_config(**{field: value}))


def test_manifest_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="soundstorm-prepare"):
        TokenManifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="format"):
        TokenManifest.load(tmp_path)


def test_windows_are_deterministic_and_aligned(espeak_tokens):
    dataset = TokenDataset(espeak_tokens, min_seconds=0.5, max_seconds=1.5, seed=3, model_config=matching_config())
    assert len(dataset) == 20
    first = [dataset[i] for i in range(len(dataset))]
    again = TokenDataset(espeak_tokens, min_seconds=0.5, max_seconds=1.5, seed=3)
    for i, item in enumerate(first):
        num_frames, num_semantic = item["codes"].shape[1], item["semantic"].shape[0]
        assert item["codes"].shape[0] == 4 and num_frames == 2 * num_semantic
        assert 0.5 * 25 - 1 <= num_semantic <= 1.5 * 25 + 1
        assert torch.equal(again[i]["codes"], item["codes"]) and again[i]["utt_id"] == item["utt_id"]
        full = dataset.utterance(i)
        start, length = dataset.window(i)
        assert torch.equal(full["codes"][:, 2 * start: 2 * (start + length)], item["codes"])
        assert torch.equal(full["semantic"][start: start + length], item["semantic"])
        assert full["text"] and full["path"].endswith(".wav")
    dataset.set_epoch(1)
    assert any(not torch.equal(dataset[i]["codes"], first[i]["codes"]) for i in range(len(dataset)))
    whole = TokenDataset(espeak_tokens, min_seconds=60.0, max_seconds=60.0)
    assert torch.equal(whole[0]["codes"], whole.utterance(0)["codes"])
    with pytest.raises(ValueError, match="min_seconds"):
        TokenDataset(espeak_tokens, min_seconds=2.0, max_seconds=1.0)


def test_collate_pads_to_frames_multiple(espeak_tokens):
    dataset = TokenDataset(espeak_tokens, 0.2, 2.0, seed=0, frames_multiple=20)
    items = [dataset[i] for i in range(5)]
    batch = dataset.collate(items)
    lengths = [item["codes"].shape[1] for item in items]
    assert batch["codes"].shape[2] % 20 == 0 and batch["codes"].shape[2] - max(lengths) < 20
    assert batch["semantic"].shape == (5, batch["codes"].shape[2] // 2)
    assert batch["lengths"].tolist() == lengths and batch["utt_ids"] == [item["utt_id"] for item in items]
    for b, item in enumerate(items):
        assert torch.equal(batch["codes"][b, :, : lengths[b]], item["codes"])
        assert int(batch["codes"][b, :, lengths[b]:].abs().sum()) == 0
        assert int(batch["semantic"][b, lengths[b] // 2:].abs().sum()) == 0
    assert collate(items)["codes"].shape[2] == max(lengths)  # default: pad to the longest only
    with pytest.raises(ValueError, match="frames_multiple=5"):
        collate(items, frames_multiple=5)
    with pytest.raises(ValueError, match="frames_multiple=3"):
        TokenDataset(espeak_tokens, frames_multiple=3)


def test_length_bucket_sampler(espeak_tokens):
    dataset = TokenDataset(espeak_tokens, 0.0, 4.0, seed=0)
    sampler = LengthBucketSampler(dataset, batch_size=4, seed=1)
    sampler.set_epoch(2)
    batches = list(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(20)) and len(sampler) == 5
    assert batches == list(sampler)  # deterministic for (seed, epoch)
    lengths = dataset.window_lengths(2)
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    unsorted = sum(max(lengths[i] for i in range(lo, lo + 4)) * 4 for lo in range(0, 20, 4))
    assert padded <= unsorted
    sorted_lengths = sorted(lengths)
    assert padded == sum(max(sorted_lengths[lo: lo + 4]) * 4 for lo in range(0, 20, 4))  # one bucket: optimal
    ranks = [LengthBucketSampler(dataset, batch_size=3, seed=1, num_replicas=2, rank=r) for r in range(2)]
    per_rank = [list(s) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0]) == 4
    covered = {i for batches_r in per_rank for batch in batches_r for i in batch}
    assert covered == set(range(20))
    loader = DataLoader(dataset, batch_sampler=ranks[1], collate_fn=dataset.collate)
    assert sum(batch["codes"].shape[0] for batch in loader) == sum(len(b) for b in per_rank[1])


def test_distributed_sampler_and_split(espeak_tokens):
    manifest = TokenManifest.load(espeak_tokens)
    ids = [u["utt_id"] for u in manifest.utterances]
    train, heldout = split_heldout(ids, 0.2, seed=0)
    assert len(heldout) == 4 and set(train) | set(heldout) == set(ids) and not set(train) & set(heldout)
    assert split_heldout(ids, 0.2, seed=0) == (train, heldout) and split_heldout(ids, 0.2, seed=1) != (train, heldout)
    assert len(split_heldout(ids, 0.01)[1]) == 1
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_heldout(ids, 1.0)
    dataset = TokenDataset(espeak_tokens, 0.0, 2.0, seed=0, utt_ids=train, frames_multiple=10)
    assert [dataset[i]["utt_id"] for i in range(len(dataset))] == train
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, seed=0)
        for batch in DataLoader(dataset, batch_size=4, sampler=sampler, collate_fn=dataset.collate):
            assert batch["codes"].shape[2] % 10 == 0
            seen += batch["utt_ids"]
    assert sorted(seen) == sorted(train)
    with pytest.raises(ValueError, match="not in"):
        TokenDataset(espeak_tokens, utt_ids=["nope"])


def test_manifest_speaker_field_defaults_for_older_token_folders():
    """Token folders written before the ``speaker`` field load with ``speaker == ""``."""
    from soundstorm.data.manifest import TokenManifest

    utt = {"utt_id": "a", "shard": "shard-00000", "index": 0, "num_frames": 4, "num_semantic_frames": 2,
           "duration": 0.08, "text": "hi", "path": "a.wav"}
    manifest = TokenManifest(codec={"name": "melrvq", "sample_rate": 24000, "frame_rate": 50.0, "num_levels": 4,
                                    "codebook_size": 64},
                             semantic={"name": "mfcc_kmeans", "frame_rate": 25.0, "vocab_size": 32},
                             semantic_upsample=2, utterances=[dict(utt)])
    assert manifest.utterances[0]["speaker"] == ""
    del utt["text"]
    with pytest.raises(ValueError, match="lacks fields \\['text'\\]"):
        TokenManifest(codec=manifest.codec, semantic=manifest.semantic, semantic_upsample=2, utterances=[utt])


def test_cross_prompt_splice_opens_with_another_utterance_of_the_same_speaker(espeak_tokens, tmp_path):
    """data.cross_prompt_fraction: a spliced window is the first frames of another utterance of the same
    speaker, then its own utterance from the start, and keeps the plain window's length (the sampler's
    buckets and shapes do not move); fraction 0 leaves every window as it was."""
    # the espeak corpus gives every utterance its own voice: three speakers here, and one alone
    shutil.copytree(espeak_tokens, tmp_path / "tokens")
    manifest = json.loads((tmp_path / "tokens" / "manifest.json").read_text())
    for i, utt in enumerate(manifest["utterances"]):
        utt["speaker"] = "alone" if i == 0 else f"spk{i % 3}"
    (tmp_path / "tokens" / "manifest.json").write_text(json.dumps(manifest))
    root = tmp_path / "tokens"
    kwargs = dict(min_seconds=1.5, max_seconds=3.0, seed=5, model_config=matching_config())
    plain = TokenDataset(root, **kwargs)
    none = TokenDataset(root, cross_prompt_fraction=0.0, **kwargs)
    every = TokenDataset(root, cross_prompt_fraction=1.0, cross_prompt_seconds=(0.4, 0.8), **kwargs)
    speakers = [u["speaker"] for u in plain.utterances]
    assert speakers.count("alone") == 1 and every.splice(speakers.index("alone")) is None
    rate, spliced = plain.manifest.semantic_frame_rate, 0
    for epoch in (0, 1):
        for dataset in (plain, none, every):
            dataset.set_epoch(epoch)
        assert every.window_lengths() == plain.window_lengths()
        for i in range(len(plain)):
            base = plain[i]
            assert torch.equal(none[i]["codes"], base["codes"]) and none.splice(i) is None
            item, splice = every[i], every.splice(i)
            assert item["codes"].shape == base["codes"].shape and item["semantic"].shape == base["semantic"].shape
            if speakers[i] == "alone":
                assert splice is None and torch.equal(item["codes"], base["codes"])
                continue
            if splice is None:  # the window cannot hold the prefix and 1 s of its own utterance
                assert base["semantic"].shape[0] - round(0.8 * rate) < round(rate)
                assert torch.equal(item["codes"], base["codes"])
                continue
            spliced += 1
            other, prefix = splice
            assert other != i and speakers[other] == speakers[i] and item["prefix_utt_id"] == plain.utterances[other]["utt_id"]
            assert round(0.4 * rate) <= prefix <= round(0.8 * rate)
            own, donor, length = plain.utterance(i), plain.utterance(other), base["semantic"].shape[0]
            assert torch.equal(item["semantic"], torch.cat([donor["semantic"][:prefix], own["semantic"][:length - prefix]]))
            assert torch.equal(item["codes"], torch.cat([donor["codes"][:, :2 * prefix], own["codes"][:, :2 * (length - prefix)]], 1))
            again = TokenDataset(root, cross_prompt_fraction=1.0, cross_prompt_seconds=(0.4, 0.8), **kwargs)
            again.set_epoch(epoch)
            assert torch.equal(again[i]["codes"], item["codes"])  # a pure function of (seed, epoch, index)
    assert spliced >= len(plain) - 1  # most of the 2 × 19 windows are long enough
    half = TokenDataset(root, cross_prompt_fraction=0.5, cross_prompt_seconds=(0.4, 0.8), **kwargs)
    draws = [half.splice(i, epoch) is not None for epoch in range(10) for i in range(1, len(half))]
    assert 0.25 < sum(draws) / len(draws) < 0.5 + 0.1  # about half of the windows that can hold a splice
    donors = {every.splice(3, epoch)[0] for epoch in range(60) if every.splice(3, epoch) is not None}
    assert donors == {i for i in range(len(every)) if speakers[i] == speakers[3] and i != 3}  # every other one
    for bad, match in [(dict(cross_prompt_fraction=1.5), "cross_prompt_fraction"),
                       (dict(cross_prompt_fraction=True), "cross_prompt_fraction"),
                       (dict(cross_prompt_seconds=(0.0, 1.0)), "cross_prompt_seconds"),
                       (dict(cross_prompt_seconds=(3.0, 2.0)), "cross_prompt_seconds"),
                       (dict(cross_prompt_seconds="3"), "cross_prompt_seconds"),
                       (dict(cross_prompt_seconds=(2.0, float("inf"))), "cross_prompt_seconds")]:
        with pytest.raises(ValueError, match=match):
            TokenDataset(espeak_tokens, **bad)


def test_cross_prompt_reaches_the_training_windows_only(espeak_tokens):
    """The data section's cross_prompt_* go to the training dataset; held-out windows stay plain."""
    from omegaconf import OmegaConf

    from soundstorm.builders import build_datasets

    section = dict(root=str(espeak_tokens), heldout_fraction=0.2, cross_prompt_fraction=0.25,
                   cross_prompt_seconds=[0.5, 1.0])
    _, train, heldout = build_datasets(OmegaConf.create(section))
    assert (train.cross_prompt_fraction, train.cross_prompt_seconds) == (0.25, (0.5, 1.0))
    assert heldout.cross_prompt_fraction == 0.0
    with pytest.raises(ValueError, match=r"data.cross_prompt_fraction must be a number in \[0, 1\], got -0.1"):
        build_datasets(OmegaConf.create({**section, "cross_prompt_fraction": -0.1}))
