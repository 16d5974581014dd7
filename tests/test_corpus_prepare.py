"""soundstorm-synth-corpus + soundstorm-prepare end to end, resuming, broken inputs, settings checks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from _cli import run_cli, start_python
from conftest import PREPARE_SMALL, requires_encodec, single_thread
from soundstorm.codecs import MelRVQCodec, MelRVQConfig, load_codec
from soundstorm.synthesis.corpus import synth_corpus
from soundstorm.data import TokenManifest
from soundstorm.data.prepare import PrepareOptions, prepare
from soundstorm.data.shards import read_shard
from soundstorm.semantic import MFCCKMeans, MFCCKMeansConfig


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def small_components():
    return (MelRVQCodec(MelRVQConfig(num_levels=4, codebook_size=64)), MFCCKMeans(MFCCKMeansConfig(vocab_size=32)))


def test_synth_corpus_voices_and_manifest(espeak_corpus):
    entries = [json.loads(line) for line in espeak_corpus.read_text().splitlines()]
    assert len(entries) == 20
    assert {"path", "text", "voice", "duration"} <= set(entries[0])
    assert len({e["voice"] for e in entries}) >= 10
    assert {e["voice"].split("+")[1][0] for e in entries} == {"m", "f"}
    assert len({e["speed"] for e in entries}) > 5 and len({e["pitch"] for e in entries}) > 5
    assert any(e["text"].startswith('"') for e in entries)  # dialogue-like turns are in the mix
    for entry in entries:
        info = sf.info(str(espeak_corpus.parent / entry["path"]))
        assert abs(info.frames / info.samplerate - entry["duration"]) < 1e-3 and entry["duration"] > 0.5


def test_synth_corpus_without_espeak(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="apt-get install espeak-ng"):
        synth_corpus(tmp_path, 2)
    result = run_cli("soundstorm.cli.synth_corpus", "--out", str(tmp_path), env={"PATH": str(tmp_path)})
    assert result.returncode == 2 and "apt-get install espeak-ng" in result.stderr


def test_prepare_cli_end_to_end(espeak_corpus, espeak_tokens):
    manifest = TokenManifest.load(espeak_tokens)
    assert manifest.codec == {"name": "melrvq", "sample_rate": 24_000, "frame_rate": 50.0, "num_levels": 4,
                              "codebook_size": 64, "bandwidth_kbps": 1.2, "n_mels": 80, "n_fft": 1024,
                              "decode_smoothing": [1.0, 3.0, 1.0]}
    assert manifest.semantic["name"] == "mfcc_kmeans" and manifest.semantic["frame_rate"] == 25.0
    assert manifest.semantic["vocab_size"] == 32 and manifest.semantic_upsample == 2
    assert len(manifest.utterances) == 20 and manifest.skipped == []
    texts = {json.loads(line)["text"] for line in espeak_corpus.read_text().splitlines()}
    assert {u["text"] for u in manifest.utterances} == texts
    voices = {json.loads(line)["text"]: json.loads(line)["voice"] for line in espeak_corpus.read_text().splitlines()}
    assert all(u["speaker"] == voices[u["text"]] for u in manifest.utterances)  # no 'speaker': 'voice' stands in
    level1 = []
    for utt in manifest.utterances:
        shard = read_shard(espeak_tokens / f"{utt['shard']}.safetensors")
        codes_QT, semantic_S = shard[f"codes.{utt['index']}"], shard[f"semantic.{utt['index']}"]
        assert codes_QT.shape == (4, utt["num_frames"]) and semantic_S.shape == (utt["num_semantic_frames"],)
        assert utt["num_frames"] == 2 * utt["num_semantic_frames"]
        assert abs(utt["num_frames"] / 50.0 - utt["duration"]) < 0.05
        level1.append(codes_QT[0])
    assert torch.cat(level1).unique().numel() >= 48  # level 1 uses most of its 64 codes
    codec = load_codec(espeak_tokens / "codec")  # the fitted codec was saved with the tokens and decodes them
    assert codec.decode(level1[0][None, None]).shape[1] > 0


def test_token_folder_and_corpus_move_together(espeak_corpus, espeak_tokens, tmp_path):
    """Source paths are stored relative to the token folder, so a copy of both trees finds its own audio;
    a manifest with absolute paths (written before) loads unchanged."""
    raw = json.loads((espeak_tokens / "manifest.json").read_text())
    assert all(not Path(u["path"]).is_absolute() for u in raw["utterances"])
    corpus_dir, tokens_parent = espeak_corpus.parent, espeak_tokens.parent
    shutil.copytree(corpus_dir, tmp_path / corpus_dir.name)
    shutil.copytree(tokens_parent, tmp_path / tokens_parent.name)
    moved = tmp_path / tokens_parent.name / espeak_tokens.name
    for utt in TokenManifest.load(moved).utterances:
        path = Path(utt["path"])
        assert path.is_file() and path.resolve().is_relative_to((tmp_path / corpus_dir.name).resolve()), path
    raw["utterances"][0]["path"] = str((corpus_dir / "somewhere.wav").resolve())
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(raw))
    assert TokenManifest.load(tmp_path / "old").utterances[0]["path"] == raw["utterances"][0]["path"]


def test_prepare_resumes_after_interruption(espeak_corpus, tmp_path):
    out = tmp_path / "tokens"
    options = dict(input=str(espeak_corpus), output=str(out), shard_size=6, batch_size=4, progress=False)
    assert prepare(PrepareOptions(**options, max_shards=2), *small_components()) is None
    assert sorted(p.name for p in out.glob("shard-*.json")) == ["shard-00000.json", "shard-00001.json"]
    assert not (out / "manifest.json").exists()
    # A crash while writing shard 2: a tensor file without its sidecar, plus a stray temporary file.
    (out / "shard-00002.safetensors").write_bytes(b"partial")
    (out / ".shard-00002.safetensors.abc.tmp").write_bytes(b"junk")
    first = (out / "shard-00000.safetensors").stat().st_mtime_ns
    manifest = prepare(PrepareOptions(**options), *small_components())
    assert (out / "shard-00000.safetensors").stat().st_mtime_ns == first  # finished shards were skipped
    assert len(manifest.utterances) == 20
    fresh = prepare(PrepareOptions(**{**options, "output": str(tmp_path / "fresh")}), *small_components())
    assert [u | {"path": ""} for u in manifest.utterances] == [u | {"path": ""} for u in fresh.utterances]
    for name in ("shard-00000", "shard-00002", "shard-00003"):
        resumed, clean = read_shard(out / f"{name}.safetensors"), read_shard(tmp_path / "fresh" / f"{name}.safetensors")
        assert resumed.keys() == clean.keys() and all(torch.equal(resumed[k], clean[k]) for k in resumed)
    with pytest.raises(ValueError, match="fresh output folder"):  # other settings in the same folder
        prepare(PrepareOptions(**{**options, "shard_format": "npz"}), *small_components())


def _assert_same_tokens(a: Path, b: Path) -> None:
    """Two token folders hold the same bytes: shards, codec and tokenizer files, and every sidecar and the
    manifest up to the audio paths (stored relative to each folder)."""
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    for name in names:
        if name.endswith(".json") and "/" not in name:
            left, right = json.loads((a / name).read_text()), json.loads((b / name).read_text())
            for record in (left, right):
                for utt in record.get("utterances", []):
                    utt["path"] = ""
                record.pop("inputs", None), record.pop("audio_folder", None)
            assert left == right, name
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_prepare_workers_write_the_same_files(espeak_corpus, espeak_tokens, tmp_path):
    """workers=2 from the CLI (the tokenizer fitted beside the codec, three shards on two spawned processes)
    writes what one process wrote (the session's token folder: the same settings, workers=1)."""
    out = tmp_path / "tokens"
    result = run_cli("soundstorm.cli.prepare", f"input={espeak_corpus}", f"output={out}", *PREPARE_SMALL,
                     "workers=2")
    assert result.returncode == 0, result.stderr + result.stdout
    assert len(list(out.glob("shard-*.safetensors"))) == 3
    _assert_same_tokens(espeak_tokens, out)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_prepare_refuses_bad_workers(tmp_path, workers):
    with pytest.raises(ValueError, match=f"workers must be a positive integer, got {workers!r}"):
        PrepareOptions(input=str(tmp_path), output=str(tmp_path / "tokens"), workers=workers)


def test_prepare_workers_stop_at_a_failed_shard_and_resume(espeak_corpus, tmp_path):
    """A shard that cannot be written stops a two-worker run with its own error, writes no manifest and
    leaves every finished shard whole; max_shards stops after that many; the rerun continues and equals a
    one-process run."""
    out = tmp_path / "tokens"
    options = dict(input=str(espeak_corpus), output=str(out), shard_size=4, batch_size=4, progress=False)
    assert prepare(PrepareOptions(**options, workers=2, max_shards=2), *small_components()) is None
    assert sorted(p.name for p in out.glob("shard-*.json")) == ["shard-00000.json", "shard-00001.json"]
    (out / "shard-00003.safetensors").mkdir()  # the place of shard 3's tensors is taken: its write fails
    with pytest.raises(OSError):
        prepare(PrepareOptions(**options, workers=2), *small_components())
    assert not (out / "manifest.json").exists() and not (out / "shard-00003.json").exists()
    for sidecar in out.glob("shard-*.json"):
        stored = read_shard(out / sidecar.name.replace(".json", ".safetensors"))
        assert len(stored) == 2 * len(json.loads(sidecar.read_text())["utterances"])
    (out / "shard-00003.safetensors").rmdir()
    manifest = prepare(PrepareOptions(**options, workers=2), *small_components())
    assert len(manifest.utterances) == 20
    prepare(PrepareOptions(**{**options, "output": str(tmp_path / "one")}), *small_components())
    _assert_same_tokens(tmp_path / "one", out)


def test_prepare_skips_broken_files(espeak_corpus, tmp_path, capsys):
    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    sources = sorted((espeak_corpus.parent / "wavs").glob("*.wav"))[:3]
    for src in sources:
        shutil.copy(src, folder / "sub" / src.name)
    data, rate = sf.read(str(sources[0]), dtype="float32")
    sf.write(str(folder / "good.flac"), data, rate)
    sf.write(str(folder / "good.ogg"), data, rate)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "garbage.wav").write_bytes(b"this is not audio" * 10)
    sf.write(str(folder / "zero_samples.wav"), np.zeros(0, dtype=np.float32), rate)
    sf.write(str(folder / "nan.wav"), np.full(rate, np.nan, dtype=np.float32), rate, subtype="FLOAT")
    sf.write(str(folder / "silent.wav"), np.zeros(rate, dtype=np.float32), rate)
    sf.write(str(folder / "short.wav"), data[len(data) // 2: len(data) // 2 + rate // 100], rate)
    manifest = prepare(PrepareOptions(input=str(folder), output=str(tmp_path / "tokens"), shard_size=4,
                                      shard_format="npz", progress=False), *small_components())
    assert sorted(u["utt_id"] for u in manifest.utterances) == ["good.flac", "good.ogg"] + [
        f"sub__{src.stem}" for src in sources]
    reasons = {os.path.basename(s["path"]): s["reason"] for s in manifest.skipped}
    assert set(reasons) == {"empty.wav", "garbage.wav", "zero_samples.wav", "nan.wav", "silent.wav", "short.wav"}
    assert "empty" in reasons["empty.wav"] and "empty" in reasons["zero_samples.wav"]
    assert "unreadable" in reasons["garbage.wav"] and "NaN" in reasons["nan.wav"]
    assert "silent" in reasons["silent.wav"] and "too short" in reasons["short.wav"]
    assert "skipped 6 files" in capsys.readouterr().out
    assert all(p.suffix in (".npz", ".json") for p in (tmp_path / "tokens").glob("shard-*"))


@requires_encodec
def test_prepare_cli_reports_bad_config(tmp_path, espeak_corpus):
    result = run_cli("soundstorm.cli.prepare", f"input={espeak_corpus}", f"output={tmp_path}", "+codec.num_level=3")
    assert result.returncode == 2 and "num_level" in result.stderr
    result = run_cli("soundstorm.cli.prepare", f"input={tmp_path / 'nope'}", f"output={tmp_path}")
    assert result.returncode == 2 and "not found" in result.stderr
    result = run_cli("soundstorm.cli.prepare", f"input={espeak_corpus}", f"output={tmp_path}", "codec=encodec_24khz",
                     "codec.pretrained=false", "semantic.frame_rate=50.0", "semantic.sample_rate=16000")
    assert result.returncode == 2 and "75.0 Hz" in result.stderr and "50.0 Hz" in result.stderr


@requires_encodec
def test_prepare_fits_untrained_encodec_and_reuses_it(espeak_corpus, tmp_path, capsys):
    from soundstorm.codecs import EncodecCodec
    from soundstorm.data.prepare import resolve_component

    lines = sorted(espeak_corpus.read_text().splitlines(), key=lambda line: -json.loads(line)["duration"])[:3]
    subset = tmp_path / "subset.jsonl"  # the 3 longest utterances: > 1024 frames at 75/s to fit 1024 codes
    subset.write_text("\n".join(line.replace('"wavs/', f'"{espeak_corpus.parent}/wavs/') for line in lines) + "\n")
    out = tmp_path / "tokens"
    # the JSONL names audio outside its own folder: allowed because the user names that folder
    options = PrepareOptions(input=str(subset), output=str(out), progress=False, audio_root=str(espeak_corpus.parent))
    tokenizer = MFCCKMeans(MFCCKMeansConfig(vocab_size=16))
    codec = EncodecCodec(bandwidth=1.5, pretrained=False)
    manifest = prepare(options, codec, tokenizer)
    assert "fitting the codec (encodec_24khz)" in capsys.readouterr().out
    assert manifest.codec["bandwidth_kbps"] == 1.5 and manifest.codec["num_levels"] == 2
    assert manifest.codec["frame_rate"] == 75.0 and manifest.semantic_upsample == 3
    assert all(u["num_frames"] == 3 * u["num_semantic_frames"] for u in manifest.utterances)
    shard = read_shard(out / "shard-00000.safetensors")
    for level in range(2):
        assert torch.cat([shard[f"codes.{j}"][level] for j in range(3)]).unique().numel() >= 100
    # A rerun reuses the fitted codebooks saved with the tokens instead of fitting again.
    reused = resolve_component(EncodecCodec(bandwidth=1.5, pretrained=False), out / "codec", load_codec, [], options,
                               0.04, "codec")
    assert "fitting" not in capsys.readouterr().out
    assert reused is not codec and reused.is_fitted
    for level in range(2):
        assert torch.equal(reused._codebooks[level].embed, codec._codebooks[level].embed)
    other = load_codec(out / "codec")
    other.model.quantizer.vq.layers[0]._codebook.embed.mul_(2.0)  # a differently fitted codec
    with pytest.raises(ValueError, match="different codec"):
        prepare(options, other, tokenizer)


def test_prepare_cli_killed_midway_then_resumed(espeak_corpus, tmp_path):
    import signal
    import subprocess
    import time

    out = tmp_path / "tokens"
    args = [f"input={espeak_corpus}", f"output={out}", *PREPARE_SMALL, "shard_size=1"]
    # The child sleeps 0.3 s after each shard, so the kill lands mid-run: unslowed, the 20 small shards
    # could all be written between two polls (seen in CI), and there was nothing left to resume.
    slowed = ("import sys, time; import soundstorm.data.prepare as p; write = p._write_shard; "
              "p._write_shard = lambda *a, **k: (write(*a, **k), time.sleep(0.3))[0]; "
              "sys.argv = ['soundstorm-prepare', *sys.argv[1:]]; from soundstorm.cli.prepare import main; main()")
    proc = start_python(["-c", slowed, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):  # wait for the first finished shard, then kill -9 mid-run
            if (out / "shard-00000.json").exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.json")}
    assert done_before and not (out / "manifest.json").exists()
    result = run_cli("soundstorm.cli.prepare", *args)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout
    manifest = TokenManifest.load(out)
    assert len(manifest.utterances) == 20 and len({u["shard"] for u in manifest.utterances}) == 20
    assert all((out / name).stat().st_mtime_ns == mtime for name, mtime in done_before.items())
    for utt in manifest.utterances:
        assert read_shard(out / f"{utt['shard']}.safetensors")[f"codes.{utt['index']}"].shape[1] == utt["num_frames"]
