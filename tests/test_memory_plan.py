"""The dry-run memory plan: activations measured on the meta device, and the CLI's plan for the TPU recipe."""

from __future__ import annotations

import pytest
import torch

from soundstorm.model import SoundStormConfig
from soundstorm.train.memory_plan import CHECKPOINT_ON_META, memory_plan, measure_activations

from _cli import run_cli
from conftest import requires_encodec


@pytest.mark.skipif(not CHECKPOINT_ON_META, reason="torch < 2.5: checkpointing cannot run on meta (next test)")
def test_activations_scale_with_the_batch_and_checkpointing_keeps_block_inputs_only():
    config = SoundStormConfig.tiny()
    two, four = (measure_activations(config, b, 16, torch.float32) for b in (2, 4))
    assert 1.6 < four.total / two.total <= 2.0  # activations grow with B (weights' casts do not)
    assert two.attention_scores == 2 * config.heads * 16 * 16 * 4 * config.depth  # one [B,H,T,T] fp32 per layer
    halved = measure_activations(config, 2, 16, torch.bfloat16)
    assert halved.total < 0.6 * two.total
    checkpointed = measure_activations(config, 2, 16, torch.float32, checkpointing=True)
    assert checkpointed.attention_scores == 0 and checkpointed.total < two.total / 4
    plan = memory_plan(config, 2, 16, torch.float32, ema=True)
    assert plan["states"]["AdamW moments (fp32, 2 per weight)"] == 8 * plan["num_params"]
    assert len(plan["states"]) == 4 and plan["activations"]["checkpointing, flash attention"] < two.total


@pytest.mark.skipif(CHECKPOINT_ON_META, reason="torch >= 2.5 measures checkpointing (previous test)")
def test_checkpointing_measurement_on_an_old_torch_says_what_it_needs():
    assert measure_activations(SoundStormConfig.tiny(), 2, 16, torch.float32).total > 0
    with pytest.raises(RuntimeError, match=r"needs torch >= 2.5 .* this is torch 2\.4"):
        measure_activations(SoundStormConfig.tiny(), 2, 16, torch.float32, checkpointing=True)


@requires_encodec  # the recipe's codec is EnCodec: its rates and Q come from the architecture
def test_dry_run_prints_the_tpu_recipe_plan_without_data():
    result = run_cli("soundstorm.cli.train", "experiment=paper_librilight_tpu", "dry_run=true")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "batch 4 per device x 2250 frames (30 s at 75 Hz), activations in bfloat16, EMA on" in out, out
    assert "parameters: 345,516,032" in out  # the paper model with EnCodec's Q = 8 heads
    assert "TPU v4 chip, 32 GiB" in out and "GPU, 80 GB" in out
    line = [row for row in out.splitlines() if row.strip().startswith("checkpointing, flash attention")][0]
    assert "fits" in line and "NOT" not in line
