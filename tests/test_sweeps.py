"""Sweeps (``soundstorm-train -m``): the held-out objective, each run's final metrics, the job records and
the sweep summary, the per-job out_dir / wandb group resolvers, the missing-plugin error; end to end,
a ``submitit_local`` multirun of two tiny jobs in parallel processes and a 4-trial Optuna search."""

from __future__ import annotations

import csv
import io
import math
import struct
from pathlib import Path

import pytest
import torch
import yaml
from _cli import run_cli, run_python
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict, read_write

from soundstorm import builders, hydra_sweep
from soundstorm.cli import sweep_summary as summary_cli
from soundstorm.evaluation.teacher_forced import pooled
from soundstorm.train.final_metrics import objective, read_final_metrics, write_final_metrics
from soundstorm.train.logging import LoggerConfig
from soundstorm.train.sweep_record import read_job_record, write_job_record
from soundstorm.train.sweep_summary import summarize, write_summary

SUBMITIT = hydra_sweep.plugin_installed("hydra_submitit_launcher")
OPTUNA = hydra_sweep.plugin_installed("hydra_optuna_sweeper")
needs_submitit = pytest.mark.skipif(not SUBMITIT, reason="the sweep extra is not installed (pip install '.[sweep]')")
needs_optuna = pytest.mark.skipif(not OPTUNA, reason="the sweep extra is not installed (pip install '.[sweep]')")


# ---------------------------------------------------------------- the objective and the final metrics
def test_pooled_heldout_loss_weights_tokens_over_ratios_and_levels():
    # [R=2 ratios, (nll sum, correct, tokens), Q=3 levels]; level 3 has no tokens
    sums = torch.tensor([[[2.0, 4.0, 0.0], [1.0, 1.0, 0.0], [2.0, 2.0, 0.0]],
                         [[6.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]])
    out = pooled(sums)
    assert out["loss_per_level"][:2] == [2.0, 2.0] and math.isnan(out["loss_per_level"][2])
    assert out["loss"] == 12.0 / 6.0 and out["accuracy"] == 2.0 / 6.0
    assert out["accuracy_per_level"][:2] == [0.25, 0.5]


def final(tmp_path, metrics=None, step=6, max_steps=6, stopped_by=None, interrupted=False, eval_step=6):
    tmp_path.mkdir()
    write_final_metrics(tmp_path, step, max_steps, stopped_by, interrupted,
                        {"train/loss": 5.0, "train/lr": 1e-3}, {"eval/loss": 4.25} if metrics is None else metrics,
                        eval_step)
    return tmp_path


def test_objective_is_the_final_value_and_refuses_what_is_not(tmp_path):
    assert objective(final(tmp_path / "ok"), "eval/loss") == 4.25
    assert objective(tmp_path / "ok", "train/loss") == 5.0
    with pytest.raises(ValueError, match=r"sweep_objective='eval/los' is not among .* available: eval/loss, "
                                         r"train/loss, train/lr"):
        objective(tmp_path / "ok", "eval/los")
    with pytest.raises(ValueError, match="sweep_objective='eval/loss' is nan"):
        objective(final(tmp_path / "nan", {"eval/loss": float("nan")}), "eval/loss")
    with pytest.raises(ValueError, match=r"stopped at step 3 of 6 \(SIGTERM\)"):
        objective(final(tmp_path / "cut", step=3, stopped_by="SIGTERM", interrupted=True), "eval/loss")
    # a run stopped by its time budget is finished: its number counts
    assert objective(final(tmp_path / "budget", step=3, stopped_by="the time limit trainer.max_minutes=1"),
                     "eval/loss") == 4.25
    with pytest.raises(ValueError, match="no evaluation ran"):
        objective(final(tmp_path / "noeval", {}, eval_step=None), "eval/loss")
    with pytest.raises(FileNotFoundError, match="final_metrics.json"):
        objective(tmp_path / "absent", "eval/loss")


def test_sweep_objective_field_is_checked_before_training(tmp_path):
    assert builders.check_sweep_objective({"sweep_objective": "eval/loss"}) == "eval/loss"
    assert builders.sweep_objective({"sweep_objective": None, "out_dir": str(tmp_path)}) is None
    for bad in ("heldout_loss", 3, ""):
        with pytest.raises(ValueError, match=f"sweep_objective={bad!r} is not a logged metric name"):
            builders.check_sweep_objective({"sweep_objective": bad})


@pytest.mark.parametrize("eval_at_end,evaluated,eval_step", [(True, [3, 5], 5), (False, [3], 3)])
def test_trainer_evaluates_at_the_last_step_and_writes_final_metrics(tmp_path, eval_at_end, evaluated, eval_step):
    from test_train_loop import make_trainer

    trainer = make_trainer(tmp_path, max_steps=5, eval_every=3, eval_at_end=eval_at_end)
    calls = []

    def evaluate(model, step):
        calls.append(step)
        return {"eval/loss": 10.0 - step, "eval/accuracy_per_level": [0.1 * step, 0.2]}

    trainer.evaluate = evaluate
    trainer.fit()
    assert calls == evaluated
    record = read_final_metrics(tmp_path)
    assert (record["step"], record["max_steps"], record["eval_step"], record["stopped_by"]) == (5, 5, eval_step, None)
    assert record["metrics"]["eval/loss"] == 10.0 - eval_step
    assert record["metrics"]["eval/accuracy_level1"] == pytest.approx(0.1 * eval_step)
    assert math.isfinite(record["metrics"]["train/loss"])


# ---------------------------------------------------------------- the summary
def job(root: Path, num: int, lr: str, status: str, metrics: dict | None = None, step=6, eval_step=6,
        stopped_by=None, **record):
    """A job folder as a sweep leaves it: the record, and the run's final metrics when given."""
    job_dir = root / str(num)
    write_job_record(job_dir, {"job": num, "overrides": ["data.root=/t", "model=tiny", f"optim.lr={lr}"],
                               "out_dir": str(job_dir), "status": status, "objective": None, "error": None,
                               **record})
    if metrics is not None:
        write_final_metrics(job_dir, step, 6, stopped_by, False, {}, metrics, eval_step)
    return job_dir


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    level = {"eval/accuracy_level1": 0.5, "eval/accuracy_level2": 0.25}
    job(root, 0, "0.001", "completed", {"eval/loss": 4.123456, "eval/accuracy": 0.375, **level}, objective=4.123456)
    job(root, 1, "0.003", "failed", error="SweepJobFailed: soundstorm-train exit code 3 (too many non-finite steps)")
    job(root, 2, "0.01", "running")  # killed: no end record, no metrics
    job(root, 3, "0.02", "completed", out_dir=str(root / "3" / "moved"))  # its run folder is gone
    elsewhere = job(tmp_path / "elsewhere", 4, "0.04", "completed", {"eval/loss": 2.0, "eval/accuracy": 0.9})
    job(root, 4, "0.04", "completed", out_dir=str(elsewhere), objective=2.0)  # e.g. sweep_lr_size's outputs/sweep/...
    (elsewhere / "wandb_run_id.txt").write_text("abc123")
    (root / "0" / "wandb_run_id.txt").write_text("not an id; <script>")
    job(root, 10, "0.03", "completed", {"eval/loss": 3.5, "eval/accuracy": 0.5, **level}, step=4, eval_step=2,
        stopped_by="the time limit trainer.max_minutes=1", objective=3.5)
    (root / "11").mkdir()
    (root / "11" / "sweep_job.json").write_text('{"format": "soundstorm-sweep-job/v1", "job": 11, "status": "hacked"}')
    (root / "12").mkdir()
    (root / "12" / "sweep_job.json").write_text('{"pad": "' + "x" * 1_000_001 + '"}')  # not read into memory
    tag = f"!!python/object/apply:os.mkdir ['{tmp_path / 'pwned'}']"  # what yaml.load (not safe_load) would run
    (root / "optimization_results.yaml").write_text(f"best_value: {tag}\n")
    return root


def parse_markdown_table(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in lines]


def test_summary_rows_say_what_happened_to_every_job(sweep, tmp_path):
    markdown, table_csv = summarize(sweep)
    rows = list(csv.DictReader(io.StringIO(table_csv)))
    status = {r["job"]: r["status"] for r in rows}
    assert [r["job"] for r in rows] == ["0", "1", "2", "3", "4", "10", "", ""]  # by number; unreadable ones last
    assert status["0"] == "completed"
    assert status["1"] == "failed: SweepJobFailed: soundstorm-train exit code 3 (too many non-finite steps)"
    assert status["2"].startswith("no end record: still running, or killed")
    assert status["3"] == f"completed, no final_metrics.json in {sweep / '3' / 'moved'}"
    # a run folder outside the sweep folder is read only when the caller names a root above it
    assert status["4"].startswith(f"completed, out_dir {tmp_path / 'elsewhere' / '4'} is outside the sweep folder")
    assert rows[4]["heldout_loss"] == "" and rows[4]["wandb_run"] == ""
    trusted = list(csv.DictReader(io.StringIO(summarize(sweep, runs_root=tmp_path)[1])))[4]
    assert (trusted["status"], trusted["heldout_loss"], trusted["wandb_run"]) == ("completed", "2.0", "abc123")
    assert status["10"] == ("completed; stopped at step 4 of 6 (the time limit trainer.max_minutes=1); held-out "
                            "numbers from step 2")
    unreadable = [r["status"] for r in rows if not r["job"]]
    assert "status='hacked' is not valid" in unreadable[0] and "holds 1,000,012 bytes" in unreadable[1]
    assert all(s.startswith("unreadable job record") for s in unreadable)
    first = rows[0]
    assert (first["optim.lr"], float(first["heldout_loss"]), float(first["accuracy_level2"])) == \
        ("0.001", 4.123456, 0.25)
    assert first["step"] == "6" and first["out_dir"] == "0" and rows[1]["heldout_loss"] == ""
    assert first["wandb_run"] == ""  # a run id file that does not hold an id is left out
    assert "data.root" not in rows[0] and "Overrides of every job: `data.root=/t` `model=tiny`" in markdown
    assert "lowest 2, highest 4.12346" in markdown
    # data from run folders is parsed safely: the YAML tag is refused, not executed
    assert "optimization_results.yaml is not valid YAML" in markdown and not (tmp_path / "pwned").exists()


def test_summary_markdown_and_csv_hold_the_same_table(sweep):
    markdown, table_csv = summarize(sweep)
    md = parse_markdown_table(markdown)
    rows = list(csv.reader(io.StringIO(table_csv)))
    assert md[0] == rows[0] and len(md) == len(rows) > 2
    numbers = 0
    for md_row, csv_row in zip(md[1:], rows[1:]):
        assert len(md_row) == len(csv_row)
        for shown, exact in zip(md_row, csv_row):
            try:
                value = float(exact)
            except ValueError:
                assert shown == exact
                continue
            numbers += 1
            assert float(shown) == pytest.approx(value, rel=1e-3)
    assert numbers >= 10


def test_summary_files_and_cli(sweep, capsys):
    markdown = write_summary(sweep)
    assert (sweep / "summary.md").read_text() == markdown
    assert (sweep / "summary.csv").read_text() == summarize(sweep)[1]
    summary_cli.main([str(sweep)])
    assert capsys.readouterr().out == markdown
    summary_cli.main([str(sweep), "--runs-root", str(sweep.parent)])
    assert "| 4 | completed | 0.04 |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        summary_cli.main([str(sweep / "missing")])
    assert exit_info.value.code == 2
    assert "soundstorm-sweep-summary: error: sweep folder" in capsys.readouterr().err
    (sweep / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no sweep_job.json under"):
        summarize(sweep / "empty")


# ---------------------------------------------------------------- resolvers, callback, plugins
@pytest.fixture
def hydra_job(tmp_path):
    """Compose ``train`` and make it the current Hydra job (multirun job 3 of sweep ``my_sweep`` when asked)."""
    def make(multirun: bool, overrides=()):
        with initialize_config_module("soundstorm.configs", version_base="1.3"):
            cfg = compose("train", overrides=["data.root=/t", f"hydra.sweep.dir={tmp_path / 'my_sweep'}", *overrides],
                          return_hydra_config=True)
        with read_write(cfg), open_dict(cfg):
            cfg.hydra.mode = RunMode.MULTIRUN if multirun else RunMode.RUN
            cfg.hydra.job.num = 3
            cfg.hydra.runtime.output_dir = str(tmp_path / "my_sweep" / "3")
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield make
    HydraConfig.instance().cfg = None


def test_multirun_jobs_get_their_own_out_dir_and_the_sweeps_wandb_group(hydra_job, tmp_path):
    single = hydra_job(multirun=False)
    assert (single.out_dir, single.logger.group, single.logger.dir) == ("outputs/train", None, "outputs/train")
    job3 = hydra_job(multirun=True)
    assert job3.out_dir == str(tmp_path / "my_sweep" / "3") and job3.logger.dir == job3.out_dir
    assert job3.logger.group == "my_sweep"
    assert builders.strict(LoggerConfig, job3.logger, "logger").group == "my_sweep"
    assert hydra_job(multirun=True, overrides=["out_dir=/elsewhere"]).out_dir == "/elsewhere"


def test_callback_records_jobs_and_a_shared_out_dir_is_refused(hydra_job, tmp_path):
    from hydra.core.utils import JobReturn, JobStatus

    callback = hydra_sweep.SweepCallback()
    single = hydra_job(multirun=False)
    callback.on_job_start(single)
    assert not (tmp_path / "my_sweep").exists()  # a single run writes nothing
    cfg = hydra_job(multirun=True, overrides=["optim.lr=0.01"])
    callback.on_job_start(cfg)
    start = read_job_record(tmp_path / "my_sweep" / "3" / "sweep_job.json")
    assert (start["job"], start["status"], start["out_dir"]) == (3, "running", str(tmp_path / "my_sweep" / "3"))
    assert "optim.lr=0.01" in start["overrides"] and start["objective_name"] == "eval/loss" and start["started"]
    callback.on_job_end(cfg, JobReturn(status=JobStatus.FAILED, _return_value=ValueError("boom")))
    end = read_job_record(tmp_path / "my_sweep" / "3" / "sweep_job.json")
    assert (end["status"], end["error"], end["started"]) == ("failed", "ValueError: boom", start["started"])
    assert "failed: ValueError: boom" in (tmp_path / "my_sweep" / "summary.md").read_text()  # refreshed per job
    hydra_sweep.check_own_out_dir(cfg.out_dir)  # its own record is no conflict
    job(tmp_path / "my_sweep", 0, "0.1", "completed", out_dir=str(tmp_path / "shared"))
    with pytest.raises(ValueError, match="is also the out_dir of job 0 of this sweep"):
        hydra_sweep.check_own_out_dir(tmp_path / "shared")


def test_missing_plugin_names_the_extra(monkeypatch):
    if SUBMITIT and OPTUNA:
        assert hydra_sweep.missing_plugin(["hydra/launcher=submitit_slurm", "experiment=optuna_tiny"]) is None
    monkeypatch.setattr(hydra_sweep, "plugin_installed", lambda module: False)
    message = hydra_sweep.missing_plugin(["data.root=x", "hydra/launcher=submitit_slurm"])
    assert "hydra/launcher=submitit_slurm needs the Hydra plugin hydra-submitit-launcher" in message
    assert "pip install 'soundstorm[sweep]'" in message
    assert "hydra/sweeper=optuna (through experiment=optuna_tiny) needs the Hydra plugin hydra-optuna-sweeper" in \
        hydra_sweep.missing_plugin(["experiment=optuna_tiny"])
    assert "experiment=sweep_slurm" in hydra_sweep.missing_plugin(["experiment=sweep_slurm"])
    assert hydra_sweep.missing_plugin(["experiment=sweep_lr_size", "optim.lr=1e-3,2e-3",
                                       "hydra/launcher=basic"]) is None


HIDE_PLUGINS = """
import runpy, sys
try:
    import hydra_plugins
    hydra_plugins.__path__ = []  # what Hydra's plugin scan walks: as if no plugin were installed
except ModuleNotFoundError:
    pass
sys.argv = ["soundstorm-train", *sys.argv[2:]]
if sys.argv[1] == "hydra-only":  # Hydra's own behaviour, without the CLI's check
    del sys.argv[1]
    from soundstorm.cli.train import train_task
    train_task()
runpy.run_module("soundstorm.cli.train", run_name="__main__")
"""


@pytest.mark.slow  # child processes
def test_without_the_extra_the_cli_says_which_to_install(tmp_path):
    for args in (["-m", "hydra/launcher=submitit_slurm"], ["experiment=optuna_tiny"]):
        result = run_python(["-c", HIDE_PLUGINS, "x", *args, "data.root=/nowhere"], cwd=tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.startswith("soundstorm-train: error: ")
        assert "pip install 'soundstorm[sweep]'" in result.stderr
    hydra_only = run_python(["-c", HIDE_PLUGINS, "x", "hydra-only", "-m", "hydra/launcher=submitit_slurm",
                             "data.root=/nowhere"], cwd=tmp_path)
    # a composition error: exit 2 (soundstorm.cli._hydra), with Hydra's message
    assert hydra_only.returncode == 2 and "Could not find 'hydra/launcher/submitit_slurm'" in hydra_only.stderr
    assert "pip install" not in hydra_only.stderr  # Hydra alone does not say what to install
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- end to end
def wandb_run_groups(run_file: Path) -> list[str]:
    """The group of each run record in an offline ``run-*.wandb`` file (LevelDB-log framing: 7-byte
    header, 32 KiB blocks, records split into FULL/FIRST/MIDDLE/LAST chunks of ``Record`` protobufs)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunk, groups, block = run_file.read_bytes(), 7, b"", [], 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "run":
                groups.append(record.run.run_group)
    return groups


@pytest.mark.slow
@needs_submitit
def test_submitit_local_runs_two_tiny_jobs_in_parallel(espeak_tokens, tmp_path):
    from test_train_cli import TRAIN

    sweep_dir = tmp_path / "lr_sweep"
    result = run_cli("soundstorm.cli.train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                     f"hydra.sweep.dir={sweep_dir}", f"data.root={espeak_tokens}", *TRAIN, "trainer.max_steps=4",
                     "optim.lr=1e-3,3e-3", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [read_job_record(sweep_dir / str(n) / "sweep_job.json") for n in (0, 1)]
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert records[0]["pid"] != records[1]["pid"]  # two processes, running at the same time
    assert records[0]["started"] <= records[1]["finished"] and records[1]["started"] <= records[0]["finished"]
    for n, record in enumerate(records):
        out = sweep_dir / str(n)
        assert record["out_dir"] == str(out) and (out / "checkpoints" / "step_00000004").is_dir()
        assert record["objective"] == read_final_metrics(out)["metrics"]["eval/loss"]
        runs = list(out.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(runs) == 1 and wandb_run_groups(runs[0]) == ["lr_sweep"]
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert [(r["job"], r["optim.lr"], r["status"], r["step"]) for r in rows] == [("0", "0.001", "completed", "4"),
                                                                              ("1", "0.003", "completed", "4")]
    assert all(float(r["heldout_loss"]) > 0 and r["accuracy_level4"] for r in rows)
    assert "| job | status | optim.lr |" in result.stdout  # printed at the end of the multirun


@pytest.mark.slow
@needs_optuna
def test_optuna_search_of_four_trials_on_the_tiny_preset(espeak_tokens, tmp_path):
    from test_train_cli import TRAIN

    sweep_dir = tmp_path / "search"
    result = run_cli("soundstorm.cli.train", "experiment=optuna_tiny", "hydra.sweeper.n_trials=4",
                     f"hydra.sweep.dir={sweep_dir}", f"data.root={espeak_tokens}", *TRAIN, "trainer.max_steps=4",
                     cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"] and {r["status"] for r in rows} == {"completed"}
    assert {"optim.lr", "model.dim", "model.depth"} <= set(rows[0])
    assert len({(r["optim.lr"], r["model.dim"], r["model.depth"]) for r in rows}) == 4
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    losses = [float(r["heldout_loss"]) for r in rows]
    assert best["best_value"] == min(losses) == min(float(r["objective"]) for r in rows)
    winner = rows[losses.index(min(losses))]
    assert str(best["best_params"]["optim.lr"]) == winner["optim.lr"]
    assert "Optuna (optimization_results.yaml): best value" in (sweep_dir / "summary.md").read_text()

