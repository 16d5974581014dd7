"""Scoring a spoken dialogue: per-turn WER against the script, per-turn speaker attribution, timing.

* **Intelligibility**: a recognizer (:mod:`soundstorm.evaluation.asr`: anything with
  ``transcribe(wav_N, sample_rate) -> str``, pocketsphinx offline by default) transcribes each turn's
  audio; WER/CER against the turn's text after normalisation (lower case, no punctuation).
* **Speaker attribution**: a verifier (:mod:`soundstorm.evaluation.speaker`: ``embed(wav_N,
  sample_rate) -> [D]``, resemblyzer by default) embeds each turn and
  every speaker's voice prompt; a turn is attributed to the speaker whose prompt it is closest to
  (cosine), and counts as right when that is the turn's own speaker.
* **Timing**: around each pause the JSON reports, the quiet stretch of the audio (20 ms frames below
  ``silence_db`` under the peak) should start at the reported end of one turn and stop at the
  reported start of the next; the distance between its edges and those times is the boundary error.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import torch

from soundstorm.evaluation.metrics import error_rates, normalize_text
from soundstorm.evaluation.speaker import cosine
from soundstorm.data import TokenDataset


def quiet_runs(wav_N: torch.Tensor, sample_rate: int, silence_db: float = 40.0, frame_s: float = 0.02):
    """``(quiet_F, frame_seconds)``: True for 20 ms frames whose RMS is ``silence_db`` below the loudest."""
    hop = max(1, int(round(frame_s * sample_rate)))
    num_frames = wav_N.shape[0] // hop
    rms_F = wav_N[: num_frames * hop].float().view(num_frames, hop).pow(2).mean(dim=1).sqrt()
    level_F = 20 * torch.log10(rms_F.clamp(min=1e-8))
    return level_F < level_F.max() - silence_db, hop / sample_rate


def boundary_errors(result, silence_db: float = 40.0) -> list[float]:
    """Per pause between turns: how far (s) the quiet stretch around the reported pause reaches beyond it.

    The quiet stretch is the run of quiet frames containing the middle of the reported pause; 0 when
    the JSON's end and start times are exactly its edges. When the middle is not quiet (speech where the
    JSON says pause) the error is the distance to the nearest quiet frame plus half the pause.
    """
    quiet_F, frame_s = quiet_runs(result.wav_N, result.sample_rate, silence_db)
    num_frames, errors = quiet_F.shape[0], []
    for before, after in zip(result.turns, result.turns[1:]):
        middle = min(int((before["end"] + after["start"]) / 2 / frame_s), num_frames - 1)
        if not quiet_F[middle]:
            quiet_at = quiet_F.nonzero().flatten()
            distance = (quiet_at - middle).abs().min().item() * frame_s if quiet_at.numel() else float(num_frames)
            errors.append(distance + (after["start"] - before["end"]) / 2)
            continue
        lo, hi = middle, middle
        while lo > 0 and quiet_F[lo - 1]:
            lo -= 1
        while hi < num_frames - 1 and quiet_F[hi + 1]:
            hi += 1
        errors.append(max(abs(lo * frame_s - before["end"]), abs((hi + 1) * frame_s - after["start"])))
    return errors


def evaluate_dialogue(result, recognizer=None, verifier=None, silence_db: float = 40.0) -> dict:
    """Per-turn and summary scores of a :class:`~soundstorm.dialogue.pipeline.DialogueResult`."""
    rate = result.sample_rate
    turns = [dict(t) for t in result.turns]
    summary: dict = {"latency": dict(result.latency)}
    if recognizer is not None:
        for i, turn in enumerate(turns):
            turn["transcript"] = recognizer.transcribe(result.turn_audio(i), rate)
            turn.update(error_rates(turn["text"], turn["transcript"]))
        summary["wer"] = sum(t["wer"] for t in turns) / len(turns)
        summary["cer"] = sum(t["cer"] for t in turns) / len(turns)
    if verifier is not None:
        if len(result.voices) < 2:
            raise ValueError(f"speaker attribution needs at least two voices, got {list(result.voices)}")
        prompts = {name: verifier.embed(v.wav_N, v.sample_rate) for name, v in result.voices.items()}
        for i, turn in enumerate(turns):
            embedding = verifier.embed(result.turn_audio(i), rate)
            turn["similarity"] = {name: cosine(embedding, e) for name, e in prompts.items()}
            turn["attributed_to"] = max(turn["similarity"], key=turn["similarity"].get)
        summary["attribution_accuracy"] = sum(t["attributed_to"] == t["speaker"] for t in turns) / len(turns)
    errors = boundary_errors(result, silence_db)
    summary["boundary_error_max_s"] = max(errors) if errors else 0.0
    summary["boundary_errors_s"] = errors
    return {"turns": turns, "summary": summary}


def true_semantic(turns, token_folder) -> list[torch.Tensor | None]:
    """Per turn, the semantic tokens of a token-folder utterance with the same (normalised) text, or None.

    They give the reference the first stage is judged against: SoundStorm on the true semantic tokens
    of the same sentences, with the same voice prompts.
    """
    dataset = TokenDataset(token_folder)
    by_text = {}
    for index, utt in enumerate(dataset.utterances):
        by_text.setdefault(normalize_text(utt.get("text", "")), index)
    found = [by_text.get(normalize_text(turn.text)) for turn in turns]
    return [None if index is None else dataset.utterance(index)["semantic"].long() for index in found]
