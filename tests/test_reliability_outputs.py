"""One output-folder policy for every CLI that writes (issue 25, :mod:`soundstorm.outputs`).

Each test is a case of the issue, run through the real CLI: concurrent writers (a second one is refused
naming the first one's pid; the first is a process this test starts and that holds the lock until told
to let go, so nothing depends on timing), a lock left by a killed run taken over, earlier outputs refused
without ``overwrite=true`` and all removed with it, a refused resume or any refused run leaving the folder
as it was (no ``config.yaml`` rewritten, no empty ``out_dir`` made), and a full disk during ``generate``
(a real one: a small tmpfs) or ``prepare`` reported with what is intact and how the rerun continues.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from _cli import run_cli, start_python
from soundstorm.outputs import LOCK_NAME
from test_reliability import FAST_GEN, make_checkpoint, other_prepare_run, run_main

TRAIN = ("model=tiny", "logger=none", "backend=cpu", "backend.options.num_threads=1", "trainer.progress=false",
         "trainer.eval_every=100000", "data.batch_size=4", "data.max_seconds=2", "data.heldout_fraction=0")
EVAL = ("backend=cpu", "sampler=greedy", "logger=none", "data.max_seconds=2", "data.heldout_fraction=0.1",
        "evaluation.max_utterances=1", "evaluation.max_batches=1", "evaluation.mask_ratios=[1.0]",
        "evaluation.long_seconds=0")

# A process that claims a folder the way every CLI does and holds it until its stdin closes.
HOLDER = ("import sys\nfrom soundstorm.outputs import claim\nwith claim(sys.argv[1], 'out_dir', 'holder'):\n"
          "    print('held', flush=True)\n    sys.stdin.read()\n")


def hold(folder: Path) -> subprocess.Popen:
    """Start a holder of ``folder``; returns once it holds the lock."""
    proc = start_python(["-c", HOLDER, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture(scope="module")
def checkpoint(espeak_tokens, tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("outputs_ckpt"), espeak_tokens)


def ids_file(folder: Path, name: str = "ids") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{name}.npy", np.arange(20) % 32)
    return folder / f"{name}.npy"


# ------------------------------------------------------------------ case 1: two trainings into one out_dir
def test_a_second_training_into_a_running_ones_out_dir_is_refused_naming_its_pid(espeak_tokens, tmp_path):
    out = tmp_path / "run"
    args = ["-m", "soundstorm.cli.train", f"data.root={espeak_tokens}", f"out_dir={out}", *TRAIN,
            "trainer.log_every=1", "trainer.ckpt_every=100000"]
    log = tmp_path / "first.log"
    with open(log, "w") as sink:  # a file, not a pipe: the first run never blocks on its output
        first = start_python([*args, "trainer.max_steps=100000"], stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while "\nstep 1 " not in "\n" + log.read_text():  # training: it holds out_dir, config.yaml is written
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        config = (out / "config.yaml").read_bytes()
        second = run_cli(*args[1:], "trainer.max_steps=2", "seed=1")
        assert second.returncode == 2, second.stderr[-2000:]
        assert (f"soundstorm-train: error: out_dir='{out}' is in use by another soundstorm run: pid {first.pid} on "
                f"host ") in second.stderr, second.stderr
        assert (out / "config.yaml").read_bytes() == config and "seed: 1" not in config.decode()
        first.send_signal(signal.SIGTERM)  # checkpoints and exits 0
        assert first.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        first.kill()
    assert not (out / LOCK_NAME).exists()  # released: the next run may write
    assert [p.name for p in (out / "checkpoints").iterdir()][0].startswith("step_")


# ------------------------------------------------------------------ case 2: two generate runs into one out_dir
def test_a_second_generate_into_a_held_out_dir_is_refused_and_writes_nothing(capsys, checkpoint, espeak_tokens,
                                                                            tmp_path):
    out, ids = tmp_path / "gen", ids_file(tmp_path / "in")
    holder = hold(out)
    try:
        code, _, err = run_main(capsys, "soundstorm.cli.generate", f"checkpoint={checkpoint}",
                                f"assets={espeak_tokens}", f"inputs=[{ids}]", f"out_dir={out}", *FAST_GEN)
        assert code == 2 and f"is in use by another soundstorm run: pid {holder.pid} on host" in err, err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing of this run
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    code, out_text, err = run_main(capsys, "soundstorm.cli.generate", f"checkpoint={checkpoint}",
                                   f"assets={espeak_tokens}", f"inputs=[{ids}]", f"out_dir={out}", *FAST_GEN)
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["ids.codes.npy", "ids.wav"], err


# ------------------------------------------------------------------ a lock left by a killed run
def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_note(capsys, checkpoint, espeak_tokens, tmp_path):
    out, ids = tmp_path / "gen", ids_file(tmp_path / "in")
    holder = hold(out)
    holder.kill()  # SIGKILL: the kernel drops its flock, its record stays
    holder.wait(timeout=30)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid
    code, _, err = run_main(capsys, "soundstorm.cli.generate", f"checkpoint={checkpoint}", f"assets={espeak_tokens}",
                            f"inputs=[{ids}]", f"out_dir={out}", *FAST_GEN)
    assert code == 0, err
    assert f"soundstorm-generate: note: taking over the lock {out / LOCK_NAME} left by pid {holder.pid} on host" in err
    assert "which ended without releasing it" in err and not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------ case 3: dialogue replaced earlier outputs
def test_dialogue_refuses_an_earlier_output_without_overwrite_and_keeps_it_when_refused(capsys, tmp_path):
    out = tmp_path / "dialogue"
    out.mkdir()
    (out / "dialogue.wav").write_bytes(b"earlier dialogue")
    common = (f"t2s_checkpoint={tmp_path / 'no_t2s'}", f"soundstorm_checkpoint={tmp_path / 'no_soundstorm'}",
              f"assets={tmp_path / 'no_tokens'}", "script='A: hello | B: hi'", "voices.A=a.wav", "voices.B=b.wav",
              "backend=cpu", f"out_dir={out}")
    code, _, err = run_main(capsys, "soundstorm.cli.dialogue", *common)
    assert code == 2 and f"out_dir='{out}' already holds dialogue.wav of an earlier run" in err, err
    assert "overwrite=true" in err
    # overwrite=true removes the earlier outputs only once every check has passed: this run is refused first
    code, _, err = run_main(capsys, "soundstorm.cli.dialogue", *common, "overwrite=true")
    assert code == 2 and "no_t2s" in err, err
    assert (out / "dialogue.wav").read_bytes() == b"earlier dialogue" and not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------ case 8: eval overwrite=true left old examples
def test_eval_overwrite_leaves_no_output_of_the_earlier_evaluation(capsys, checkpoint, espeak_tokens, tmp_path):
    out = tmp_path / "eval"
    args = ("soundstorm.cli.eval", f"checkpoint={checkpoint}", f"data.root={espeak_tokens}", f"out_dir={out}", *EVAL)
    code, _, err = run_main(capsys, *args, "evaluation.num_examples=1")
    assert code == 0 and list((out / "examples").iterdir()), err
    (out / "notes.txt").write_text("the user's own file")  # not an eval output: never touched
    code, _, err = run_main(capsys, *args, "evaluation.num_examples=0", "seed=1")
    assert code == 2 and "already holds metrics.json and 1 more outputs of an earlier run" in err, err
    code, _, err = run_main(capsys, *args, "evaluation.num_examples=0", "seed=1", "overwrite=true")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "notes.txt"]


# ------------------------------------------------------------------ case 6: a refused resume rewrote config.yaml
def test_a_refused_resume_leaves_config_yaml_byte_identical(capsys, espeak_tokens, tmp_path):
    out = tmp_path / "run"
    args = ("soundstorm.cli.train", f"out_dir={out}", *TRAIN, "trainer.log_every=1")
    code, _, err = run_main(capsys, *args, f"data.root={espeak_tokens}", "trainer.max_steps=1")
    assert code == 0, err
    config = (out / "config.yaml").read_bytes()
    listing = sorted(p.name for p in out.rglob("*"))
    code, _, err = run_main(capsys, *args, f"data.root={espeak_tokens}", "trainer.max_steps=2", "model.depth=3")
    assert code == 2 and "cannot resume from" in err and "model.depth=3" in err, err
    other = other_prepare_run(espeak_tokens, tmp_path / "other_tokens")
    code, _, err = run_main(capsys, *args, f"data.root={other}", "trainer.max_steps=2")
    assert code == 2 and "trained on tokens of another codec" in err, err
    assert (out / "config.yaml").read_bytes() == config and sorted(p.name for p in out.rglob("*")) == listing


# ------------------------------------------------------------------ a refused run left an empty out_dir
@pytest.mark.parametrize("module, args", [
    ("soundstorm.cli.train", ("data.root={missing}", "out_dir={out}", "model=tiny", "logger=none", "backend=cpu")),
    ("soundstorm.cli.generate", ("checkpoint={missing}", "assets={missing}", "inputs=[{missing}/a.npy]",
                                 "out_dir={out}", "backend=cpu")),
    ("soundstorm.cli.eval", ("checkpoint={missing}", "data.root={missing}", "out_dir={out}", "backend=cpu",
                             "logger=none")),
    ("soundstorm.cli.dialogue", ("t2s_checkpoint={missing}", "soundstorm_checkpoint={missing}", "assets={missing}",
                                 "script=hello", "voices.A=a.wav", "voices.B=b.wav", "backend=cpu",
                                 "out_dir={out}")),
    ("soundstorm.cli.prepare", ("input={missing}", "output={out}")),
    ("soundstorm.cli.bench", ("model=tiny", "backend=cpu", "duration_s=-1", "output_json={out}/bench.json")),
    ("soundstorm.cli.train_t2s", ("data.root={missing}", "out_dir={out}", "t2s_model=tiny", "logger=none",
                                  "backend=cpu")),
], ids=lambda v: v.rsplit(".", 1)[-1] if isinstance(v, str) else "")
def test_a_refused_run_leaves_no_out_dir_behind(capsys, tmp_path, module, args):
    out, missing = tmp_path / "new" / "out", tmp_path / "missing"
    code, _, err = run_main(capsys, module, *(a.format(out=out, missing=missing) for a in args))
    assert code == 2 and "error: " in err, err
    assert not (tmp_path / "new").exists(), sorted(str(p) for p in (tmp_path / "new").rglob("*"))


def test_bench_refuses_an_existing_output_json_without_overwrite(capsys, tmp_path):
    (tmp_path / "bench.json").write_text("earlier")
    code, out, err = run_main(capsys, "soundstorm.cli.bench", "model=tiny", "backend=cpu",
                              f"output_json={tmp_path / 'bench.json'}")
    assert code == 2 and "already holds bench.json of an earlier run" in err and "overwrite=true" in err, err
    assert (tmp_path / "bench.json").read_text() == "earlier" and "latency" not in out  # refused before the work
    (tmp_path / "folder.json").mkdir()  # overwrite=true replaces files this run writes, never a folder
    (tmp_path / "folder.json" / "keep.txt").write_text("kept")
    code, out, err = run_main(capsys, "soundstorm.cli.bench", "model=tiny", "backend=cpu", "overwrite=true",
                              f"output_json={tmp_path / 'folder.json'}")
    assert code == 2 and "folder.json is a folder, but this run writes a file of that name" in err, err
    assert (tmp_path / "folder.json" / "keep.txt").read_text() == "kept"


# ------------------------------------------------------------------ ENOSPC during generate: a real full disk
@pytest.fixture
def small_tmpfs(tmp_path):
    """A fresh tmpfs (``mount`` needs root: skipped otherwise); unmounted afterwards."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip() or made.returncode}); needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave_bytes: int) -> Path:
    """Fill the file system ``mount`` up to ``leave_bytes`` of free space (one filler file)."""
    stat = os.statvfs(mount)
    filler = mount / "filler"
    filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave_bytes))
    return filler


def test_generate_on_a_full_disk_says_what_is_complete_and_the_rerun_continues(checkpoint, espeak_tokens,
                                                                              tmp_path, small_tmpfs):
    inputs = [ids_file(tmp_path / "in", f"x{i}") for i in range(3)]
    probe = tmp_path / "probe"
    made = run_cli("soundstorm.cli.generate", f"checkpoint={checkpoint}", f"assets={espeak_tokens}",
                   f"inputs=[{inputs[0]}]", f"out_dir={probe}", *FAST_GEN)
    assert made.returncode == 0, made.stderr[-2000:]
    pair = sum(-(-p.stat().st_size // 4096) * 4096 for p in probe.iterdir())  # in whole tmpfs pages
    out = small_tmpfs / "gen"
    filler = fill(small_tmpfs, pair + pair // 2 + 8192)  # room for one output and a half
    args = ("soundstorm.cli.generate", f"checkpoint={checkpoint}", f"assets={espeak_tokens}", f"out_dir={out}",
            *FAST_GEN)
    full = run_cli(*args, f"inputs=[{','.join(map(str, inputs))}]")
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert "soundstorm-generate: error: stopped by an operating-system error: the disk is full" in full.stderr
    assert f"It stopped at the output of {inputs[1]}. 1 output finished before it is complete, each wav with its " \
           ".codes.npy (x0.wav); no partial output was left" in full.stderr, full.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["x0.codes.npy", "x0.wav"], names  # no orphan .codes.npy, no temporary file, no lock
    left = re.search(r"inputs=\[([^\]]*)\]", full.stderr).group(1)
    assert left == f"{inputs[1]},{inputs[2]}"
    filler.unlink()
    rerun = run_cli(*args, f"inputs=[{left}]")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == [f"x{i}{s}" for i in range(3) for s in (".codes.npy", ".wav")]


# ------------------------------------------------------------------ ENOSPC during prepare
def test_prepare_on_a_full_disk_keeps_finished_shards_and_the_rerun_continues(capsys, espeak_corpus, espeak_tokens,
                                                                             tmp_path, monkeypatch):
    import shutil

    from conftest import PREPARE_SMALL
    from soundstorm.data import prepare as prepare_module

    out = tmp_path / "tokens"
    for kind in ("codec", "semantic"):  # the fitted components of the session's run: no fitting again
        shutil.copytree(espeak_tokens / kind, out / kind)
    real_write, calls = prepare_module._write_shard, []

    def write_shard(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(out / f"{args[1]}.safetensors"))
        return real_write(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "_write_shard", write_shard)
    args = ("soundstorm.cli.prepare", f"input={espeak_corpus}", f"output={out}", *PREPARE_SMALL)
    code, _, err = run_main(capsys, *args)
    assert code == 1 and "the disk is full (No space left on device: " in err, err
    assert "Every shard finished before it" in err and "rerun the same command: it skips the finished shards" in err
    assert (out / "shard-00000.json").is_file() and not (out / "manifest.json").exists()
    monkeypatch.undo()
    code, text, err = run_main(capsys, *args)
    assert code == 0 and "resuming: 1 of 3 shards already done" in text, err
    assert json.loads((out / "manifest.json").read_text())["utterances"]
