"""Metrics of generated tokens and audio, and the pluggable ASR / speaker-similarity metrics.

Token metrics compare generated codes with the reference per level. Audio metrics take decoded
waveforms. Per-utterance WER / speaker similarity of the unprompted generation against its reference
take a recognizer and a verifier built the one way every plug-in is built (:func:`build_plugin`: a
built-in name, or ``package.module:attr`` named on the command line; :mod:`.asr`, :mod:`.speaker`).
The speech table built on the same plug-ins is :mod:`.speech_table`.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import importlib
from collections import Counter
from typing import Callable

import torch


def token_accuracy_per_level(generated_QT: torch.Tensor, reference_QT: torch.Tensor, start: int = 0) -> list[float]:
    """Fraction of frames ``t >= start`` where the generated id equals the reference, per level."""
    if generated_QT.shape != reference_QT.shape:
        raise ValueError(f"generated codes {tuple(generated_QT.shape)} and reference {tuple(reference_QT.shape)} differ")
    if not 0 <= start < generated_QT.shape[1]:
        raise ValueError(f"start={start} must be in [0, {generated_QT.shape[1]})")
    return (generated_QT[:, start:] == reference_QT[:, start:]).float().mean(dim=1).tolist()


def most_frequent_tokens(codes_list, level: int = 0) -> int:
    """The most frequent id of ``level`` over ``[Q, T]`` code tensors (the unigram baseline's guess)."""
    counts = Counter()
    for codes_QT in codes_list:
        counts.update(codes_QT[level].tolist())
    if not counts:
        raise ValueError("most_frequent_tokens needs at least one non-empty code tensor")
    return counts.most_common(1)[0][0]


def load_callable(path: str | None) -> Callable | None:
    """``"package.module:function"`` → the function (None stays None)."""
    if path in (None, "", "null"):
        return None
    module_name, sep, attr = str(path).partition(":")
    if not sep or not attr:
        raise ValueError(f"expected 'package.module:function', got {path!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot load {path!r}: {err}") from err


def build_plugin(name: str, options: dict | None, *, builtins: dict, protocol: type, wrap: Callable,
                 field: str, method: str):
    """One of ``builtins`` by name, or ``"pkg.module:attr"``: a class (built with ``options``), an object
    that satisfies ``protocol`` (has ``method``), or a plain function wrapped by ``wrap``. Errors name
    ``field`` (the config key the user typed) and its ``_options``."""
    options = dict(options or {})
    if name in builtins:
        return builtins[name](**options)
    if ":" not in str(name):
        raise ValueError(f"{field}={name!r} is unknown; expected one of {sorted(builtins)} or "
                         "'package.module:function'")
    obj = load_callable(name)
    if isinstance(obj, type):
        obj = obj(**options)
    elif options:
        raise ValueError(f"{field}_options={options} given, but {name!r} is not a class")
    if isinstance(obj, protocol):
        return obj
    if callable(obj):
        return wrap(obj)
    raise ValueError(f"{field}={name!r} is neither callable nor has a {method} method")


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, single spaces (jiwer's transforms)."""
    import jiwer

    transform = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                               jiwer.Strip()])
    return transform(str(text))


def error_rates(reference: str, hypothesis: str) -> dict:
    """``{"wer", "cer"}`` of ``hypothesis`` against ``reference``, both normalised first. An empty
    hypothesis scores 1.0 (every reference word deleted); an empty reference is an error."""
    import jiwer

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        raise ValueError(f"cannot score a transcript against an empty reference text (reference={reference!r})")
    if not hyp:
        return {"wer": 1.0, "cer": 1.0}
    return {"wer": float(jiwer.wer(ref, hyp)), "cer": float(jiwer.cer(ref, hyp))}


class WordErrorRate:
    """WER (jiwer, on normalised text: :func:`error_rates`) of a recognizer's transcript of the generated
    audio against the utterance's text. ``recognizer``: anything with ``transcribe(wav_N, sample_rate)``."""

    name = "wer"

    def __init__(self, recognizer):
        import jiwer  # noqa: F401  (fail early when the 'eval' extra is missing)

        self.recognizer = recognizer

    def __call__(self, generated_N: torch.Tensor, reference_N: torch.Tensor, sample_rate: int, text: str) -> float:
        return error_rates(text, self.recognizer.transcribe(generated_N, sample_rate))["wer"]


class SpeakerSimilarity:
    """Cosine similarity of a verifier's embeddings of the generated and the reference audio.
    ``verifier``: anything with ``embed(wav_N, sample_rate) -> [D]``."""

    name = "speaker_similarity"

    def __init__(self, verifier):
        self.verifier = verifier

    def __call__(self, generated_N: torch.Tensor, reference_N: torch.Tensor, sample_rate: int, text: str) -> float:
        a = self.verifier.embed(generated_N, sample_rate).flatten().float()
        b = self.verifier.embed(reference_N, sample_rate).flatten().float()
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0))
