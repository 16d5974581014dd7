"""The text-to-semantic stage: packing and masking, overfitting, generation, weights, the training CLI."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from soundstorm.sampler import SamplerConfig
from soundstorm.t2s import T2SConfig, TextToSemantic, generate_semantic, predict_num_frames
from soundstorm.t2s.align import uniform_durations, with_boundaries
from soundstorm.t2s.batch import PAD, PROMPT, TARGET, TEXT, mask_targets, pack
from soundstorm.t2s.text import encode

MASK = 16


def test_pack_lays_out_text_prompt_target_and_masks_only_targets():
    batch = pack([[5, 6, 7], [8]], [torch.tensor([1, 2]), None], [torch.tensor([3, 4, 5, 6]), 2], MASK)
    assert batch["segment"].tolist() == [[TEXT] * 3 + [PROMPT] * 2 + [TARGET] * 4,
                                         [TEXT] + [TARGET] * 2 + [PAD] * 6]
    assert batch["tokens"][1, 1:3].tolist() == [MASK, MASK]  # a length → all masked
    assert batch["lengths"].tolist() == [9, 3] and batch["context"].tolist() == [5, 1]
    assert batch["target_frames"].tolist() == [4, 2]
    assert torch.allclose(batch["progress"][0, 5:9], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert (batch["progress"][0, 3:5] == 0).all()
    for seed in range(20):
        masked = mask_targets(batch, [(seed, 0, 0), (seed, 0, 1)], MASK)
        assert (masked["loss_mask"] <= (batch["segment"] == TARGET)).all()
        assert (masked["loss_mask"].sum(dim=1) >= 1).all()
        assert (masked["inputs"][~masked["loss_mask"]] == batch["tokens"][~masked["loss_mask"]]).all()
    again = mask_targets(batch, [(3, 0, 0), (3, 0, 1)], MASK)
    assert torch.equal(again["loss_mask"], mask_targets(batch, [(3, 0, 0), (3, 0, 1)], MASK)["loss_mask"])


TEXTS = ["the cat sat on the mat", "a dog ran far away"]


def _overfit(aligned: bool, steps: int = 250):
    torch.manual_seed(0)
    config = T2SConfig.tiny(frontend="chars", dim=64, heads=4, ff_dim=128, aligned=aligned)
    model = TextToSemantic(config)
    generator = torch.Generator().manual_seed(0)
    targets = [torch.randint(0, 16, (20,), generator=generator), torch.randint(0, 16, (14,), generator=generator)]
    prompts = [torch.tensor([1, 2, 3]), None]
    ids = [encode(t, "chars") for t in TEXTS]
    durations = None
    if aligned:  # as T2SDataset(aligned=True) gives them: boundary spaces, one duration per symbol
        ids = [with_boundaries(x) for x in ids]
        durations = [uniform_durations(len(x), t.numel()) for x, t in zip(ids, targets)]
    batch = pack(ids, prompts, targets, config.mask_id, durations)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for step in range(steps):
        batch.update(mask_targets(batch, [(0, step, 0), (0, step, 1)], config.mask_id))
        loss, metrics = model.loss(**batch)
        first = first if first is not None else metrics["token_loss"].item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, targets, prompts, first, metrics


@pytest.fixture(scope="module", params=[False, True], ids=["unaligned", "aligned"])
def overfit(request):  # 250 optimizer steps of a tiny model: the tests that use it are marked slow
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        return _overfit(request.param)


@pytest.mark.slow
def test_overfits_two_utterances_and_regenerates_them(overfit):
    model, targets, prompts, first, metrics = overfit
    uniform = math.log(16)
    assert first > 0.8 * uniform
    assert metrics["token_loss"].item() < 0.2 * uniform
    assert metrics["length_abs_rel_error"].item() < 0.2
    if model.config.aligned:
        assert metrics["duration_loss"].item() < 0.05
    # the length predictor has learnt both lengths, and decoding from all-masked recovers the tokens
    assert [abs(n - t.numel()) <= 2 for n, t in zip(predict_num_frames(model, TEXTS, prompts), targets)] == [True, True]
    out = generate_semantic(model, TEXTS, prompts, num_frames=[t.numel() for t in targets],
                            config=SamplerConfig(steps=(8,)), generator=torch.Generator().manual_seed(0))
    accuracy = [(o == t).float().mean().item() for o, t in zip(out, targets)]
    assert min(accuracy) > 0.8, accuracy


def test_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    model = TextToSemantic(T2SConfig.tiny(frontend="chars"))
    model.save_pretrained(tmp_path / "t2s")
    loaded = TextToSemantic.from_pretrained(tmp_path / "t2s")
    assert loaded.config == model.config
    batch = pack([encode(TEXTS[0], "chars")], [None], [5], model.config.mask_id)
    model.eval()
    args = (batch["tokens"], batch["segment"], batch["progress"], batch["lengths"])
    assert torch.equal(model(*args, batch["aligned"]), loaded(*args, batch["aligned"]))
    with pytest.raises(ValueError, match="aligned_BL"):
        model(*args)  # an aligned model must be told each target position's symbol
    # a checkpoint written before the aligned option (format v1, no 'aligned') is the unaligned model
    old = T2SConfig.tiny(frontend="chars", aligned=False, duration_loss_weight=0.0)
    TextToSemantic(old).save_pretrained(tmp_path / "old")
    config_path = tmp_path / "old" / "config.json"
    saved = json.loads(config_path.read_text())
    del saved["aligned"], saved["duration_loss_weight"]
    config_path.write_text(json.dumps(dict(saved, format="soundstorm-t2s/v1")))
    assert TextToSemantic.from_pretrained(tmp_path / "old").config == old
    config_path.write_text(json.dumps(dict(saved, format="soundstorm-t2s/v2")))  # v2 must name every field
    with pytest.raises(ValueError, match="lacks aligned, duration_loss_weight"):
        TextToSemantic.from_pretrained(tmp_path / "old")
    with pytest.raises(FileNotFoundError, match="config.json"):
        TextToSemantic.from_pretrained(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"format": "soundstorm/v1"}')
    with pytest.raises(ValueError, match="soundstorm-t2s/v2"):
        TextToSemantic.from_pretrained(tmp_path / "bad")


def test_generation_is_seeded_and_checks_its_inputs():
    model = TextToSemantic(T2SConfig.tiny(frontend="chars"))
    kwargs = dict(num_frames=[7, 3], config=SamplerConfig(steps=(4,)))
    a = generate_semantic(model, ["hello", "yes"], [torch.tensor([1, 2]), None], generator=torch.Generator().manual_seed(1), **kwargs)
    b = generate_semantic(model, ["hello", "yes"], [torch.tensor([1, 2]), None], generator=torch.Generator().manual_seed(1), **kwargs)
    assert [x.shape[0] for x in a] == [7, 3] and all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(int(x.max()) < 16 for x in a)
    with pytest.raises(ValueError, match="prompts\\[0\\]"):
        generate_semantic(model, ["hello"], [torch.tensor([99])])
    with pytest.raises(ValueError, match="num_frames"):
        generate_semantic(model, ["hello"], num_frames=[0])
    with pytest.raises(ValueError, match="text must be a non-empty string"):
        generate_semantic(model, [" "])
    with pytest.raises(ValueError, match="frontend"):
        T2SConfig.tiny(frontend="klingon")


def test_train_t2s_cli_on_a_token_folder(espeak_tokens, tmp_path):
    from _cli import run_cli

    out = tmp_path / "run"
    args = (f"data.root={espeak_tokens}", f"out_dir={out}", "t2s_model=tiny", "backend=cpu",
            "backend.options.num_threads=1", "data.batch_size=4", "data.heldout_fraction=0.2", "trainer.max_steps=4",
            "trainer.log_every=2", "trainer.eval_every=4", "trainer.ckpt_every=2", "trainer.progress=false",
            "optim.warmup_steps=1", "logger=none")
    result = run_cli("soundstorm.cli.train_t2s", *args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "step 4 loss=" in result.stdout and "eval/mask_1/token_accuracy=" in result.stdout
    assert "eval/length_abs_rel_error=" in result.stdout
    # the length and duration terms of the loss are logged beside the token loss (means over the window)
    logged = dict(re.findall(r"\b(length_loss|duration_loss)=(\S+)", result.stdout))
    assert set(logged) == {"length_loss", "duration_loss"} and 0 < float(logged["duration_loss"]) < 100
    model = TextToSemantic.from_pretrained(out / "checkpoints" / "step_00000004")
    assert model.config.semantic_vocab_size == 32 and model.config.frontend == "phonemes"
    resumed = run_cli("soundstorm.cli.train_t2s", *args[:-6], "trainer.max_steps=6", "trainer.log_every=2",
                      "trainer.eval_every=100", "trainer.ckpt_every=2", "trainer.progress=false", "logger=none")
    assert resumed.returncode == 0 and "resuming from" in resumed.stdout and "step 6 loss=" in resumed.stdout
    bad = run_cli("soundstorm.cli.train_t2s", f"data.root={espeak_tokens}", f"out_dir={tmp_path / 'bad'}",
                  "t2s_model=tiny", "t2s_model.semantic_vocab_size=99", "logger=none", "backend=cpu")
    assert bad.returncode == 2 and "soundstorm-train-t2s: error: t2s_model.semantic_vocab_size=99" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("overrides", [["t2s_model=tiny"], ["t2s_model=small"], ["t2s_experiment=quickstart_cpu"]])
def test_train_t2s_and_dialogue_configs_compose_and_validate(overrides):
    from hydra import compose, initialize_config_module

    from soundstorm import builders
    from soundstorm.dialogue.builders import build_dialogue_settings
    from soundstorm.t2s import builders as t2s_builders

    with initialize_config_module("soundstorm.configs", version_base="1.3"):
        cfg = compose(config_name="train_t2s", overrides=overrides + ["data.root=/tokens"])
        dialogue = compose(config_name="dialogue", overrides=["t2s_checkpoint=/a", "soundstorm_checkpoint=/b",
                                                              "assets=/t", "script=hi", "voices.A=a.wav",
                                                              "voices.B=b.wav"])
    config = t2s_builders.build_t2s_config({**builders.resolved(cfg.t2s_model), "semantic_vocab_size": 64})
    assert config.semantic_vocab_size == 64
    t2s_builders.build_t2s_evaluation(cfg.evaluation)
    builders.build_trainer_config(cfg.trainer)
    builders.strict(builders.DataConfig, cfg.data, "data")
    settings = build_dialogue_settings(dialogue)
    assert settings.voices == {"A": "a.wav", "B": "b.wav"} and settings.t2s_sampler.steps == 16


def test_dataset_prompts_come_from_another_utterance_of_the_same_speaker(espeak_tokens, tmp_path):
    import json
    import shutil

    from soundstorm.t2s.data import T2SCollate, T2SDataset

    root = tmp_path / "tokens"
    shutil.copytree(espeak_tokens, root)
    manifest = json.loads((root / "manifest.json").read_text())
    for i, utt in enumerate(manifest["utterances"]):
        utt["speaker"] = f"spk{i % 3}" if i < 18 else ""  # the last two have no speaker
    (root / "manifest.json").write_text(json.dumps(manifest))
    data = T2SDataset(root, frontend="chars", prompt_probability=1.0, max_prompt_frames=10)
    for epoch in range(3):
        data.set_epoch(epoch)
        for index in range(len(data)):
            choice = data.prompt_choice(index)
            if index >= 18:
                assert choice is None and data[index]["prompt"] is None
                continue
            other, start, length = choice
            assert other != index and other % 3 == index % 3 and length <= 10
            assert torch.equal(data[index]["prompt"], data.semantic(other)[start:start + length])
    assert data.prompt_choice(4, epoch=1) == data.prompt_choice(4, epoch=1) != data.prompt_choice(4, epoch=2)
    batch = T2SCollate(0, 0, 32)([(i, data[i]) for i in (0, 1, 19)])
    assert batch["num_loss_tokens"] == int(batch["loss_mask"].sum()) > 0
    assert batch["num_frames"] == sum(data.semantic(i).numel() for i in (0, 1, 19))
    manifest["utterances"][0]["text"] = " "
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="has no text"):
        T2SDataset(root, frontend="chars")
    with pytest.raises(ValueError, match="semantic_vocab_size"):
        T2SDataset(espeak_tokens, frontend="chars", semantic_vocab_size=99)
