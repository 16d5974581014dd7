"""Shared artifacts are data, never commands: a hostile token folder, checkpoint, manifest or script.

One test per surface (docs/security.md lists them), each through a real CLI (in-process, as in
``test_reliability``) or the public API, on a hand-edited copy of the session's espeak-ng token folder.
Every test checks the refusal (exit status 2 and a message naming the file and field) and that nothing
outside the folders the user named changed, and nothing outside was read into an output.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from soundstorm import SoundStorm, SoundStormConfig, limits
from soundstorm.data import TokenDataset, TokenManifest
from soundstorm.data.prepare import list_inputs
from soundstorm.t2s import T2SConfig, TextToSemantic, generate_semantic
from soundstorm.train import checkpoint as ckpt
from test_reliability import FAST_GEN, make_checkpoint, run_main

pytestmark = pytest.mark.slow  # they drive the CLIs on the session's espeak-ng token folder

TRAIN = ("model=tiny", "logger=none", "backend=cpu", "trainer.progress=false", "trainer.max_steps=2",
         "data.batch_size=2", "trainer.eval_every=100000")
EVAL = ("backend=cpu", "data.batch_size=2", "evaluation.max_utterances=1", "evaluation.max_batches=1",
        "evaluation.mask_ratios=[1.0]", "evaluation.long_seconds=0", "evaluation.num_examples=1", "sampler=greedy",
        "logger=none")
FAKE_SCORERS = ("evaluation.speech.asr=tests._dialogue_fakes:transcribe",
                "evaluation.speech.verifier=tests._dialogue_fakes:embed")


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``root`` (links as their target text), except under ``skip``."""
    out = {}
    for path in sorted(root.rglob("*")):
        if any(path == s or s in path.parents for s in skip):
            continue
        if path.is_symlink():
            out[str(path)] = "link:" + os.readlink(path)
        elif path.is_file():
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def shared_copy(espeak_tokens: Path, espeak_corpus: Path, where: Path) -> Path:
    """A token folder as a researcher would receive it: ``where/tokens`` beside its ``where/corpus``."""
    shutil.copytree(espeak_corpus.parent, where / "corpus")
    shutil.copytree(espeak_tokens, where / "tokens")
    manifest = json.loads((where / "tokens" / "manifest.json").read_text())
    for utt in manifest["utterances"]:
        utt["path"] = f"../corpus/wavs/{Path(utt['path']).name}"
    manifest["audio_folder"] = "../corpus"
    (where / "tokens" / "manifest.json").write_text(json.dumps(manifest))
    return where / "tokens"


def edit_manifest(tokens: Path, change) -> None:
    manifest = json.loads((tokens / "manifest.json").read_text())
    change(manifest)
    (tokens / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file of the user's that no artifact may touch."""
    path = tmp_path / "home" / "notes.txt"
    path.parent.mkdir()
    path.write_text("the user's own notes\n")
    return path


# ------------------------------------------------------------------ 1: text never becomes a command-line option
def test_script_text_is_spoken_never_obeyed_by_espeak(capsys, espeak_tokens, espeak_corpus, victim, tmp_path):
    secret = tmp_path / "home" / "secret.txt"
    secret.write_text("my bank password is swordfish\n")
    written = tmp_path / "home" / "written.wav"
    before = snapshot(tmp_path / "home")
    torch.manual_seed(0)
    SoundStorm(SoundStormConfig.tiny(codebook_size=64, semantic_vocab_size=32)).save_pretrained(tmp_path / "ss")
    TextToSemantic(T2SConfig.tiny(semantic_vocab_size=32)).save_pretrained(tmp_path / "t2s")
    wavs = espeak_corpus.parent / "wavs"
    script = tmp_path / "script.txt"
    script.write_text(f"A: --phonout={victim}\nB: -f{secret}\nA: -w {written}\n")
    code, _, err = run_main(capsys, "soundstorm.cli.dialogue", f"script=@{script}", f"t2s_checkpoint={tmp_path / 't2s'}",
                            f"soundstorm_checkpoint={tmp_path / 'ss'}", f"assets={espeak_tokens}",
                            f"voices.A={wavs / 'utt00000.wav'}", f"voices.B={wavs / 'utt00001.wav'}", "backend=cpu",
                            "sampler=greedy", "t2s_sampler.steps=2", f"out_dir={tmp_path / 'out'}",
                            "evaluation.asr=null", "evaluation.verifier=null")
    assert code == 0, err
    assert snapshot(tmp_path / "home") == before and not written.exists()
    from soundstorm.t2s.text import symbols

    # the option is spoken as words: the secret file's text is not what the model reads
    assert symbols(secret.read_text()) not in symbols(f"-f{secret}")


# ------------------------------------------------------------------ 2: an utterance id never becomes a path
def test_an_utterance_id_that_leaves_the_folder_is_refused(capsys, espeak_tokens, espeak_corpus, tmp_path):
    tokens = shared_copy(espeak_tokens, espeak_corpus, tmp_path / "shared")
    edit_manifest(tokens, lambda m: [u.update(utt_id=f"../../escaped{i}") for i, u in enumerate(m["utterances"])])
    checkpoint = make_checkpoint(tmp_path / "ckpt", espeak_tokens)
    before = snapshot(tmp_path, skip=(tmp_path / "eval",))
    code, _, err = run_main(capsys, "soundstorm.cli.eval", f"checkpoint={checkpoint}", f"data.root={tokens}",
                            f"out_dir={tmp_path / 'eval'}", *EVAL)
    assert code == 2 and "manifest.json" in err and "utt_id='../../escaped0'" in err and "path separator" in err, err
    assert snapshot(tmp_path, skip=(tmp_path / "eval",)) == before and not list(tmp_path.rglob("escaped*"))
    # prepare refuses such an id in its input, before fitting anything
    jsonl = tmp_path / "shared" / "corpus" / "evil.jsonl"
    jsonl.write_text(json.dumps({"path": "wavs/utt00000.wav", "utt_id": "../x", "text": "hi"}) + "\n")
    code, _, err = run_main(capsys, "soundstorm.cli.prepare", f"input={jsonl}", f"output={tmp_path / 'tok2'}",
                            "progress=false")
    assert code == 2 and "evil.jsonl:1: utt_id='../x'" in err and not (tmp_path / "tok2" / "codec").exists(), err


# ------------------------------------------------------------------ 3: a shard name never becomes a path
def test_a_shard_outside_the_token_folder_is_refused(capsys, espeak_tokens, espeak_corpus, tmp_path):
    tokens = shared_copy(espeak_tokens, espeak_corpus, tmp_path / "shared")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(tokens / "shard-00000.safetensors", outside / "evil.safetensors")
    edit_manifest(tokens, lambda m: [u.update(shard="../outside/evil") for u in m["utterances"]])
    code, out, err = run_main(capsys, "soundstorm.cli.train", f"data.root={tokens}", f"out_dir={tmp_path / 'run'}",
                              *TRAIN)
    assert code == 2 and "shard='../outside/evil'" in err and "step " not in out, err
    # a shard that is a link planted in the folder, leading out of it
    tokens2 = shared_copy(espeak_tokens, espeak_corpus, tmp_path / "shared2")
    for shard in tokens2.glob("shard-*.safetensors"):
        shard.unlink()
        shard.symlink_to(outside / "evil.safetensors")
    code, out, err = run_main(capsys, "soundstorm.cli.train", f"data.root={tokens2}", f"out_dir={tmp_path / 'run2'}",
                              *TRAIN)
    assert code == 2 and "points outside the token folder" in err and "step 2" not in out, err


# ------------------------------------------------------------------ 4: audio paths stay under the audio root
def test_the_speech_table_reads_audio_only_under_the_audio_root(capsys, espeak_tokens, espeak_corpus, tmp_path):
    tokens = shared_copy(espeak_tokens, espeak_corpus, tmp_path / "shared")
    private = tmp_path / "home" / "private_call.wav"
    private.parent.mkdir()
    shutil.copy(espeak_corpus.parent / "wavs" / "utt00003.wav", private)

    def hostile(manifest):
        for i, utt in enumerate(manifest["utterances"]):
            utt.update(speaker="ab"[i % 2], split="heldout" if i < 4 else "train")
            if i < 4:
                utt["path"] = str(private)  # every scored utterance claims the user's private recording

    edit_manifest(tokens, hostile)
    checkpoint = make_checkpoint(tmp_path / "ckpt", espeak_tokens)
    out = tmp_path / "eval"
    code, _, err = run_main(capsys, "soundstorm.cli.eval", f"checkpoint={checkpoint}", f"data.root={tokens}",
                            f"out_dir={out}", *EVAL, "evaluation.speech.enabled=true",
                            "evaluation.speech.max_utterances=2", *FAKE_SCORERS)
    assert code == 2 and f"path={str(private)!r} points outside the audio folder" in err, err
    assert "data.audio_root" in err and not (out / "speech_examples").exists() and not (out / "metrics.json").exists()
    # the recorded audio folder cannot widen the rule; the user's data.audio_root can
    edit_manifest(tokens, lambda m: m.update(audio_folder="/"))
    dataset = TokenDataset(tokens)
    with pytest.raises(ValueError, match="audio_folder='/' lies outside"):
        dataset.audio_path(dataset.utterances[0])
    allowed = TokenDataset(tokens, audio_root=str(tmp_path / "home"))
    assert allowed.audio_path(allowed.utterances[0]) == private.resolve()
    # prepare: a shared JSONL may name audio only under its own folder (or the audio_root the user passes)
    jsonl = tmp_path / "shared" / "corpus" / "evil.jsonl"
    jsonl.write_text(json.dumps({"path": str(private), "text": "hi"}) + "\n")
    code, _, err = run_main(capsys, "soundstorm.cli.prepare", f"input={jsonl}", f"output={tmp_path / 'tok2'}",
                            "progress=false")
    assert code == 2 and "evil.jsonl:1: path=" in err and "audio_root=FOLDER" in err, err
    assert list_inputs(jsonl, audio_root=tmp_path / "home")[0]["path"] == str(private)


# ------------------------------------------------------------------ 4b: folders named relative to the working directory
def test_folders_named_relative_to_the_working_directory(capsys, espeak_tokens, espeak_corpus, tmp_path, monkeypatch):
    """`make demo` names its folders from the repository (data.root=outputs/quickstart/tokens). A relative
    folder must find the audio its manifest names, and every check must hold on the file actually read: a
    check that joined the folder twice passed paths it never looked at (and the speech table looked for
    corpus/outputs/.../corpus/wavs)."""
    shared_copy(espeak_tokens, espeak_corpus, tmp_path / "shared")
    monkeypatch.chdir(tmp_path)
    dataset = TokenDataset("shared/tokens")
    utt = dataset.utterances[0]
    assert dataset.audio_path(utt) == (tmp_path / "shared" / "corpus" / "wavs" / f"{utt['utt_id']}.wav").resolve()
    # the speech table end to end on a relative token folder (what make demo's evaluation runs)
    edit_manifest(Path("shared/tokens"), lambda m: [u.update(speaker="ab"[i % 2], split="heldout" if i < 4 else "train")
                                                    for i, u in enumerate(m["utterances"])])
    checkpoint = make_checkpoint(tmp_path / "ckpt", espeak_tokens)
    code, _, err = run_main(capsys, "soundstorm.cli.eval", f"checkpoint={checkpoint}", "data.root=shared/tokens",
                            "out_dir=eval", *EVAL, "evaluation.speech.enabled=true",
                            "evaluation.speech.max_utterances=2", *FAKE_SCORERS)
    assert code == 0 and (tmp_path / "eval" / "metrics.json").is_file(), err
    # a relative JSONL's '../' entry is refused, not checked against the folder joined twice
    shutil.copy(tmp_path / "shared" / "corpus" / "wavs" / "utt00003.wav", tmp_path / "shared" / "private.wav")
    jsonl = tmp_path / "shared" / "corpus" / "evil.jsonl"
    jsonl.write_text(json.dumps({"path": "../private.wav", "text": "hi"}) + "\n")
    with pytest.raises(ValueError, match="points outside the audio root"):
        list_inputs("shared/corpus/evil.jsonl")
    # a shard planted as a link out of a relative token folder is refused
    outside = tmp_path / "outside"
    outside.mkdir()
    for shard in Path("shared/tokens").glob("shard-*.safetensors"):
        shutil.copy(shard, outside / shard.name)
        shard.unlink()
        shard.symlink_to(outside / shard.name)
    with pytest.raises(ValueError, match="points outside the token folder"):
        TokenDataset("shared/tokens")[0]


# ------------------------------------------------------------------ 5: writers never follow a planted link
def test_outputs_replace_planted_links_and_refuse_planted_folders(capsys, espeak_tokens, victim, tmp_path):
    checkpoint = make_checkpoint(tmp_path / "ckpt", espeak_tokens)
    out = tmp_path / "eval"
    (out / "examples").mkdir(parents=True)
    ids = [u["utt_id"] for u in TokenManifest.load(espeak_tokens).utterances]
    planted = [out / "examples" / f"{utt}_{kind}.wav" for utt in ids for kind in ("reference", "generated")]
    planted += [out / "examples" / f"{utt}.png" for utt in ids]
    for link in planted:
        link.symlink_to(victim)
    before = victim.read_bytes()
    code, _, err = run_main(capsys, "soundstorm.cli.eval", f"checkpoint={checkpoint}", f"data.root={espeak_tokens}",
                            f"out_dir={out}", *EVAL, "overwrite=true")  # examples/ is an earlier output: replaced
    assert code == 0, err
    assert victim.read_bytes() == before
    assert not any(p.is_symlink() for p in planted)  # removed with the earlier examples/, never followed
    replaced = [p for p in planted if p.exists()]
    assert len(replaced) == 3 and all(p.stat().st_size > 100 for p in replaced)  # 1 example: 2 wavs + 1 png
    # a planted folder link is refused, and nothing lands where it leads
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out2 = tmp_path / "eval2"
    out2.mkdir()
    (out2 / "examples").symlink_to(elsewhere, target_is_directory=True)
    code, _, err = run_main(capsys, "soundstorm.cli.eval", f"checkpoint={checkpoint}", f"data.root={espeak_tokens}",
                            f"out_dir={out2}", *EVAL)
    assert code == 2 and "already holds examples" in err and not list(elsewhere.iterdir()), err
    # overwrite=true removes the link itself (never what it leads to) and writes a real folder
    code, _, err = run_main(capsys, "soundstorm.cli.eval", f"checkpoint={checkpoint}", f"data.root={espeak_tokens}",
                            f"out_dir={out2}", *EVAL, "overwrite=true")
    assert code == 0 and not (out2 / "examples").is_symlink() and not list(elsewhere.iterdir()), err


# ------------------------------------------------------------------ 6: sizes from config files are checked first
def _generate(capsys, checkpoint, tokens, tmp_path, name):
    np.save(tmp_path / "ids.npy", np.arange(20) % 32)
    return run_main(capsys, "soundstorm.cli.generate", f"checkpoint={checkpoint}", f"assets={tokens}",
                    f"inputs=[{tmp_path / 'ids.npy'}]", f"out_dir={tmp_path / name}", *FAST_GEN)


@pytest.mark.parametrize("field,value", [("dim", 1_000_000), ("depth", 10**6), ("ff_dim", 10**9)])
def test_a_checkpoint_config_that_does_not_fit_its_weights_is_refused(capsys, espeak_tokens, tmp_path, field, value):
    checkpoint = make_checkpoint(tmp_path / "ckpt", espeak_tokens)
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, field: value}))
    code, _, err = _generate(capsys, checkpoint, espeak_tokens, tmp_path, "gen")
    assert code == 2 and "config.json" in err and f"{field}={value}" in err, err
    assert not (tmp_path / "gen").exists() or not list((tmp_path / "gen").iterdir())


@pytest.mark.parametrize("field,value", [("griffin_lim_iters", 10**9), ("n_fft", 2**26)])
def test_a_codec_config_beyond_the_limits_is_refused(capsys, espeak_tokens, espeak_corpus, tmp_path, field, value):
    from soundstorm.io import component_fingerprint

    tokens = shared_copy(espeak_tokens, espeak_corpus, tmp_path / "shared")
    checkpoint = make_checkpoint(tmp_path / "ckpt", espeak_tokens)
    config = json.loads((tokens / "codec" / "config.json").read_text())
    config["config"][field] = value
    (tokens / "codec" / "config.json").write_text(json.dumps(config))
    edit_manifest(tokens, lambda m: m["fingerprints"].update(codec=component_fingerprint(tokens / "codec")))
    code, _, err = _generate(capsys, checkpoint, tokens, tmp_path, "gen")
    assert code == 2 and "codec/config.json" in err and f"MelRVQConfig.{field}={value}" in err, err
    assert f"SOUNDSTORM_LIMITS=max_{'n_fft' if field == 'n_fft' else 'griffin_lim_iters'}" in err


def test_an_ema_file_of_another_shape_is_refused(capsys, espeak_tokens, tmp_path):
    checkpoint = make_checkpoint(tmp_path / "ckpt", espeak_tokens)
    SoundStorm(SoundStormConfig.tiny(dim=64)).save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", checkpoint / "ema.safetensors")
    code, _, err = _generate(capsys, checkpoint, espeak_tokens, tmp_path, "gen")
    assert code == 2 and "ema.safetensors does not fit" in err, err


def test_a_text_to_semantic_config_that_does_not_fit_its_weights_is_refused(tmp_path):
    TextToSemantic(T2SConfig.tiny()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "length_depth": 10**7}))
    with pytest.raises(ValueError, match=r"config.json: length_depth=10000000 cannot describe"):
        TextToSemantic.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "dim": 4096, "heads": 2}))
    with pytest.raises(ValueError, match=r"does not describe .*model.safetensors.*check .*dim=4096"):
        TextToSemantic.from_pretrained(tmp_path)


# ------------------------------------------------------------------ 7: predicted lengths are bounded
def test_a_duration_head_that_predicts_minutes_is_refused(capsys, espeak_tokens, espeak_corpus, tmp_path):
    torch.manual_seed(0)
    t2s = TextToSemantic(T2SConfig.tiny(semantic_vocab_size=32))
    with torch.no_grad():
        t2s.duration_head.bias.fill_(60.0)  # ~60 frames per symbol (the default bound is 50)
    t2s.save_pretrained(tmp_path / "t2s")
    SoundStorm(SoundStormConfig.tiny(codebook_size=64, semantic_vocab_size=32)).save_pretrained(tmp_path / "ss")
    wavs = espeak_corpus.parent / "wavs"
    code, _, err = run_main(capsys, "soundstorm.cli.dialogue", "script='Hello there.'",
                            f"t2s_checkpoint={tmp_path / 't2s'}", f"soundstorm_checkpoint={tmp_path / 'ss'}",
                            f"assets={espeak_tokens}", f"voices.A={wavs / 'utt00000.wav'}",
                            f"voices.B={wavs / 'utt00001.wav'}", "backend=cpu", "sampler=greedy",
                            "t2s_sampler.steps=2", f"out_dir={tmp_path / 'out'}", "evaluation.asr=null",
                            "evaluation.verifier=null")
    assert code == 2 and "max_frames_per_symbol" in err and "'Hello there.'" in err and "t2s" in err, err
    assert not (tmp_path / "out" / "dialogue.wav").exists()
    with pytest.raises(ValueError, match="max_frames_per_symbol"):
        generate_semantic(t2s, ["Hi."])
    with limits.override(max_frames_per_symbol=100):  # a user who means it raises the bound
        assert generate_semantic(t2s, ["Hi."])[0].numel() > 50 * 3


# ------------------------------------------------------------------ 8: archives and headers are bounded
def test_a_compressed_npz_shard_is_refused_before_it_expands(capsys, espeak_tokens, espeak_corpus, tmp_path):
    tokens = shared_copy(espeak_tokens, espeak_corpus, tmp_path / "shared")
    header = np.lib.format.header_data_from_array_1_0(np.zeros((4, 8 << 20), dtype=np.int16))
    npy_header = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy_header, header)
    for shard in {u["shard"] for u in TokenManifest.load(tokens).utterances}:
        bomb = tokens / f"{shard}.npz"
        with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            with archive.open("codes.0.npy", "w", force_zip64=True) as member:
                member.write(npy_header.getvalue())
                for _ in range(4):  # 64 MB of zeros in a file of about 64 KB
                    member.write(bytes(16 << 20))
        assert bomb.stat().st_size < 1_000_000
    edit_manifest(tokens, lambda m: (m.update(shard_format="npz"), [u.pop("tensors", None) for u in m["utterances"]]))
    code, out, err = run_main(capsys, "soundstorm.cli.train", f"data.root={tokens}", f"out_dir={tmp_path / 'run'}",
                              *TRAIN)
    assert code == 2 and ".npz: member 'codes.0.npy' is compressed" in err and "step 2" not in out, err


def test_headers_and_byte_ranges_that_claim_more_than_the_file_are_refused(capsys, espeak_tokens, espeak_corpus,
                                                                           tmp_path):
    checkpoint = make_checkpoint(tmp_path / "ckpt", espeak_tokens)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(struct.pack("<Q", 2**62) + weights.read_bytes()[8:])
    code, _, err = _generate(capsys, checkpoint, espeak_tokens, tmp_path, "gen")
    assert code == 2 and "model.safetensors is truncated or corrupt: it claims a 4611686018427387904-byte header" in err
    tokens = shared_copy(espeak_tokens, espeak_corpus, tmp_path / "shared")
    edit_manifest(tokens, lambda m: [u["tensors"]["codes"].__setitem__(1, 2**40) for u in m["utterances"]])
    code, out, err = run_main(capsys, "soundstorm.cli.train", f"data.root={tokens}", f"out_dir={tmp_path / 'run'}",
                              *TRAIN)
    assert code == 2 and "does not fit" in err and "step 2" not in out, err
    edit_manifest(tokens, lambda m: [u.update(num_frames=10**9, num_semantic_frames=5 * 10**8)
                                     for u in m["utterances"]])
    code, _, err = run_main(capsys, "soundstorm.cli.train", f"data.root={tokens}", f"out_dir={tmp_path / 'run2'}",
                            *TRAIN)
    assert code == 2 and "max_utterance_seconds" in err, err


def test_a_checkpoint_file_list_naming_other_files_makes_it_invalid(tmp_path):
    checkpoint = ckpt.save_checkpoint(tmp_path, 3, SoundStorm(SoundStormConfig.tiny()), {"step": 3})
    assert ckpt.is_valid(checkpoint)
    meta = json.loads((checkpoint / "meta.json").read_text())
    (checkpoint / "meta.json").write_text(json.dumps({**meta, "files": [*meta["files"], "../../etc/hostname"]}))
    assert not ckpt.is_valid(checkpoint) and ckpt.resume_candidates("auto", tmp_path) == []
