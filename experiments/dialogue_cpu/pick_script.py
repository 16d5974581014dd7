"""Pick a demo dialogue from a token folder: two training voices and held-out sentences.

Writes ``script.txt`` (turns labelled A:/B:, alternating) and ``voices.json`` ({"A": wav, "B": wav})
into OUT_DIR. Voices: each training speaker's prompt is its first training recording; the two speakers
whose prompts the speaker verifier finds least alike are A and B (a dialogue needs two voices a
listener can tell apart; :func:`soundstorm.dialogue.voices.least_alike_pair`). With VERIFIER=none (or null), the
two speakers with the most training utterances. Sentences: texts of held-out utterances (the training split,
:func:`soundstorm.data.split.split_utterances`, with the data config's defaults) that no training utterance says; when the corpus repeats every sentence (the
espeak-ng quickstart's 61 sentences) there are none, and held-out utterances of seen sentences are
used instead, with a note.
Usage: python pick_script.py TOKEN_FOLDER OUT_DIR [NUM_TURNS [VERIFIER]]   (VERIFIER: resemblyzer, default)
"""

import json
import sys
from collections import Counter
from pathlib import Path

from soundstorm.data import TokenManifest
from soundstorm.data.split import split_utterances
from soundstorm.t2s.data import speaker_of


def pick_voices(utterances: dict, train_ids: list, verifier: str) -> tuple[str, str]:
    """The two speakers of the dialogue (see the module docstring)."""
    speakers = Counter(speaker_of(utterances[i]) for i in train_ids if speaker_of(utterances[i]))
    if len(speakers) < 2:
        raise SystemExit("need at least two speakers (a 'speaker' or 'voice' per utterance)")
    if verifier in ("none", "null"):
        (a, _), (b, _) = speakers.most_common(2)
        return a, b
    import soundfile as sf
    import torch

    from soundstorm.dialogue.voices import least_alike_pair
    from soundstorm.evaluation.speaker import build_verifier

    embed = build_verifier(verifier, None, field="VERIFIER").embed
    embeddings = {}
    for spk in speakers:
        wav, sample_rate = sf.read(first_recording(utterances, train_ids, spk), dtype="float32", always_2d=True)
        embeddings[spk] = embed(torch.from_numpy(wav.mean(axis=1)), sample_rate)
    a, b, similarity = least_alike_pair(embeddings)
    print(f"voices least alike by {verifier}: {a} and {b} (similarity {similarity:.3f} of their prompts)")
    return a, b


def first_recording(utterances: dict, train_ids: list, speaker: str) -> str:
    return next(utterances[i]["path"] for i in train_ids if speaker_of(utterances[i]) == speaker)


def main(token_folder: str, out_dir: str, num_turns: int = 6, verifier: str = "resemblyzer") -> None:
    manifest = TokenManifest.load(token_folder)
    utterances = {u["utt_id"]: u for u in manifest.utterances}
    train_ids, heldout_ids = split_utterances(manifest.utterances, 0.05, 0)
    a, b = pick_voices(utterances, train_ids, verifier)
    voices = {"A": first_recording(utterances, train_ids, a), "B": first_recording(utterances, train_ids, b)}
    seen = {utterances[i]["text"].strip().lower() for i in train_ids}
    heldout_texts = list(dict.fromkeys(utterances[i]["text"].strip() for i in heldout_ids))
    unseen = [t for t in heldout_texts if t.lower() not in seen]
    texts = unseen if len(unseen) >= num_turns else heldout_texts
    if len(unseen) < num_turns:
        print(f"note: only {len(unseen)} held-out sentences are unseen in training; using held-out utterances of "
              f"sentences the first stage has seen", flush=True)
    if len(texts) < num_turns:
        raise SystemExit(f"{token_folder}: only {len(texts)} held-out sentences, need {num_turns}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"{'AB'[i % 2]}: {text}" for i, text in enumerate(texts[:num_turns])]
    (out / "script.txt").write_text("\n".join(lines) + "\n")
    (out / "voices.json").write_text(json.dumps(voices, indent=1))
    print(f"voices A={a} ({voices['A']}), B={b} ({voices['B']}); script:\n" + "\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(x) for x in sys.argv[3:4]), *sys.argv[4:5])
