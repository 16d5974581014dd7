"""Shared fixtures for the data tests: a small espeak-ng corpus and its prepared tokens.

Both are session-scoped and built through the real CLIs (as subprocesses), once per test run; a
test that uses either is marked ``slow`` here (``make test-fast`` runs ``-m "not slow"``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch

from _cli import REPO_ROOT, run_cli  # noqa: F401  (re-exported for the data tests)


@contextlib.contextmanager
def single_thread():
    """One torch and one OpenMP/BLAS thread (k-means and DSP oversubscribe badly on a busy 2-core box)."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


SLOW_FIXTURES = {"espeak_corpus", "espeak_tokens"}
HAS_TORCH_XLA = importlib.util.find_spec("torch_xla") is not None


def requires(module: str, extra: str):
    """Skip a test where the optional ``module`` (installed by ``soundstorm[extra]``) is missing."""
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"{module} is not installed (pip install 'soundstorm[{extra}]')")


requires_encodec = requires("encodec", "encodec")
requires_torchaudio = requires("torchaudio", "hubert")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "xla" in item.keywords and not HAS_TORCH_XLA:
            item.add_marker(pytest.mark.skip(reason="torch_xla is not installed (pip install 'soundstorm[xla]')"))
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def espeak_corpus(tmp_path_factory) -> Path:
    """20 espeak-ng utterances made by ``soundstorm-synth-corpus``; returns the JSONL manifest path."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (sudo apt-get install espeak-ng)")
    out = tmp_path_factory.mktemp("espeak_corpus")
    result = run_cli("soundstorm.cli.synth_corpus", "--out", str(out), "--num-utterances", "20", "--seed", "0")
    assert result.returncode == 0, result.stderr
    return out / "manifest.jsonl"


def load_corpus_wavs(manifest: Path, sample_rate: int) -> list[torch.Tensor]:
    """The corpus's waveforms, mono float32, resampled to ``sample_rate``."""
    from soundstorm.dsp import resample

    wavs = []
    for line in manifest.read_text().splitlines():
        data, rate = sf.read(str(manifest.parent / json.loads(line)["path"]), dtype="float32")
        wavs.append(resample(torch.from_numpy(data), rate, sample_rate))
    return wavs


PREPARE_SMALL = ("codec=melrvq", "codec.num_levels=4", "codec.codebook_size=64", "semantic=mfcc_kmeans",
                 "semantic.vocab_size=32", "shard_size=8", "batch_size=4", "progress=false", "num_threads=1")


@pytest.fixture(scope="session")
def espeak_tokens(espeak_corpus, tmp_path_factory) -> Path:
    """The corpus prepared by ``soundstorm-prepare`` with small offline codec/tokenizer; the token folder."""
    out = tmp_path_factory.mktemp("espeak_tokens") / "tokens"
    result = run_cli("soundstorm.cli.prepare", f"input={espeak_corpus}", f"output={out}", *PREPARE_SMALL)
    assert result.returncode == 0, result.stderr + result.stdout
    return out
