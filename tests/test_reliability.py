"""Nothing silently wrong: one test per fault or bad input that used to pass unnoticed.

The CLI cases run the real Hydra entry points in-process (``main()`` with ``sys.argv`` set; the
same code path as the console scripts, without a new interpreter per case) on the session's
espeak-ng token folder (``espeak_tokens``: Q=4, 64 codes, 32 semantic clusters) and a checkpoint
made for it without training.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from soundstorm import SoundStorm, SoundStormConfig
from soundstorm.io import component_fingerprint
from soundstorm.assets import load_assets
from soundstorm.codecs import MelRVQCodec, load_codec
from soundstorm.io import atomic_write_bytes
from soundstorm.train import checkpoint as ckpt

from conftest import requires_encodec
from test_train_loop import make_trainer

FAST_GEN = ("backend=cpu", "sampler=greedy", "window_seconds=1.0", "window_prompt_seconds=0.2")


def run_main(capsys, module: str, *args: str) -> tuple[int, str, str]:
    """``python -m module args`` in this process: (exit status, stdout, stderr)."""
    main = importlib.import_module(module).main
    argv = sys.argv
    sys.argv = [module, *args]
    code = 0
    try:
        main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def make_checkpoint(root: Path, tokens: Path, **overrides) -> Path:
    """An (untrained) checkpoint for the token folder, with the folder's record as training writes it."""
    assets = load_assets(tokens, "data.root")
    config = SoundStormConfig.tiny(num_levels=4, codebook_size=64, semantic_vocab_size=32,
                                   semantic_upsample=assets.record["semantic_upsample"], **overrides)
    torch.manual_seed(0)
    return ckpt.save_checkpoint(root, 1, SoundStorm(config), {"step": 1}, tokens=assets.record)


@pytest.fixture(scope="module")
def checkpoint(espeak_tokens, tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("reliability_ckpt"), espeak_tokens)


@pytest.fixture
def ids(tmp_path) -> Path:
    np.save(tmp_path / "ids.npy", np.arange(20) % 32)
    return tmp_path / "ids.npy"


def other_prepare_run(espeak_tokens: Path, folder: Path) -> Path:
    """A token folder as another prepare run makes it: same settings, other fitted codebooks."""
    shutil.copytree(espeak_tokens, folder)
    codec = load_codec(folder / "codec")
    MelRVQCodec(codec.config, codec.codebooks_QKF + 0.01).save(folder / "codec")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["fingerprints"]["codec"] = component_fingerprint(folder / "codec")  # what that run records
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


# ------------------------------------------------------------------ 1: generate with foreign assets
def test_row1_generate_refuses_assets_the_checkpoint_was_not_trained_on(capsys, checkpoint, espeak_tokens, ids,
                                                                        tmp_path):
    other = other_prepare_run(espeak_tokens, tmp_path / "other_tokens")
    code, _, err = run_main(capsys, "soundstorm.cli.generate", f"checkpoint={checkpoint}", f"assets={other}",
                            f"inputs=[{ids}]", f"out_dir={tmp_path / 'a'}", *FAST_GEN)
    assert code == 2 and "soundstorm-generate: error: assets=" in err and "other fitted codebooks" in err, err
    q8 = tmp_path / "q8"
    shutil.copytree(espeak_tokens / "semantic", q8 / "semantic")
    config = load_codec(espeak_tokens / "codec").config
    MelRVQCodec(type(config)(**{**vars(config), "num_levels": 8}), torch.randn(8, 64, config.n_mels)).save(q8 / "codec")
    code, _, err = run_main(capsys, "soundstorm.cli.generate", f"checkpoint={checkpoint}", f"assets={q8}",
                            f"inputs=[{ids}]", f"out_dir={tmp_path / 'b'}", *FAST_GEN)
    assert code == 2 and "num_levels=8" in err and "trained with num_levels=4" in err, err
    assert not list((tmp_path / "a").glob("ids*")) and not list((tmp_path / "b").glob("ids*"))


# ------------------------------------------------------------------ 2: train with a codec group that does not match
@requires_encodec
def test_row2_train_refuses_a_codec_group_that_does_not_match_the_tokens(capsys, espeak_tokens, tmp_path):
    code, out, err = run_main(capsys, "soundstorm.cli.train", f"data.root={espeak_tokens}", f"out_dir={tmp_path}",
                              "codec=encodec_24khz", "codec.pretrained=false", "model=tiny", "logger=none",
                              "backend=cpu", "trainer.progress=false", "trainer.max_steps=1")
    assert code == 2 and "codec=encodec_24khz does not match the codec saved in data.root=" in err, err
    assert "step " not in out and not (tmp_path / "checkpoints").exists()


# ------------------------------------------------------------------ 3: two inputs with one file name
def test_row3_generate_never_overwrites_an_output(capsys, checkpoint, espeak_tokens, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "x.npy", np.arange(20) % 32)
    out = tmp_path / "gen"
    code, _, err = run_main(capsys, "soundstorm.cli.generate", f"checkpoint={checkpoint}", f"assets={espeak_tokens}",
                            f"inputs=[{tmp_path / 'a' / 'x.npy'},{tmp_path / 'b' / 'x.npy'}]", f"out_dir={out}",
                            *FAST_GEN)
    assert code == 2 and "would both write" in err and not list(out.glob("x*")), err
    assert not out.exists()  # a refused run leaves no empty out_dir behind (soundstorm.outputs)
    out.mkdir()
    (out / "x.wav").write_bytes(b"earlier result")  # an output of an earlier run is kept too
    code, _, err = run_main(capsys, "soundstorm.cli.generate", f"checkpoint={checkpoint}", f"assets={espeak_tokens}",
                            f"inputs=[{tmp_path / 'a' / 'x.npy'}]", f"out_dir={out}", *FAST_GEN)
    assert code == 2 and "overwrite=true" in err and (out / "x.wav").read_bytes() == b"earlier result", err


# ------------------------------------------------------------------ 4: changed optimizer settings on resume
def test_row4_resume_applies_changed_lr_and_min_lr_ratio(tmp_path, capsys):
    make_trainer(tmp_path, max_steps=4, lr=3e-3).fit()
    resumed = make_trainer(tmp_path, max_steps=6, lr=1e-3, total_steps=6)
    schedule = resumed.scheduler.lr_lambdas[0]
    schedule.min_ratio = 0.5  # optim.min_lr_ratio=0.5
    resumed.resume(ckpt.resume_candidates("auto", tmp_path / "checkpoints"))
    out = capsys.readouterr().out
    assert "optim.lr 0.003 -> 0.001" in out and "optim.min_lr_ratio 0.1 -> 0.5" in out, out
    assert resumed.scheduler.base_lrs == [1e-3, 1e-3] and schedule.min_ratio == 0.5 and schedule.total_steps == 6
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * schedule(4))
    resumed.fit()
    assert resumed.scheduler.get_last_lr()[0] == pytest.approx(1e-3 * schedule(6))


# ------------------------------------------------------------------ 5: out_dir/checkpoints is a file
def test_row5_checkpoints_path_taken_by_a_file_is_refused_before_training(capsys, espeak_tokens, tmp_path):
    (tmp_path / "checkpoints").write_text("not a folder")
    code, out, err = run_main(capsys, "soundstorm.cli.train", f"data.root={espeak_tokens}", f"out_dir={tmp_path}",
                              "model=tiny", "logger=none", "backend=cpu", "trainer.progress=false",
                              "trainer.max_steps=1")
    assert code == 2 and "checkpoints is a file" in err and "step " not in out, err
    assert (tmp_path / "checkpoints").read_text() == "not a folder"


# ------------------------------------------------------------------ 6: files follow the umask
def test_row6_atomic_writes_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        path = ckpt.save_checkpoint(tmp_path / "ckpt", 1, SoundStorm(SoundStormConfig.tiny()), {"step": 1})
        atomic_write_bytes(tmp_path / "manifest.json", b"{}")
        files = [*path.iterdir(), tmp_path / "manifest.json"]
        assert sorted(oct(p.stat().st_mode & 0o777) for p in files) == [oct(0o644)] * len(files)
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "private.json", b"{}")
        assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(previous)


# ------------------------------------------------------------------ 7: truncated newest checkpoint
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_row7_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, capsys):
    make_trainer(tmp_path, max_steps=4, ckpt_every=2, keep_last=3).fit()
    root = tmp_path / "checkpoints"
    truncate(root / "step_00000004" / "state.pt")
    resumed = make_trainer(tmp_path, max_steps=4)
    used = resumed.resume(ckpt.resume_candidates("auto", root))
    out = capsys.readouterr().out
    assert used.name == "step_00000002" and resumed.step == 2
    assert "step_00000004/state.pt is truncated or corrupt" in out and "falling back" in out, out
    assert "resuming from" in out and "step_00000002" in out
    truncate(root / "step_00000002" / "model.safetensors")  # a truncated weights file: the right hint
    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        make_trainer(tmp_path, max_steps=4).resume(ckpt.resume_candidates("auto", root))
    assert "Convert a trusted" not in str(info.value)


# ------------------------------------------------------------------ 8: resume with another model size
def test_row8_resume_with_a_changed_model_size_is_a_clear_error(tmp_path):
    make_trainer(tmp_path, max_steps=2).fit()
    bigger = make_trainer(tmp_path, max_steps=4)
    bigger.model = SoundStorm(SoundStormConfig.tiny(dim=64))
    with pytest.raises(ValueError, match=r"model\.dim=64 \(checkpoint: 32\).*resume=none"):
        bigger.resume(ckpt.resume_candidates("auto", tmp_path / "checkpoints"))


# ------------------------------------------------------------------ 9: prompt shorter than prompt_seconds
def test_row9_prompt_shorter_than_prompt_seconds_is_an_error(capsys, checkpoint, espeak_tokens, espeak_corpus, ids,
                                                            tmp_path):
    wav = sorted((espeak_corpus.parent / "wavs").glob("*.wav"))[0]
    code, _, err = run_main(capsys, "soundstorm.cli.generate", f"checkpoint={checkpoint}", f"assets={espeak_tokens}",
                            f"inputs=[{ids}]", f"prompt_wav={wav}", "prompt_seconds=60", f"out_dir={tmp_path / 'g'}",
                            *FAST_GEN)
    assert code == 2 and "shorter than prompt_seconds=60" in err and "s long" in err, err
    assert not list((tmp_path / "g").glob("ids*"))


# ------------------------------------------------------------------ 12: generate / eval after prepare, as the README
def test_row12_generate_and_eval_take_codec_settings_from_the_token_folder(capsys, checkpoint, espeak_tokens, ids,
                                                                           tmp_path):
    code, out, err = run_main(capsys, "soundstorm.cli.generate", f"checkpoint={checkpoint}", f"assets={espeak_tokens}",
                              f"inputs=[{ids}]", f"out_dir={tmp_path / 'gen'}", *FAST_GEN)
    assert code == 0, err
    assert np.load(tmp_path / "gen" / "ids.codes.npy").shape == (4, 40) and (tmp_path / "gen" / "ids.wav").is_file()
    code, out, err = run_main(capsys, "soundstorm.cli.eval", f"checkpoint={checkpoint}", f"data.root={espeak_tokens}",
                              f"out_dir={tmp_path / 'eval'}", "backend=cpu", "sampler=greedy", "data.max_seconds=2",
                              "data.heldout_fraction=0.1", "evaluation.max_utterances=1", "evaluation.max_batches=1",
                              "evaluation.mask_ratios=[1.0]", "evaluation.long_seconds=0", "evaluation.num_examples=0")
    assert code == 0, err
    metrics_file = tmp_path / "eval" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    assert metrics["codec"]["num_levels"] == 4 and metrics["codec"]["codebook_size"] == 64
    # A second evaluation into the same folder is refused before any work; the first one's results stay.
    again = ("soundstorm.cli.eval", f"checkpoint={checkpoint}", f"data.root={espeak_tokens}", f"out_dir={tmp_path / 'eval'}",
             "backend=cpu", "sampler=greedy", "data.max_seconds=2", "data.heldout_fraction=0.1",
             "evaluation.max_utterances=1", "evaluation.max_batches=1", "evaluation.mask_ratios=[1.0]",
             "evaluation.long_seconds=0", "evaluation.num_examples=0", "seed=1")
    before = metrics_file.read_bytes()
    code, out, err = run_main(capsys, *again)
    assert code == 2 and "already holds metrics.json" in err and "overwrite=true" in err, err
    assert metrics_file.read_bytes() == before
    code, out, err = run_main(capsys, *again, "overwrite=true")
    assert code == 0, err
    assert json.loads(metrics_file.read_text())["checkpoint"] == str(checkpoint)


# ------------------------------------------------------------------ 11: misleading messages and tracebacks
def test_row11_bad_values_get_messages_that_name_them(capsys, checkpoint, espeak_tokens, ids, tmp_path):
    from soundstorm import SamplerConfig

    generate = ("soundstorm.cli.generate", f"checkpoint={checkpoint}", f"assets={espeak_tokens}", *FAST_GEN)
    train = ("soundstorm.cli.train", f"data.root={espeak_tokens}", "model=tiny", "logger=none", "backend=cpu",
             "trainer.progress=false")
    (tmp_path / "file").write_text("x")
    cases = [
        (generate + (f"inputs=[{ids}]", f"prompt_wav={ids}", "prompt_seconds=-3", f"out_dir={tmp_path / 'g'}"),
         "prompt_seconds=-3; expected a number of seconds > 0"),
        (generate + (f"out_dir={tmp_path / 'g'}",), "inputs is not set; expected inputs=[a.wav,b.npy]"),
        (generate + (f"inputs=[{ids}]", f"out_dir={tmp_path / 'file'}"), "is a file; expected a folder"),
        (train + (f"out_dir={tmp_path / 't'}", "trainer.max_steps=0"),
         "trainer.max_steps must be a positive integer, got 0"),
        (train + (f"out_dir={tmp_path / 'file'}",), "is a file; expected a folder"),
    ]
    if Path("/sys/fs").is_dir():  # sysfs: not writable, even by root
        cases.append((generate + (f"inputs=[{ids}]", "out_dir=/sys/fs/soundstorm_out"), "cannot be written to"))
    for (module, *args), message in cases:
        code, out, err = run_main(capsys, module, *args)
        assert code == 2 and f"{module.split('.')[-1]}: error: " in err and message in err, (args, err)
        assert "Traceback" not in err and "step " not in out
    bad = tmp_path / "bad_audio"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "noise.wav").write_bytes(b"RIFF not really a wav")
    code, _, err = run_main(capsys, "soundstorm.cli.prepare", f"input={bad}", f"output={tmp_path / 'tok'}",
                            "progress=false")
    assert code == 2 and "none of the 2 audio files" in err and "MelRVQCodec.fit" not in err, err
    with pytest.raises(ValueError, match="SamplerConfig.temperature must be a finite number > 0, or one per level, got 'hot'"):
        SamplerConfig(temperature="hot")
    model_dir = tmp_path / "model"
    SoundStorm(SoundStormConfig.tiny()).save_pretrained(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    del config["dim"]
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json lacks dim"):
        SoundStorm.from_pretrained(model_dir)


# ------------------------------------------------------------------ 10: input validation in the library
def test_row10_masking_forward_sampler_and_nan_weights_are_checked(tmp_path):
    from soundstorm import SamplerConfig, generate
    from soundstorm.masking import corrupt

    codes = torch.randint(0, 8, (2, 3, 6))
    with pytest.raises(ValueError, match=r"codes holds ids in \[8, 8\], expected every id in \[0, 7\]"):
        corrupt(torch.full((2, 3, 6), 8), mask_id=8)
    with pytest.raises(ValueError, match="mask_id must be a non-negative int"):
        corrupt(codes, mask_id=-1)
    model = SoundStorm(SoundStormConfig.tiny()).eval()
    codes, semantic = torch.randint(0, 32, (1, 4, 8)), torch.randint(0, 16, (1, 4))
    for level in (4, 1.5, -1, torch.tensor([4])):
        with pytest.raises(ValueError, match="level (must be|holds ids in \\[4, 4\\])"):
            model(codes, semantic, level=level)
    assert model(codes, semantic, level=3).shape == (1, 8, 32)
    with pytest.raises(ValueError, match="SamplerConfig.greedy_last must be True or False, got 'no'"):
        SamplerConfig(greedy_last="no")
    with torch.no_grad():
        model.head_bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        generate(model, semantic)
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds NaN or inf in 1 tensors, e.g. \\['head_bias'\\]"):
        SoundStorm.from_pretrained(tmp_path)


def test_generate_scans_the_weights_once_until_they_change(monkeypatch):
    """The NaN scan syncs the device, so unchanged weights are scanned once; any in-place change rescans."""
    import soundstorm._checks
    from soundstorm import generate

    scans = []
    real = soundstorm._checks.nonfinite_tensors
    monkeypatch.setattr(soundstorm._checks, "nonfinite_tensors", lambda tensors: scans.append(1) or real(tensors))
    model = SoundStorm(SoundStormConfig.tiny()).eval()
    semantic = torch.randint(0, 16, (1, 4))
    generate(model, semantic)
    generate(model, semantic)
    assert len(scans) == 1
    with torch.no_grad():
        model.head_bias.fill_(float("nan"))  # in place: the version counter moves
    with pytest.raises(ValueError, match="non-finite"):
        generate(model, semantic)
    assert len(scans) == 2


# ------------------------------------------------------------------ guarantees: full disk, SIGKILL
def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    trainer = make_trainer(tmp_path, max_steps=4, ckpt_every=2)
    real_write = Path.write_bytes

    def write_bytes(path, data):
        if path.name.startswith(".state.pt") and "step_00000004" in str(path.parent):
            real_write(path, data[: len(data) // 3])  # part of it lands, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(OSError, match="No space left"):
        trainer.fit()
    monkeypatch.undo()
    root = tmp_path / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step_00000002"]  # no step 4, no temporary left behind
    resumed = make_trainer(tmp_path, max_steps=4)
    assert resumed.resume(ckpt.resume_candidates("auto", root)).name == "step_00000002" and resumed.step == 2


@pytest.mark.slow
def test_sigkill_during_training_leaves_only_complete_checkpoints(espeak_tokens, tmp_path):
    import signal
    import subprocess

    from _cli import run_cli, start_python

    out = tmp_path / "run"
    args = ["-m", "soundstorm.cli.train", f"data.root={espeak_tokens}", f"out_dir={out}", "model=tiny", "logger=none",
            "backend=cpu", "trainer.progress=false", "trainer.log_every=1", "trainer.ckpt_every=1",
            "trainer.eval_every=100000", "data.batch_size=4", "data.max_seconds=2"]
    proc = start_python([*args, "trainer.max_steps=100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("step 3 "):  # checkpoints are being written every step now
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    found = ckpt.list_checkpoints(out / "checkpoints")
    assert found and all(ckpt.load_checkpoint(p) for p in found)
    resumed = run_cli(*args[1:], "trainer.max_steps=" + str(int(found[-1].name[5:]) + 1))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming from {found[-1]}" in resumed.stdout
