"""The CPU quickstart's recipe holds together (#24): the codec that run.sh prepares is the one
configs/experiment/quickstart_cpu.yaml trains (one level weight per level), the level rows it asks
for exist, and a residual codec of fewer levels is the first levels of a larger fit (what
docs/quickstart.md's four-level comparison rests on: the 4-level tokens are the 8-level tokens' first
four levels, so the two recipes differ only in what the model has to learn)."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from soundstorm._kmeans import fit_residual, residual_encode

ROOT = Path(__file__).resolve().parents[1]
RUN_SH = ROOT / "experiments" / "quickstart_cpu" / "run.sh"


def _run_sh_overrides() -> dict[str, str]:
    """``key=value`` of run.sh's CODEC=(...) array and of its eval call's quoted level rows."""
    text = RUN_SH.read_text()
    codec = re.search(r"^CODEC=\((.*)\)$", text, re.M)
    assert codec, "run.sh no longer defines CODEC=(...)"
    pairs = dict(item.split("=", 1) for item in shlex.split(codec.group(1)))
    prefixes = re.search(r'"evaluation\.speech\.level_prefixes=\[([\d, ]+)\]"', text)
    assert prefixes, "run.sh no longer asks for level rows"
    pairs["level_prefixes"] = prefixes.group(1)
    return pairs


def test_run_sh_prepares_the_codec_the_experiment_trains():
    with initialize_config_module("soundstorm.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=quickstart_cpu", "data.root=/t"])
    run = _run_sh_overrides()
    assert run["codec"] == cfg.codec.name == "melrvq"
    assert int(run["codec.num_levels"]) == cfg.codec.num_levels == 4
    assert int(run["codec.codebook_size"]) == cfg.codec.codebook_size
    # the first level's matching (MelRVQConfig.first_level_cepstra): a token folder prepared with 0 does not
    # describe the field, so nothing downstream would notice run.sh and the experiment disagreeing
    assert int(run.get("codec.first_level_cepstra", 0)) == cfg.codec.first_level_cepstra
    assert run["semantic"] == cfg.semantic.name and float(run["semantic.frame_rate"]) == cfg.semantic.frame_rate
    # the step profile builds the model the experiment trains
    spec = importlib.util.spec_from_file_location("profile_step", RUN_SH.parent / "profile_step.py")
    profile_step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile_step)
    assert profile_step.quickstart_config(cfg.codec.num_levels).codebook_size == cfg.codec.codebook_size
    assert len(cfg.trainer.level_weights) == cfg.codec.num_levels
    assert list(cfg.trainer.level_weights) == sorted(cfg.trainer.level_weights, reverse=True)  # coarse first
    prefixes = [int(k) for k in run["level_prefixes"].split(",")]
    assert all(1 <= k < cfg.codec.num_levels for k in prefixes), prefixes  # a row of every level is resynthesis


def test_fewer_residual_levels_are_the_first_levels_of_a_larger_fit():
    torch.manual_seed(0)
    frames_ND = torch.randn(600, 6) * torch.tensor([3.0, 2.0, 1.5, 1.0, 0.5, 0.2])
    eight_QKD = fit_residual(frames_ND, 8, 16, seed=3, max_iter=10)
    four_QKD = fit_residual(frames_ND, 4, 16, seed=3, max_iter=10)
    assert torch.equal(four_QKD, eight_QKD[:4])
    assert torch.equal(residual_encode(frames_ND, four_QKD), residual_encode(frames_ND, eight_QKD)[:4])
    # and a different seed gives a different fit: the equality above is not vacuous
    assert not torch.equal(fit_residual(frames_ND, 4, 16, seed=4, max_iter=10), four_QKD)
    # the same holds with a first level matched on a projection (MelRVQConfig.first_level_cepstra)
    basis_DC = torch.linalg.qr(torch.randn(6, 3))[0]
    eight_QKD = fit_residual(frames_ND, 8, 16, seed=3, max_iter=10, first_basis_DC=basis_DC)
    four_QKD = fit_residual(frames_ND, 4, 16, seed=3, max_iter=10, first_basis_DC=basis_DC)
    assert torch.equal(four_QKD, eight_QKD[:4])
    assert torch.equal(residual_encode(frames_ND, four_QKD, basis_DC), residual_encode(frames_ND, eight_QKD, basis_DC)[:4])


def test_profile_step_script_reports_each_level_count(tmp_path):
    """experiments/quickstart_cpu/profile_step.py (the step profile in docs/quickstart.md) runs the real
    trainer step and accounts for all of its self CPU time."""
    import json
    import subprocess
    import sys

    out = tmp_path / "profile.json"
    result = subprocess.run([sys.executable, str(RUN_SH.parent / "profile_step.py"), "--levels", "4", "2", "--batch", "2",
                             "--seconds", "0.4", "--warmup", "1", "--steps", "1", "--threads", "1", "--codebook-size", "64",
                             "--head", "all-frames", "loss-tokens", "--json", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [(r["num_levels"], r["head"]) for r in report["results"]] == [
        (4, "all-frames"), (4, "loss-tokens"), (2, "all-frames"), (2, "loss-tokens")]
    assert [r["codebook_size"] for r in report["results"]] == [64] * 4
    assert all(0 < r["loss_token_share"] < 1 for r in report["results"])
    for r in report["results"]:
        assert abs(sum(r["self_cpu_share"].values()) - 1.0) < 1e-6 and r["step_s_median"] > 0
        assert r["self_cpu_share"].get("matmul", 0) > 0 and r["self_cpu_share"].get("optimizer", 0) > 0
    assert report["results"][0]["num_parameters"] > report["results"][2]["num_parameters"]  # two more heads
    bad = subprocess.run([sys.executable, str(RUN_SH.parent / "profile_step.py"), "--levels", "0"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode != 0 and "--levels must be >= 1" in bad.stderr


def _speech_row(wer: float, sim_prompt=None, sim_source=0.6) -> dict:
    return {"wer": wer, "cer": wer / 2, "sim_prompt_speaker": sim_prompt, "sim_source_speaker": sim_source,
            "mel_distance": 1.0}


def test_run_sh_ends_by_naming_the_machine_the_steps_and_each_target(tmp_path):
    """The summary run.sh prints last (its PYEOF block, run as run.sh runs it): the CPU by model, family
    and model number (a model name alone, "AMD EPYC", covers CPUs 2x apart), the steps made, and each
    target met or not."""
    import json
    import subprocess
    import sys

    script = re.search(r"<<'PYEOF'\n(.*?)\nPYEOF", RUN_SH.read_text(), re.S)
    assert script, "run.sh no longer ends with its PYEOF summary"
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "final_metrics.json").write_text(json.dumps(
        {"step": 1425, "max_steps": 6000, "stopped_by": "the time limit trainer.max_minutes=25.0 (its schedule ended)"}))
    speech = {"ground_truth": _speech_row(0.12), "resynthesis": _speech_row(0.16), "unprompted": _speech_row(0.30),
              "prompted": _speech_row(0.26, 0.83, 0.83), "cross_speaker": _speech_row(0.28, 0.82, 0.58),
              "cross_speaker_attribution": 0.9}
    (tmp_path / "metrics.json").write_text(json.dumps({"speech": speech}))
    out = subprocess.run([sys.executable, "-", str(tmp_path), "1500", "2000", "ckpt"], input=script.group(1),
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "training made 1425 steps" in out.stdout and "machine: " in out.stdout
    assert "NOT met  prompted WER <= resynthesis + 0.08" in out.stdout  # 0.26 > 0.16 + 0.08
    assert "met      prompted WER <= unprompted + 0.03" in out.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train_steps"] == 1425 and metrics["machine"]["cpu"]


def test_cpu_model_names_family_model_and_speed_flags(tmp_path):
    from soundstorm.bench.runner import cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f\n\nprocessor\t: 1\nmodel name\t: other\n")
    assert cpu_model(str(info)) == "AMD EPYC (family 25, model 17; avx2 avx512f)"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\n")
    assert cpu_model(str(info)) == "Some CPU"
    assert isinstance(cpu_model(str(tmp_path / "missing")), str)


@pytest.mark.parametrize("script", ["quickstart_cpu", "dialogue_cpu"])
def test_run_sh_counts_the_cores_python_is_pinned_to(script, tmp_path):
    """One recognizer worker per core *Python* may use: with PYTHON="taskset -c 0 python" that is one, where
    `nproc` in the unpinned shell counted the machine's (what run.sh used before)."""
    text = (ROOT / "experiments" / script / "run.sh").read_text()
    cores = re.search(r"^cores\(\) \{.*\}$", text, re.M)
    assert cores, f"{script}/run.sh no longer defines cores()"
    assert '"${ASR_WORKERS:-$(cores)}"' in text
    if shutil.which("taskset") is None or not hasattr(os, "sched_getaffinity"):
        pytest.skip("needs taskset and sched_getaffinity (Linux)")
    pinned = tmp_path / "python_on_core_0"
    pinned.write_text(f'#!/bin/sh\nexec taskset -c {min(os.sched_getaffinity(0))} {shlex.quote(sys.executable)} "$@"\n')
    pinned.chmod(0o755)
    for python, expected in ((sys.executable, len(os.sched_getaffinity(0))), (str(pinned), 1)):
        out = subprocess.run(["bash", "-c", f'PY={shlex.quote(python)}; {cores.group(0)}; cores'],
                             capture_output=True, text=True, check=True)
        assert int(out.stdout) == expected, (python, out.stdout, out.stderr)
