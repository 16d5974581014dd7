"""Audio codecs: waveform ⇄ RVQ tokens ``[B, Q, T]`` (EnCodec 24 kHz and the offline MelRVQ)."""

from __future__ import annotations

from soundstorm.io import load_component
from soundstorm.codecs.base import Codec, check_wav, mel_distance
from soundstorm.codecs.encodec_codec import EncodecCodec
from soundstorm.codecs.melrvq import MelRVQCodec, MelRVQConfig

CODECS = {MelRVQCodec.name: MelRVQCodec, EncodecCodec.name: EncodecCodec}


def load_codec(directory) -> Codec:
    """Load any codec saved with ``codec.save(directory)`` (picks the class from ``config.json``)."""
    config, _ = load_component(directory, "codec")
    if config["name"] not in CODECS:
        raise ValueError(f"{directory}: unknown codec name {config['name']!r}, expected one of {sorted(CODECS)}")
    return CODECS[config["name"]].load(directory)


__all__ = ["Codec", "EncodecCodec", "MelRVQCodec", "MelRVQConfig", "load_codec", "mel_distance", "check_wav", "CODECS"]
