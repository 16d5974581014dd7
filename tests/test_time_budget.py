"""trainer.max_minutes anneals: the schedule ends when the budget ends, whatever the step rate.

The clock is the trainer's step count (each step "takes" one second, or two on the slow machine), so
every plan is known exactly and the tests cannot depend on how fast this machine is.
"""

from __future__ import annotations

import pytest
import torch

from soundstorm.train import checkpoint as ckpt
from soundstorm.train.budget import TimeBudget
from soundstorm.train.final_metrics import read_final_metrics
from test_train_loop import make_trainer, weights


def budgeted(tmp_path, seconds_per_step: float, max_minutes: float = 0.5, max_steps: int = 100, **overrides):
    """A trainer whose clock advances ``seconds_per_step`` per optimizer step."""
    holder = {}
    trainer = make_trainer(tmp_path, max_steps=max_steps, max_minutes=max_minutes, log_every=5, **overrides)
    trainer.budget.clock = lambda: holder["trainer"].step * seconds_per_step
    holder["trainer"] = trainer
    return trainer


@pytest.mark.parametrize("seconds_per_step, expected_steps", [(1.0, 30), (2.0, 15)])
def test_the_schedule_ends_when_the_budget_ends(tmp_path, capsys, seconds_per_step, expected_steps):
    trainer = budgeted(tmp_path, seconds_per_step)  # 30 s of budget; max_steps 100 is never reached
    trainer.fit()
    schedule = trainer.scheduler.lr_lambdas[0]
    assert trainer.step == expected_steps and schedule.total_steps == expected_steps
    assert schedule(trainer.step) == pytest.approx(schedule.min_ratio)  # the cosine ran to its end
    out = capsys.readouterr().out
    assert f"the learning-rate schedule now ends at step {expected_steps}" in out
    assert f"expected {expected_steps} steps at the first estimate" in out and f"made {expected_steps} steps" in out
    saved = ckpt.list_checkpoints(tmp_path / "checkpoints")[-1]
    assert saved.name == f"step_{expected_steps:08d}"
    # the plan's end and the time limit fall on the same step here: final_metrics.json must still say that
    # the schedule ended (run.sh reads it to tell the user whether the limit cut the schedule short)
    final = read_final_metrics(tmp_path)
    assert final["stopped_by"].endswith("(its schedule ended)") and not final["interrupted"]


def test_without_a_budget_the_run_is_reproducible_by_steps(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=8)
    assert trainer.budget is None
    trainer.fit()
    assert trainer.step == 8 and trainer.scheduler.lr_lambdas[0].total_steps == 8


def test_resume_continues_the_planned_schedule_exactly(tmp_path):
    whole = budgeted(tmp_path / "whole", 1.0, ckpt_every=10, keep_last=5)
    whole.fit()
    resumed = budgeted(tmp_path / "resumed", 1.0, ckpt_every=10, keep_last=5)
    resumed.resume(tmp_path / "whole" / "checkpoints" / "step_00000020")
    assert resumed.budget.planned_total == 30 and resumed.scheduler.lr_lambdas[0].total_steps == 30
    assert resumed.budget.spent() == pytest.approx(20.0)  # the seconds of the first session count
    resumed.fit()
    assert resumed.step == whole.step == 30
    for name, value in weights(whole).items():
        assert torch.equal(value, weights(resumed)[name]), name


def test_a_budget_spent_by_earlier_sessions_trains_nothing(tmp_path, capsys):
    first = budgeted(tmp_path, 1.0, ckpt_every=10)
    first.fit()
    again = budgeted(tmp_path, 1.0)
    again.fit(ckpt.resume_candidates("auto", tmp_path / "checkpoints"))
    assert again.step == 30 and "nothing to train" in capsys.readouterr().out


def test_the_plan_is_bounded_by_max_steps_and_follows_the_rate():
    clock = {"now": 0.0}
    budget = TimeBudget(100.0, max_steps=50, clock=lambda: clock["now"])
    assert budget.replan(0) is None and not budget.done(0)  # nothing measured yet
    clock["now"] = 5.0
    budget.start_measuring(5)
    clock["now"] = 10.0
    assert budget.replan(10) == 50  # 1 step/s for 90 s more would be 100 steps: capped at max_steps
    clock["now"] = 60.0
    # slowed: 15 steps in 55 s since measuring began, but 10 in the last 50 s: the slower rate plans
    assert budget.replan(20) == 20 + int(10 / 50 * 40) and budget.planned_rate == pytest.approx(0.2)
    clock["now"] = 100.0
    assert budget.expired() and budget.done(21)


def test_a_machine_that_slows_down_mid_run_still_finishes_its_schedule_in_time(tmp_path, capsys):
    """1 s per step for 10 steps, then 4 s per step (another job started beside the run): planning with
    the average rate alone would end the schedule at step 23, at 62 s of a 60 s budget, cut by the time
    limit; the last window's rate pulls the end in to step 22, at 58 s."""
    holder = {}
    trainer = make_trainer(tmp_path, max_steps=100, max_minutes=1.0, log_every=5)
    trainer.budget.clock = lambda: min(holder["trainer"].step, 10) + 4.0 * max(holder["trainer"].step - 10, 0)
    holder["trainer"] = trainer
    trainer.fit()
    schedule = trainer.scheduler.lr_lambdas[0]
    assert trainer.step == 22 and schedule.total_steps == 22 and trainer.budget.spent() <= 60.0
    assert schedule(trainer.step) == pytest.approx(schedule.min_ratio)
    assert "stopped by its schedule ended" in capsys.readouterr().out
