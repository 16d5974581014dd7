"""experiments/quickstart_cpu/prompt_probe.py (the attention figures of docs/quickstart.md, #24): its
recording kernel computes the attention the model runs with, every share it reports is a share, and the
model's own kernels are back afterwards."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from soundstorm.conformer import SelfAttention
from soundstorm.attention import sdpa_attention
from test_reliability import make_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "quickstart_cpu" / "prompt_probe.py"


def _load():
    spec = importlib.util.spec_from_file_location("prompt_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_recording_kernel_is_the_models_attention():
    probe = _load()
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    attend = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    attend[1, ..., 5:] = False
    recorder = probe.RecordingAttention()
    assert torch.allclose(recorder(q, k, v, attend, 0.0), sdpa_attention(q, k, v, attend, 0.0), atol=1e-5)
    weights = recorder.weights[0]
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 7)) and weights[1, ..., 5:].abs().max() == 0


def test_probe_reports_shares_on_a_checkpoint_and_restores_the_kernels(espeak_tokens, tmp_path):
    probe = _load()
    checkpoint = make_checkpoint(tmp_path / "ckpt", espeak_tokens)
    out = tmp_path / "probe.json"
    result = probe.main([str(checkpoint), str(espeak_tokens), "--utterances", "5", "--prompt-seconds", "0.5",
                         "--heldout-fraction", "0.3", "--json", str(out)])
    assert json.loads(out.read_text())["targets"] == result["targets"]
    assert 1 <= result["targets"] <= 5  # every held-out target, at most 5 (the plan scores each once)
    assert 0 < result["prompt_share"] < 1 and 0 < result["same_id_frames"] <= 1
    layers = len(result["attention_to_prompt"])
    assert layers >= 1 and len(result["attention_to_prompt_codes_masked"]) == len(result["same_id_share"]) == layers
    for key in ("attention_to_prompt", "attention_to_prompt_codes_masked", "same_id_share"):
        assert all(0 <= x <= 1 + 1e-6 for x in result[key]), (key, result[key])
    frames = {key: n for key, (_, n) in result["level1_accuracy"].items()}
    assert frames["prompted_id_in_prompt"] == frames["unprompted_id_in_prompt"] > 0
    assert frames["prompted_id_in_prompt"] + frames["prompted_id_not_in_prompt"] > 0
    assert all(0 <= v <= 1 for v in result["codes_from_prompt"].values())

    # probe() hands the model back with its own kernels (SDPA here), not the recorder
    from soundstorm.assets import load_assets, open_checkpoint
    model, _ = open_checkpoint(checkpoint, load_assets(espeak_tokens, "tokens"), assets_field="tokens", use_ema=False)
    before = [m.kernel for m in model.modules() if isinstance(m, SelfAttention)]
    manifest = probe.TokenManifest.load(espeak_tokens)
    train_ids, heldout_ids = probe.split_utterances(manifest.utterances, 0.3, 0)
    dataset = probe.TokenDataset(espeak_tokens, utt_ids=train_ids + heldout_ids, manifest=manifest,
                                 model_config=model.config)
    index = {u["utt_id"]: i for i, u in enumerate(dataset.utterances)}
    items = probe.plan_speech_items(dataset.utterances, heldout_ids, 2, 0)
    again = probe.probe(model, lambda u: dataset.utterance(index[u]), items, 24)
    assert [m.kernel for m in model.modules() if isinstance(m, SelfAttention)] == before
    assert len(again["attention_to_prompt"]) == layers

    with pytest.raises(ValueError, match="prompt_frames=3 must be a positive multiple of semantic_upsample=2"):
        probe.probe(model, lambda u: dataset.utterance(index[u]), items, 3)
    with pytest.raises(ValueError, match="--utterances must be >= 1"):
        probe.main([str(checkpoint), str(espeak_tokens), "--utterances", "0"])
