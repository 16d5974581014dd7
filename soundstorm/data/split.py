"""The train / held-out split of a token folder, by sentence: no held-out sentence is ever trained on.

Why by sentence: a corpus often has the same sentence from several speakers, and a model that has
heard a sentence (from anyone) is not being tested on unseen content. Rules, in order:

1. utterances with a ``split`` field (the corpus manifest's, copied by prepare) follow it;
   ``data.heldout_fraction`` is then not used;
2. otherwise whole *groups* are held out: utterances with the same normalised ``text`` form one
   group (an utterance without text is its own group); the ``round(fraction × groups)`` groups
   (at least one when the fraction is > 0) with the smallest ``sha1(seed:group)`` are held out.
"""

from __future__ import annotations

import hashlib
import re


def _group(utt: dict) -> str:
    text = re.sub(r"[^a-z0-9']+", " ", str(utt.get("text", "")).lower()).strip()
    return f"text:{text}" if text else f"id:{utt['utt_id']}"


def split_utterances(utterances: list[dict], heldout_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train_ids, heldout_ids)`` of manifest records (``utt_id``, ``text``, optional ``split``); order kept."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"data.heldout_fraction={heldout_fraction} must be in [0, 1)")
    ids = [u["utt_id"] for u in utterances]
    if len(set(ids)) != len(ids):
        raise ValueError("utt_ids must be unique")
    marked = {u["utt_id"]: u.get("split", "") for u in utterances}
    if any(marked.values()):
        bad = sorted({s for s in marked.values() if s not in ("train", "heldout")})
        if bad:
            raise ValueError(f"manifest field split must be 'train' or 'heldout' on every utterance when any has it, "
                             f"found {bad}")
        heldout = {i for i, s in marked.items() if s == "heldout"}
    else:
        groups = sorted({_group(u) for u in utterances})
        num = 0 if heldout_fraction == 0 else max(1, round(heldout_fraction * len(groups)))
        if groups and num >= len(groups):
            raise ValueError(f"data.heldout_fraction={heldout_fraction} holds out all {len(groups)} sentences; none "
                             "would be left for training")
        chosen = set(sorted(groups, key=lambda g: hashlib.sha1(f"{seed}:{g}".encode()).hexdigest())[:num])
        heldout = {u["utt_id"] for u in utterances if _group(u) in chosen}
    if utterances and len(heldout) == len(utterances):
        raise ValueError("every utterance is held out (manifest field split); none would be left for training")
    return [i for i in ids if i not in heldout], [i for i in ids if i in heldout]
