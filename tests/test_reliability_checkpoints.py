"""Nothing silently wrong with checkpoints (issue 25): one check between a checkpoint and what it is used with.

Every consumer loads a SoundStorm checkpoint through :func:`soundstorm.assets.open_checkpoint` (generate,
eval, dialogue, ``DialoguePipeline.from_pretrained``) and a resumed run through
:func:`soundstorm.train.checkpoint.load_checkpoint`; these tests give each a checkpoint that used to be
taken silently or refused with a message no one could act on. The CLI cases run the Hydra entry points
in-process (``run_main``) on the session's espeak-ng token folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from soundstorm import SoundStorm, SoundStormConfig
from soundstorm.assets import load_assets, read_record
from soundstorm.dialogue import DialoguePipeline
from soundstorm.evaluation.config import EvaluationConfig
from soundstorm.evaluation.generation import GenerationEvaluator
from soundstorm.io import load_state_dict, save_state_dict
from soundstorm.t2s import T2SConfig, TextToSemantic
from soundstorm.train import checkpoint as ckpt
from soundstorm.train.loop import NonFiniteLossError

from test_reliability import FAST_GEN, make_checkpoint, other_prepare_run, run_main
from test_train_loop import make_trainer


def poison(path: Path, name: str = "head_bias") -> None:
    """Put a NaN into one tensor of a safetensors file, as a diverged run would have saved it."""
    state = load_state_dict(path)
    state[name] = state[name].clone().fill_(float("nan"))
    save_state_dict(state, path, metadata={"format": "soundstorm/v1"})


@pytest.fixture(scope="module")
def trained(espeak_tokens, tmp_path_factory) -> Path:
    """A checkpoint with EMA weights, for the token folder (its record in config.json, as training writes)."""
    checkpoint = make_checkpoint(tmp_path_factory.mktemp("ckpt_ema"), espeak_tokens)
    model = SoundStorm.from_pretrained(checkpoint)
    save_state_dict({k: v for k, v in model.state_dict().items() if v.is_floating_point()},
                    checkpoint / "ema.safetensors")
    meta = json.loads((checkpoint / "meta.json").read_text())
    meta["files"] = sorted(set(meta["files"]) | {"ema.safetensors"})
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    assert ckpt.is_valid(checkpoint)
    return checkpoint


@pytest.fixture
def ids(tmp_path) -> Path:
    np.save(tmp_path / "ids.npy", np.arange(20) % 32)
    return tmp_path / "ids.npy"


def t2s_checkpoint(folder: Path, tokens: Path | None = None) -> Path:
    """A text-to-semantic model saved in ``folder``; with ``tokens``, recording that token folder as
    ``soundstorm-train-t2s`` now does."""
    TextToSemantic(T2SConfig.tiny(semantic_vocab_size=32)).save_pretrained(folder)
    if tokens is not None:
        config = json.loads((folder / "config.json").read_text())
        config["tokens"] = load_assets(tokens, "data.root").record
        (folder / "config.json").write_text(json.dumps(config))
    return folder


# ------------------------------------------------------------------ 4: dialogue with another prepare run's tokens
def test_dialogue_refuses_a_token_folder_of_another_prepare_run(capsys, trained, espeak_tokens, espeak_corpus,
                                                                tmp_path):
    other = other_prepare_run(espeak_tokens, tmp_path / "other_tokens")
    t2s = t2s_checkpoint(tmp_path / "t2s", espeak_tokens)
    with pytest.raises(ValueError, match="assets=.* holds a codec with the same settings but other fitted codebooks "
                                         "than soundstorm_checkpoint="):
        DialoguePipeline.from_pretrained(t2s, trained, other)
    voices = espeak_corpus.parent / "wavs"
    code, out, err = run_main(capsys, "soundstorm.cli.dialogue", f"t2s_checkpoint={t2s}",
                              f"soundstorm_checkpoint={trained}", f"assets={other}", "script='hello there'",
                              f"voices.A={voices / 'utt00000.wav'}", f"voices.B={voices / 'utt00001.wav'}",
                              "backend=cpu", "evaluation.asr=null", "evaluation.verifier=null",
                              f"out_dir={tmp_path / 'out'}")
    assert code == 2 and "soundstorm-dialogue: error: assets=" in err and "another soundstorm-prepare run?" in err, err
    assert not (tmp_path / "out" / "dialogue.wav").exists()


def test_dialogue_checks_the_text_to_semantic_record_too(trained, espeak_tokens, tmp_path):
    """A text-to-semantic model trained on another tokenizer's ids is refused by its own record."""
    t2s = t2s_checkpoint(tmp_path / "t2s", espeak_tokens)
    assert read_record(t2s)["fingerprints"]["semantic"]
    pipeline = DialoguePipeline.from_pretrained(t2s, trained, espeak_tokens)  # the matching folder is taken
    assert pipeline.soundstorm.config.semantic_vocab_size == 32
    config = json.loads((t2s / "config.json").read_text())
    config["tokens"]["fingerprints"]["semantic"] = "0" * 64
    (t2s / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="other fitted codebooks than t2s_checkpoint="):
        DialoguePipeline.from_pretrained(t2s, trained, espeak_tokens)


# ------------------------------------------------------------------ 5: an EMA file listed in meta.json but missing
def test_a_listed_but_missing_ema_file_is_refused_not_replaced_by_the_raw_weights(capsys, trained, espeak_tokens,
                                                                                  ids, tmp_path):
    damaged = tmp_path / "step_00000001"
    shutil.copytree(trained, damaged)
    (damaged / "ema.safetensors").unlink()
    code, _, err = run_main(capsys, "soundstorm.cli.generate", f"checkpoint={damaged}", f"assets={espeak_tokens}",
                            f"inputs=[{ids}]", f"out_dir={tmp_path / 'a'}", *FAST_GEN)
    assert code == 2 and f"{damaged}/meta.json lists ema.safetensors, but {damaged}/ema.safetensors is missing" in err
    assert "use_ema=false" in err and not list((tmp_path / "a").glob("ids*")), err
    code, _, err = run_main(capsys, "soundstorm.cli.generate", f"checkpoint={damaged}", f"assets={espeak_tokens}",
                            f"inputs=[{ids}]", f"out_dir={tmp_path / 'b'}", "use_ema=false", *FAST_GEN)
    assert code == 0 and (tmp_path / "b" / "ids.wav").is_file(), err  # the raw weights, because they were asked for
    with pytest.raises(FileNotFoundError, match="evaluation.use_ema=false"):
        SoundStorm.from_checkpoint(damaged, ema_field="evaluation.use_ema")


# ------------------------------------------------------------------ 7: non-finite weights are never used
def test_nan_ema_weights_are_refused_by_generation(capsys, trained, espeak_tokens, ids, tmp_path):
    diverged = tmp_path / "step_00000001"
    shutil.copytree(trained, diverged)
    poison(diverged / "ema.safetensors")
    code, _, err = run_main(capsys, "soundstorm.cli.generate", f"checkpoint={diverged}", f"assets={espeak_tokens}",
                            f"inputs=[{ids}]", f"out_dir={tmp_path / 'a'}", *FAST_GEN)
    assert code == 2 and f"{diverged}/ema.safetensors holds NaN or inf in 1 tensors, e.g. ['head_bias']" in err, err


def test_resume_refuses_nan_weights_naming_the_checkpoint_and_the_tensor(tmp_path):
    make_trainer(tmp_path, max_steps=4, ckpt_every=2).fit()
    newest = tmp_path / "checkpoints" / "step_00000004"
    poison(newest / "model.safetensors")
    resumed = make_trainer(tmp_path, max_steps=6, ckpt_every=2)
    with pytest.raises(ValueError, match=r"cannot resume from .*step_00000004: .*step_00000004/model.safetensors holds "
                                         r"NaN or inf in 1 tensors, e.g. \['head_bias'\].*move step_00000004 out of .*"
                                         r"\(resume=auto then continues from step_00000002\)"):
        resumed.fit(ckpt.resolve_resume("auto", tmp_path / "checkpoints"))
    assert ckpt.list_checkpoints(tmp_path / "checkpoints")[-1] == newest  # nothing new was written


def test_the_nonfinite_stop_message_says_what_the_newest_checkpoint_holds(tmp_path, monkeypatch):
    import soundstorm.train.loop as loop

    original = loop.masked_loss

    def nan_loss(*args, **kwargs):
        loss, metrics = original(*args, **kwargs)
        return loss * float("nan"), metrics

    monkeypatch.setattr(loop, "masked_loss", nan_loss)
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written under"):
        make_trainer(tmp_path / "a", max_steps=8, log_every=2, max_nonfinite=1).fit()
    monkeypatch.setattr(loop, "masked_loss", original)
    make_trainer(tmp_path / "b", max_steps=2, ckpt_every=2).fit()
    monkeypatch.setattr(loop, "masked_loss", nan_loss)
    with pytest.raises(NonFiniteLossError, match=r"the newest checkpoint, .*step_00000002, holds finite weights"):
        make_trainer(tmp_path / "b", max_steps=8, log_every=2, max_nonfinite=1).fit(
            ckpt.resolve_resume("auto", tmp_path / "b" / "checkpoints"))


# ------------------------------------------------------------------ errors a user can act on
def test_a_config_whose_dim_disagrees_with_the_weights_names_the_field_and_both_shapes(tmp_path):
    SoundStorm(SoundStormConfig.tiny()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for wrong in (48, 64):  # 64: also the codebook size, so a value alone cannot point at the field
        (tmp_path / "config.json").write_text(json.dumps({**config, "dim": wrong}))
        with pytest.raises(ValueError, match=rf"config.json does not describe .*model.safetensors: tensor .* is \[.*\] "
                                             rf"in the weights but the config implies \[.*\].*; check dim={wrong}: the "
                                             rf"weights were saved with dim=32"):
            SoundStorm.from_pretrained(tmp_path)


def test_a_text_to_semantic_checkpoint_given_to_soundstorm_is_named_as_such(capsys, espeak_tokens, ids, tmp_path):
    t2s = ckpt.save_checkpoint(tmp_path / "t2s", 1, TextToSemantic(T2SConfig.tiny(semantic_vocab_size=32)),
                               {"step": 1})
    code, _, err = run_main(capsys, "soundstorm.cli.generate", f"checkpoint={t2s}", f"assets={espeak_tokens}",
                            f"inputs=[{ids}]", f"out_dir={tmp_path / 'a'}", *FAST_GEN)
    assert code == 2 and "is a text-to-semantic checkpoint" in err and "use it as t2s_checkpoint=" in err, err
    trainer = make_trainer(tmp_path / "run", max_steps=2)
    with pytest.raises(ValueError, match="cannot resume from .*: .* is a text-to-semantic checkpoint .*use it as "
                                         "t2s_checkpoint="):
        trainer.fit(t2s)
    soundstorm = make_checkpoint(tmp_path / "ss", espeak_tokens)
    with pytest.raises(ValueError, match="is a SoundStorm checkpoint .*where a text-to-semantic checkpoint .* is expected"):
        DialoguePipeline.from_pretrained(soundstorm, soundstorm, espeak_tokens)


def test_max_steps_below_the_restored_step_is_refused_with_both_numbers(tmp_path, capsys):
    make_trainer(tmp_path, max_steps=4).fit()
    with pytest.raises(ValueError, match=r"trainer.max_steps=2 is below step 4, where .*step_00000004 stopped; set "
                                         r"trainer.max_steps above 4"):
        make_trainer(tmp_path, max_steps=2).fit(ckpt.resolve_resume("auto", tmp_path / "checkpoints"))
    capsys.readouterr()
    make_trainer(tmp_path, max_steps=4).fit(ckpt.resolve_resume("auto", tmp_path / "checkpoints"))
    assert "nothing to train: the restored checkpoint is at trainer.max_steps=4" in capsys.readouterr().out


def test_window_settings_are_reported_in_the_seconds_the_user_set(capsys, trained, espeak_tokens, ids, tmp_path):
    code, _, err = run_main(capsys, "soundstorm.cli.generate", f"checkpoint={trained}", f"assets={espeak_tokens}",
                            f"inputs=[{ids}]", f"out_dir={tmp_path / 'a'}", "backend=cpu", "sampler=greedy",
                            "window_seconds=2", "window_prompt_seconds=2")
    assert code == 2 and "window_prompt_seconds=2 must be at least 0 and shorter than window_seconds=2" in err, err
    assert "prompt_frames" not in err and "window_frames" not in err, err
    model = SoundStorm.from_pretrained(trained)
    with pytest.raises(ValueError, match=r"evaluation.window_seconds=0.01 is shorter than two semantic frames "
                                         r"\(0.08 s at 25 Hz\)"):
        GenerationEvaluator(model, load_assets(espeak_tokens, "data.root").codec, None,
                            EvaluationConfig(window_seconds=0.01))
