"""Semantic tokenizers: waveform → ids ``[B, S]`` at a rate that divides the codec frame rate."""

from __future__ import annotations

from soundstorm.io import load_component
from soundstorm.semantic.base import SemanticTokenizer, align_lengths, upsample_ratio
from soundstorm.semantic.hubert import HubertKMeans
from soundstorm.semantic.mfcc import MFCCKMeans, MFCCKMeansConfig
from soundstorm.semantic.phones import PhoneTokenizer, PhoneTokenizerConfig

TOKENIZERS = {MFCCKMeans.name: MFCCKMeans, HubertKMeans.name: HubertKMeans, PhoneTokenizer.name: PhoneTokenizer}


def load_tokenizer(directory) -> SemanticTokenizer:
    """Load any tokenizer saved with ``tokenizer.save(directory)`` (class chosen by ``config.json``)."""
    config, _ = load_component(directory, "semantic tokenizer")
    if config["name"] not in TOKENIZERS:
        raise ValueError(f"{directory}: unknown semantic tokenizer {config['name']!r}, expected one of "
                         f"{sorted(TOKENIZERS)}")
    return TOKENIZERS[config["name"]].load(directory)


__all__ = ["SemanticTokenizer", "HubertKMeans", "MFCCKMeans", "MFCCKMeansConfig", "PhoneTokenizer",
           "PhoneTokenizerConfig", "load_tokenizer", "upsample_ratio",
           "align_lengths", "TOKENIZERS"]
