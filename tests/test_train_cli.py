"""The training, evaluation and generation CLIs on tiny settings, as subprocesses, on real tokens.

Uses the data tests' session fixture ``espeak_tokens`` (20 espeak-ng utterances prepared with a
4-level, 64-code offline codec and a 32-cluster MFCC tokenizer).
"""

from __future__ import annotations

import json
import signal
import subprocess

import numpy as np
import pytest
import torch
from _cli import run_cli, start_python

from soundstorm.train import checkpoint as ckpt

pytestmark = pytest.mark.slow

TINY = ("model=tiny", "backend=cpu",
        "backend.options.num_threads=1", "data.batch_size=4", "data.min_seconds=1", "data.max_seconds=2",
        "data.heldout_fraction=0.2")
TRAIN = TINY + ("trainer.progress=false", "trainer.log_every=2", "trainer.eval_every=3", "optim.warmup_steps=2",
                "evaluation.max_utterances=1", "evaluation.max_batches=1", "evaluation.mask_ratios=[1.0]")


@pytest.fixture(scope="module")
def trained(espeak_tokens, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    result = run_cli("soundstorm.cli.train", f"data.root={espeak_tokens}", f"out_dir={out}", "trainer.max_steps=6",
                 "trainer.ckpt_every=3", *TRAIN)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return out, result


def test_train_writes_checkpoints_logs_and_wandb(trained):
    out, result = trained
    assert "step 6 " in result.stdout and "loss_levels=" in result.stdout and "tokens_per_s=" in result.stdout
    names = [p.name for p in ckpt.list_checkpoints(out / "checkpoints")]
    assert names == ["step_00000003", "step_00000006"]
    state = torch.load(out / "checkpoints" / "step_00000006" / "state.pt", weights_only=True)
    assert state["step"] == 6 and "optimizer" in state and "rng" in state and "batch_in_epoch" in state
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    logged = runs[0].read_bytes()
    for key in ("train/loss_level1", "train/accuracy_level4", "train/lr", "train/grad_norm", "train/tokens_per_s",
                "eval/mask_1/accuracy_level1", "eval/mask_1/nll_level4", "audio/", "spectrogram/"):
        assert key.encode() in logged, key
    assert list((out / "eval" / "step_00000006" / "examples").glob("*.png"))


def test_train_resume_auto_continues(trained, espeak_tokens, tmp_path):
    out, _ = trained
    result = run_cli("soundstorm.cli.train", f"data.root={espeak_tokens}", f"out_dir={out}", "trainer.max_steps=8",
                 "trainer.eval_every=100", *TRAIN[:-4], "logger=none")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout and "step_00000006" in result.stdout
    assert ckpt.list_checkpoints(out / "checkpoints")[-1].name == "step_00000008"


def test_sigterm_writes_checkpoint_and_exits_zero(espeak_tokens, tmp_path):
    out = tmp_path / "run"
    cmd = ["-m", "soundstorm.cli.train", f"data.root={espeak_tokens}", f"out_dir={out}",
           "trainer.max_steps=100000", "trainer.eval_every=100000", "logger=none", *TRAIN[:-4]]
    proc = start_python(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait until training has logged a step
            if line.startswith("step "):
                break
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert "(SIGTERM)" in stdout
    latest = ckpt.resolve_resume("auto", out / "checkpoints")
    assert latest is not None and json.loads((latest / "meta.json").read_text())["step"] >= 2


def test_eval_writes_metrics_examples(trained, espeak_tokens, tmp_path):
    out, _ = trained
    result = run_cli("soundstorm.cli.eval", f"checkpoint={out / 'checkpoints' / 'step_00000006'}",
                 f"data.root={espeak_tokens}", f"out_dir={tmp_path}", *TINY[1:], "evaluation.max_utterances=2",
                 "evaluation.max_batches=1", "evaluation.long_seconds=5", "evaluation.num_examples=1",
                 "evaluation.prompt_seconds=1.0", "sampler=greedy")  # the corpus's sentences can be under 3 s
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("heldout_level1_accuracy", "unigram_level1_accuracy", "mel_distance_generated", "mel_distance_random",
                "mel_distance_prompted", "teacher_forced", "generated_prompted", "long_form_seconds"):
        assert key in metrics, key
    assert len(metrics["teacher_forced"]["mask_1"]["accuracy_per_level"]) == 4
    assert 0.0 <= metrics["heldout_level1_accuracy"] <= 1.0
    assert (tmp_path / "generated_5s.wav").is_file() and (tmp_path / "spectrogram_5s.png").is_file()
    assert list((tmp_path / "examples").glob("*_generated.wav")) and list((tmp_path / "examples").glob("*.png"))


def test_generate_from_tokens_and_audio_with_prompt(trained, espeak_tokens, espeak_corpus, tmp_path):
    out, _ = trained
    np.save(tmp_path / "ids.npy", np.arange(30) % 32)
    wav = sorted((espeak_corpus.parent / "wavs").glob("*.wav"))[0]
    result = run_cli("soundstorm.cli.generate", f"checkpoint={out / 'checkpoints' / 'step_00000006'}",
                 f"assets={espeak_tokens}", f"inputs=[{tmp_path / 'ids.npy'},{wav}]", f"prompt_wav={wav}",
                 "prompt_seconds=0.5", "window_seconds=1.0", "window_prompt_seconds=0.2", f"out_dir={tmp_path / 'gen'}",
                 "backend=cpu", "sampler=greedy")
    assert result.returncode == 0, result.stderr[-3000:]
    codes = np.load(tmp_path / "gen" / "ids.codes.npy")
    assert codes.shape == (4, 60) and codes.max() < 64  # 30 semantic ids × upsample 2, prompt cut off
    assert (tmp_path / "gen" / "ids.wav").is_file() and (tmp_path / "gen" / f"{wav.stem}.wav").is_file()


def test_int8_eval_compares_with_fp32_and_generate_runs(trained, espeak_tokens, tmp_path):
    checkpoint = trained[0] / "checkpoints" / "step_00000006"
    result = run_cli("soundstorm.cli.eval", f"checkpoint={checkpoint}", f"data.root={espeak_tokens}", f"out_dir={tmp_path}",
                 *TINY[1:], "backend.options.dtype=int8", "evaluation.compare_int8=true", "evaluation.max_utterances=1",
                 "evaluation.max_batches=1", "evaluation.long_seconds=0", "evaluation.num_examples=0", "sampler=greedy")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["backend"]["dtype"] == "int8"
    comparison = metrics["int8_vs_float32"]
    assert comparison["num_utterances"] == 1 and len(comparison["agreement_per_level"]) == 4
    assert all(0.0 <= a <= 1.0 for a in comparison["agreement_per_level"])
    assert {"float32", "int8", "mel_distance_int8_minus_float32"} <= set(comparison)
    np.save(tmp_path / "ids.npy", np.arange(30) % 32)
    result = run_cli("soundstorm.cli.generate", f"checkpoint={checkpoint}", f"assets={espeak_tokens}",
                 f"inputs=[{tmp_path / 'ids.npy'}]", f"out_dir={tmp_path / 'gen'}", *TINY[1:3],
                 "backend.options.dtype=int8", "sampler=greedy")
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.load(tmp_path / "gen" / "ids.codes.npy").shape == (4, 60)


def test_training_and_cuda_refuse_int8(espeak_tokens, tmp_path):
    result = run_cli("soundstorm.cli.train", f"data.root={espeak_tokens}", f"out_dir={tmp_path}", "logger=none", *TRAIN,
                 "backend.options.dtype=int8", "trainer.max_steps=1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "backend.options.dtype='int8' on the cpu backend is for inference only" in result.stderr
    assert not (tmp_path / "checkpoints").exists()
    result = run_cli("soundstorm.cli.generate", "checkpoint=unused", "assets=unused", "inputs=[a.npy]", "backend=cuda",
                 "backend.options.dtype=int8")
    assert result.returncode == 2
    assert "backend.options.dtype='int8' is not supported by the cuda backend" in result.stderr


@pytest.mark.parametrize("module,args,message", [
    ("soundstorm.cli.train", ("data.root=/nonexistent/tokens",), "token manifest not found"),
    ("soundstorm.cli.train", ("model=tiny",), "data.root"),
    ("soundstorm.cli.eval", ("checkpoint=/nonexistent/ckpt", "data.root=/nonexistent"), "checkpoint="),
    ("soundstorm.cli.generate", ("checkpoint=/nonexistent/ckpt", "assets=/x", "inputs=[a.npy]"), "checkpoint="),
])
def test_cli_errors_name_the_problem(module, args, message, tmp_path):
    result = run_cli(module, *args, f"out_dir={tmp_path}", "logger=none" if module.endswith("train") else "backend=cpu")
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr


def test_config_typo_fails_loudly(espeak_tokens, tmp_path):
    result = run_cli("soundstorm.cli.train", f"data.root={espeak_tokens}", "model.dimm=3", f"out_dir={tmp_path}")
    assert result.returncode != 0 and "dimm" in result.stderr


def test_token_data_mismatch_is_an_error(espeak_tokens, tmp_path):
    result = run_cli("soundstorm.cli.train", f"data.root={espeak_tokens}", f"out_dir={tmp_path}", "logger=none",
                     *TRAIN, "codec=melrvq", "codec.num_levels=8", "trainer.max_steps=1")
    assert result.returncode == 2
    assert "num_levels" in result.stderr


def test_level_weights_must_match_the_levels(espeak_tokens, tmp_path):
    result = run_cli("soundstorm.cli.train", f"data.root={espeak_tokens}", f"out_dir={tmp_path}", "logger=none",
                     *TRAIN, "trainer.level_weights=[2,1]", "trainer.max_steps=1")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "trainer.level_weights=[2.0, 1.0] must hold 4" in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_torchrun_two_processes_train_and_evaluate(espeak_tokens, tmp_path):
    """DDP through the real CLI: rank 0 logs and checkpoints, evaluation on rank 0 does not hang rank 1."""
    out = tmp_path / "ddp"
    result = run_cli("torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "soundstorm.cli.train",
                     f"data.root={espeak_tokens}", f"out_dir={out}", "trainer.max_steps=4", *TRAIN[:-4],
                     "trainer.eval_every=2", "evaluation.max_utterances=1", "evaluation.max_batches=1",
                     "evaluation.mask_ratios=[1.0]", "data.batch_size=2", check=True)
    assert result.stdout.count("step 4 loss=") == 1  # only rank 0 logs
    assert "2 process(es)" in result.stdout
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step_00000004"]
    assert len(list((out / "wandb").glob("offline-run-*"))) == 1
