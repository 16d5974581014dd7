"""save_pretrained / from_pretrained: safetensors + JSON, exact round trip, never unpickle."""

import json
import os
import pickle

import pytest
import torch

from soundstorm import SamplerConfig, SoundStorm, SoundStormConfig, generate


def test_round_trip_gives_identical_outputs_from_any_directory(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = SoundStorm(SoundStormConfig.tiny(dim=48, heads=4)).eval()
    target = tmp_path / "nested" / "ckpt"
    model.save_pretrained(target)
    assert sorted(os.listdir(target)) == ["config.json", "model.safetensors"]
    assert json.loads((target / "config.json").read_text())["dim"] == 48
    monkeypatch.chdir(tmp_path / "nested")  # load by a relative path from elsewhere
    loaded = SoundStorm.from_pretrained("ckpt").eval()
    assert loaded.config == model.config
    semantic = torch.randint(0, 16, (2, 8))
    config = SamplerConfig(steps=(3, 1, 1, 1))
    a = generate(model, semantic, config=config, generator=torch.Generator().manual_seed(1))
    b = generate(loaded, semantic, config=config, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.equal(model(a, semantic), loaded(a, semantic))


def test_a_pickle_in_place_of_the_weights_is_refused(tmp_path):
    model = SoundStorm(SoundStormConfig.tiny())
    model.save_pretrained(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "model.safetensors", "wb") as f:
        pickle.dump({"weights": Evil()}, f)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        SoundStorm.from_pretrained(tmp_path)
    assert not marker.exists(), "nothing was unpickled"
    torch.save(model.state_dict(), tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="safetensors"):
        SoundStorm.from_pretrained(tmp_path)


def test_missing_files_and_mismatched_config_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        SoundStorm.from_pretrained(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="config.json"):
        SoundStorm.from_pretrained(tmp_path)
    SoundStorm(SoundStormConfig.tiny()).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        SoundStorm.from_pretrained(tmp_path)
    SoundStorm(SoundStormConfig.tiny()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "dim": 64}))
    with pytest.raises((ValueError, RuntimeError)):
        SoundStorm.from_pretrained(tmp_path)
