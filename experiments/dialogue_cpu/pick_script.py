"""Pick a demo dialogue from a token folder: two training voices and held-out sentences.

Writes ``script.txt`` (turns labelled A:/B:, alternating) and ``voices.json`` ({"A": wav, "B": wav})
into OUT_DIR. Voices: the two speakers with the most training utterances; each one's prompt is one of
its training recordings. Sentences: texts of held-out utterances (the training split,
:func:`soundstorm.data.split.split_utterances`, with the data config's defaults) that no training utterance says; when the corpus repeats every sentence (the
espeak-ng quickstart's 61 sentences) there are none, and held-out utterances of seen sentences are
used instead, with a note.
Usage: python pick_script.py TOKEN_FOLDER OUT_DIR [NUM_TURNS]
"""

import json
import sys
from collections import Counter
from pathlib import Path

from soundstorm.data import TokenManifest
from soundstorm.data.split import split_utterances
from soundstorm.t2s.data import speaker_of


def main(token_folder: str, out_dir: str, num_turns: int = 6) -> None:
    manifest = TokenManifest.load(token_folder)
    utterances = {u["utt_id"]: u for u in manifest.utterances}
    train_ids, heldout_ids = split_utterances(manifest.utterances, 0.05, 0)
    speakers = Counter(speaker_of(utterances[i]) for i in train_ids if speaker_of(utterances[i]))
    if len(speakers) < 2:
        raise SystemExit(f"{token_folder}: need at least two speakers (a 'speaker' or 'voice' per utterance)")
    (a, _), (b, _) = speakers.most_common(2)
    voices = {name: next(utterances[i]["path"] for i in train_ids if speaker_of(utterances[i]) == spk)
              for name, spk in (("A", a), ("B", b))}
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
    main(sys.argv[1], sys.argv[2], *(int(x) for x in sys.argv[3:4]))
