"""The codec/semantic config groups build the right objects, and bad configs fail loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import requires_encodec, requires_torchaudio
from soundstorm.builders import build_codec, build_semantic
from soundstorm.codecs import EncodecCodec, MelRVQCodec
from soundstorm.semantic import HubertKMeans, MFCCKMeans

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def group(path: str, **overrides):
    return OmegaConf.merge(OmegaConf.load(CONFIGS / f"{path}.yaml"), overrides)


def test_config_groups_build_components(tmp_path):
    melrvq = build_codec(group("codec/melrvq"))
    assert isinstance(melrvq, MelRVQCodec) and (melrvq.num_levels, melrvq.frame_rate) == (12, 50.0)
    mfcc = build_semantic(group("semantic/mfcc_kmeans"))
    assert isinstance(mfcc, MFCCKMeans) and (mfcc.frame_rate, mfcc.vocab_size) == (25.0, 1024)


@requires_encodec
def test_encodec_config_group_builds_the_codec():
    encodec = build_codec(group("codec/encodec_24khz", pretrained=False))
    assert isinstance(encodec, EncodecCodec) and (encodec.num_levels, encodec.frame_rate) == (8, 75.0)


@requires_torchaudio
def test_hubert_config_group_builds_the_tokenizer():
    hubert = build_semantic(group("semantic/hubert_kmeans", pretrained=False, layer=1))
    assert isinstance(hubert, HubertKMeans) and hubert.frame_rate == 25.0


def test_bad_configs_fail_loudly(tmp_path):
    with pytest.raises(ValueError, match="num_level"):
        build_codec(group("codec/melrvq", num_level=4))
    with pytest.raises(ValueError, match="codec.name='soundstream'"):
        build_codec(group("codec/melrvq", name="soundstream"))
    with pytest.raises(ValueError, match="MelRVQConfig.num_levels"):
        build_codec(group("codec/melrvq", num_levels=0))
    with pytest.raises(ValueError, match="vocab_size"):
        build_semantic(group("semantic/mfcc_kmeans", vocab_size="many"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_codec(group("codec/melrvq", pretrained_dir=str(tmp_path)))
