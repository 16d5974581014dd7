"""Int8 against float32 on the same utterances: token agreement per level and the speech metrics of each.

Int8 inference (:mod:`soundstorm.quantize`) is only worth having if it generates what the float32
model generates. For each held-out utterance both models decode the same semantic tokens with the
same sampler and seed (use a greedy sampler to see the quantisation effect alone). Reported:

* ``agreement_per_level``: fraction of frames where the int8 codes equal the float32 codes, per level;
* for each dtype: token accuracy per level against the reference and the mel distance of the decoded
  audio to the codec's reconstruction of the reference (as :mod:`soundstorm.evaluation.generation`),
  plus any extra metric (WER, speaker similarity) the evaluation is configured with;
* ``mel_distance_int8_minus_float32``.

Run from the command line with ``soundstorm-eval ... backend=cpu evaluation.compare_int8=true``.
"""

from __future__ import annotations

import copy

import torch

from soundstorm.codecs.base import mel_distance
from soundstorm.evaluation.metrics import token_accuracy_per_level
from soundstorm.longform import generate_windowed
from soundstorm.sampler import codebooks_for
from soundstorm.quantize import quantize_int8

DTYPES = ("float32", "int8")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _weighted(rows: list[list[float]], weights: list[int]) -> list[float]:
    total = sum(weights)
    return [sum(row[q] * w for row, w in zip(rows, weights)) / total for q in range(len(rows[0]))]


@torch.no_grad()
def compare_int8(model, codec, sampler_config, utterances: list[dict], *, window_frames: int, prompt_frames: int,
                 max_utterances: int = 8, seed: int = 0, extra_metrics: list = ()) -> dict:
    """Generate every utterance (items of ``TokenDataset.utterance``) with ``model`` (float32, CPU) and
    with an int8 copy of it; return agreement and per-dtype metrics (see the module docstring)."""
    if not utterances:
        raise ValueError("the int8 comparison needs at least one held-out utterance")
    models = {"float32": model.eval(), "int8": quantize_int8(copy.deepcopy(model))}
    sr = codec.sample_rate
    agreement, frames = [], []
    codebooks = codebooks_for(sampler_config, codec)
    per_dtype = {name: {"accuracy": [], "mel_distance": [], **{m.name: [] for m in extra_metrics}} for name in DTYPES}
    for index, utt in enumerate(utterances[:max_utterances]):
        ref_QT = utt["codes"]
        ref_wav = codec.decode(ref_QT[None].long())[0].detach().cpu()
        codes = {}
        for name, member in models.items():
            codes[name] = generate_windowed(member, utt["semantic"], window_frames=window_frames,
                                            prompt_frames=prompt_frames, prompt_QT=None, config=sampler_config,
                                            generator=torch.Generator().manual_seed(seed + index),
                                            codebooks=codebooks)
            wav = codec.decode(codes[name][None].long())[0].detach().cpu()
            scores = per_dtype[name]
            scores["accuracy"].append(token_accuracy_per_level(codes[name], ref_QT))
            scores["mel_distance"].append(mel_distance(wav, ref_wav, sr))
            for metric in extra_metrics:
                scores[metric.name].append(metric(wav, ref_wav, sr, utt.get("text", "")))
        agreement.append(token_accuracy_per_level(codes["int8"], codes["float32"]))
        frames.append(ref_QT.shape[1])
    out = {"num_utterances": len(frames), "agreement_per_level": _weighted(agreement, frames)}
    for name, scores in per_dtype.items():
        out[name] = {"accuracy_per_level": _weighted(scores.pop("accuracy"), frames),
                     **{key: _mean(values) for key, values in scores.items()}}
    out["mel_distance_int8_minus_float32"] = out["int8"]["mel_distance"] - out["float32"]["mel_distance"]
    return out
