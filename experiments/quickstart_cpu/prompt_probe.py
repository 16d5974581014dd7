"""Where a prompted continuation's attention goes, and what the prompt sets (#24, docs/quickstart.md:
"2048 codes per level becomes the quickstart's codec; where the prompt's attention goes").

For the speech table's targets and prompts (the same plan, :func:`plan_speech_items`), runs the level-1
pass of the prompted row once: the prompt's first ``--prompt-seconds`` of codes at every level, every
target frame masked, one forward (greedy decoding's first pass). The attention kernel of every layer is
swapped for one that keeps its weights, and the probe reports, mean over targets, heads and target frames:

- ``attention_to_prompt``: per layer, the target frames' attention on the prompt's frames, beside
  ``prompt_share`` (the prompt's share of the keys: attention that ignores content would match it);
- ``attention_to_prompt_codes_masked``: the same pass with the prompt's codes masked (its semantic ids
  stay), so what the prompt's *codes* draw;
- ``same_id_share``: per layer, the part of the prompt attention that goes to prompt frames with the
  target frame's own semantic id, beside ``same_id_frames`` (those frames' share of the prompt): a
  continuation that copied codes phone by phone would put most of it there;
- ``level1_accuracy``: the pass's level-1 argmax against the target's true codes, for target frames
  whose semantic id occurs in the prompt and for the others; and the same for the unprompted pass;
- ``codes_from_prompt``: the share of predicted level-1 codes found in the prompt's first level, prompted
  and unprompted.

    python experiments/quickstart_cpu/prompt_probe.py CHECKPOINT_DIR TOKEN_FOLDER --utterances 95 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch

from soundstorm.assets import load_assets, open_checkpoint
from soundstorm.conformer import SelfAttention
from soundstorm.data import TokenManifest
from soundstorm.data.dataset import TokenDataset
from soundstorm.data.split import split_utterances
from soundstorm.evaluation.speech_plan import plan_speech_items


class RecordingAttention:
    """Scaled dot-product attention that keeps its weights ``[B, N, T, T]`` (one entry per call)."""

    def __init__(self):
        self.weights: list[torch.Tensor] = []

    def __call__(self, q_BNTH, k_BNTH, v_BNTH, attend_B11T, dropout_p: float) -> torch.Tensor:
        scores_BNTT = q_BNTH @ k_BNTH.transpose(-1, -2) / math.sqrt(q_BNTH.shape[-1])
        if attend_B11T is not None:
            scores_BNTT = scores_BNTT.masked_fill(~attend_B11T, float("-inf"))
        weights_BNTT = scores_BNTT.softmax(-1)
        self.weights.append(weights_BNTT)
        return weights_BNTT @ v_BNTH


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


@torch.no_grad()
def probe(model, utterance, items, prompt_frames: int) -> dict:
    """The module docstring's figures over ``items`` (:class:`SpeechItem`); ``utterance(utt_id)`` → a token
    folder utterance (``codes [Q, T]``, ``semantic [S]``); ``prompt_frames``: a multiple of the model's
    semantic upsample. A frame's semantic id is the id of the semantic token it was upsampled from."""
    up = model.config.semantic_upsample
    if prompt_frames < up or prompt_frames % up:
        raise ValueError(f"prompt_frames={prompt_frames} must be a positive multiple of semantic_upsample={up}")
    recorder = RecordingAttention()
    layers = [m for m in model.modules() if isinstance(m, SelfAttention)]
    kernels = [m.kernel for m in layers]
    for m in layers:
        m.kernel = recorder
    model.eval()
    mask, num_levels = model.config.mask_id, model.config.num_levels
    level = torch.zeros(1, dtype=torch.long)
    per_layer = {"attention_to_prompt": [[] for _ in layers], "attention_to_prompt_codes_masked": [[] for _ in layers],
                 "same_id_share": [[] for _ in layers]}
    prompt_share, same_id_frames = [], []
    hits = {key: [0, 0] for key in ("prompted_id_in_prompt", "prompted_id_not_in_prompt",
                                    "unprompted_id_in_prompt", "unprompted_id_not_in_prompt")}
    from_prompt = {"prompted": [0, 0], "unprompted": [0, 0]}
    try:
        for item in items:
            target, prompt = utterance(item.target), utterance(item.prompt)
            num_prompt = min(prompt_frames, prompt["codes"].shape[1] // up * up)
            prompt_S, target_S = prompt["semantic"][:num_prompt // up], target["semantic"]
            semantic_1S = torch.cat([prompt_S, target_S])[None]
            num_frames = semantic_1S.shape[1] * up
            codes_1QT = torch.full((1, num_levels, num_frames), mask, dtype=torch.long)
            codes_1QT[0, :, :num_prompt] = prompt["codes"][:, :num_prompt]
            recorder.weights.clear()
            prompted_T = model(codes_1QT, semantic_1S, level=level)[0, num_prompt:].argmax(-1)
            to_prompt_LTP = [w[0].mean(0)[num_prompt:, :num_prompt] for w in recorder.weights]  # [Tt, P] per layer
            recorder.weights.clear()
            codes_1QT[0, :, :num_prompt] = mask
            model(codes_1QT, semantic_1S, level=level)
            masked_LTP = [w[0].mean(0)[num_prompt:, :num_prompt] for w in recorder.weights]
            unprompted_1QT = torch.full((1, num_levels, target_S.shape[0] * up), mask, dtype=torch.long)
            unprompted_T = model(unprompted_1QT, target_S[None], level=level)[0].argmax(-1)

            prompt_share.append(num_prompt / num_frames)
            same_TP = (target_S.repeat_interleave(up)[:, None] == prompt_S.repeat_interleave(up)[None, :]).float()
            in_prompt_T = same_TP.sum(-1) > 0
            if in_prompt_T.any():  # averaged over the same targets as same_id_share
                same_id_frames.append(float((same_TP.sum(-1) / num_prompt)[in_prompt_T].mean()))
            for i, (att_TP, masked_TP) in enumerate(zip(to_prompt_LTP, masked_LTP)):
                mass_T = att_TP.sum(-1)
                per_layer["attention_to_prompt"][i].append(float(mass_T.mean()))
                per_layer["attention_to_prompt_codes_masked"][i].append(float(masked_TP.sum(-1).mean()))
                if in_prompt_T.any():
                    share_T = (att_TP * same_TP).sum(-1) / mass_T.clamp_min(1e-12)
                    per_layer["same_id_share"][i].append(float(share_T[in_prompt_T].mean()))
            true_T = target["codes"][0]
            prompt_codes = set(prompt["codes"][0, :num_prompt].tolist())
            for name, predicted_T in (("prompted", prompted_T), ("unprompted", unprompted_T)):
                right_T = predicted_T == true_T
                for where, frames_T in (("in_prompt", in_prompt_T), ("not_in_prompt", ~in_prompt_T)):
                    hits[f"{name}_id_{where}"][0] += int(right_T[frames_T].sum())
                    hits[f"{name}_id_{where}"][1] += int(frames_T.sum())
                from_prompt[name][0] += sum(int(code) in prompt_codes for code in predicted_T.tolist())
                from_prompt[name][1] += len(predicted_T)
    finally:
        for m, kernel in zip(layers, kernels):
            m.kernel = kernel
    return {"targets": len(items), "prompt_frames": prompt_frames, "prompt_share": _mean(prompt_share),
            **{key: [_mean(values) for values in layer_values] for key, layer_values in per_layer.items()},
            "same_id_frames": _mean(same_id_frames),
            "level1_accuracy": {key: (right / total if total else None, total) for key, (right, total) in hits.items()},
            "codes_from_prompt": {key: right / total for key, (right, total) in from_prompt.items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a SoundStorm checkpoint directory")
    parser.add_argument("tokens", help="the token folder it was trained on (soundstorm-prepare's output)")
    parser.add_argument("--utterances", type=int, default=95, help="held-out targets (the speech table's plan)")
    parser.add_argument("--prompt-seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0, help="the plan's seed (evaluation.speech.seed)")
    parser.add_argument("--heldout-fraction", type=float, default=0.05, help="data.heldout_fraction of the run")
    parser.add_argument("--split-seed", type=int, default=0, help="data.split_seed of the run")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.utterances < 1:
        raise ValueError(f"--utterances must be >= 1, got {args.utterances}")
    if not args.prompt_seconds > 0:
        raise ValueError(f"--prompt-seconds must be > 0, got {args.prompt_seconds}")
    torch.set_num_threads(1)
    assets = load_assets(args.tokens, "tokens")
    model, _ = open_checkpoint(args.checkpoint, assets, assets_field="tokens", use_ema=False)
    manifest = TokenManifest.load(args.tokens)
    train_ids, heldout_ids = split_utterances(manifest.utterances, args.heldout_fraction, args.split_seed)
    # the speech table's records: the training split, then the held-out one (soundstorm.evaluation.speech_table)
    dataset = TokenDataset(args.tokens, utt_ids=train_ids + heldout_ids, manifest=manifest, model_config=model.config)
    index = {u["utt_id"]: i for i, u in enumerate(dataset.utterances)}
    items = plan_speech_items(dataset.utterances, heldout_ids, args.utterances, args.seed)
    up = model.config.semantic_upsample  # as the speech table rounds it (SpeechTable.prompt_frames)
    prompt_frames = max(up, int(round(args.prompt_seconds * assets.codec.frame_rate / up)) * up)
    result = probe(model, lambda utt_id: dataset.utterance(index[utt_id]), items, prompt_frames)
    result.update(checkpoint=str(args.checkpoint), tokens=str(args.tokens))
    print(f"{result['targets']} targets; the prompt is {result['prompt_share']:.3f} of the keys")
    layers = zip(result["attention_to_prompt"], result["attention_to_prompt_codes_masked"], result["same_id_share"])
    for i, (mass, masked, same) in enumerate(layers):
        print(f"layer {i + 1}: attention to the prompt {mass:.3f} (its codes masked: {masked:.3f}); "
              f"on same-id prompt frames {same:.3f} of it (they are {result['same_id_frames']:.3f} of the prompt)")
    for key, (accuracy, frames) in result["level1_accuracy"].items():
        print(f"level-1 accuracy, {key.replace('_', ' ')}: {accuracy if accuracy is None else round(accuracy, 3)} "
              f"over {frames} frames")
    print("level-1 codes found in the prompt's first level: "
          + ", ".join(f"{k} {v:.3f}" for k, v in result["codes_from_prompt"].items()))
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
