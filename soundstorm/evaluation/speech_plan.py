"""Which utterances the speech table scores, and which prompts and speaker references it uses.

Targets are held-out utterances (their sentences were not trained on). For each target of speaker A:

- the *prompted* row continues 3 s cut from a different utterance of A (the paper's setting);
- the *cross-speaker* row keeps the target's semantic tokens and takes the prompt from an utterance of
  another speaker B;
- "similarity to a speaker" is the cosine similarity to the ground-truth recording of a *reference*
  utterance of that speaker: never the scored utterance, and never the utterance the prompt was cut
  from when the speaker has another (so neither the content nor the prompt's own recording is compared).

Prompt and reference utterances may come from the training split: they only stand for a voice. Every
choice is drawn from ``numpy.random.default_rng([seed, i])``, so a plan is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np


@dataclass
class SpeechEvalConfig:
    """The speech table (``evaluation.speech``): off by default (it runs a recognizer and a speaker
    verifier on ``max_utterances`` × 5 clips). ``asr`` / ``verifier``: a built-in name or
    ``package.module:attr``; ``*_options``: keyword arguments of that class."""

    enabled: bool = False
    max_utterances: int = 8
    prompt_seconds: float = 3.0
    asr: str = "pocketsphinx"
    asr_options: Dict[str, Any] = field(default_factory=dict)
    verifier: str = "resemblyzer"
    verifier_options: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    t2s_checkpoint: Optional[str] = None  # a text-to-semantic checkpoint: adds the text_to_semantic row
    level_prefixes: List[int] = field(default_factory=list)  # k: rows decoding only the first k levels
    # 0: transcribe in this process; N: in N worker processes beside the generation (soundstorm.evaluation.asr_pool)
    asr_workers: int = 0

    def __post_init__(self):
        if isinstance(self.max_utterances, bool) or not isinstance(self.max_utterances, int) or self.max_utterances < 1:
            raise ValueError(f"evaluation.speech.max_utterances must be an integer >= 1, got {self.max_utterances!r}")
        if not float(self.prompt_seconds) > 0:
            raise ValueError(f"evaluation.speech.prompt_seconds must be > 0 seconds, got {self.prompt_seconds!r}")
        prefixes = list(self.level_prefixes or [])
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in prefixes) or \
                len(set(prefixes)) != len(prefixes):
            raise ValueError("evaluation.speech.level_prefixes must be distinct integers >= 1 (numbers of coarse "
                             f"levels to decode), got {self.level_prefixes!r}")
        self.level_prefixes = sorted(prefixes)
        workers = self.asr_workers
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError("evaluation.speech.asr_workers must be an integer >= 0 (0: transcribe in the evaluating "
                             f"process; N: in N worker processes), got {workers!r}")
        for name in ("asr", "verifier"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"evaluation.speech.{name} must be a name or 'package.module:attr', "
                                 f"got {getattr(self, name)!r}")


@dataclass(frozen=True)
class SpeechItem:
    """One target (utterance id) and the speakers and utterance ids its rows need."""

    target: str
    speaker: str
    prompt: str             # another utterance of the target's speaker
    reference: str          # the target speaker's reference (≠ target; ≠ prompt when possible)
    other_speaker: str       # the cross-speaker row's prompt speaker
    cross_prompt: str       # an utterance of the other speaker
    cross_reference: str    # the other speaker's reference (≠ cross_prompt when possible)


def _pick(rng, candidates: list[str], avoid: set[str]) -> str:
    """A random candidate outside ``avoid``, else any candidate (``candidates`` is never empty)."""
    preferred = [c for c in candidates if c not in avoid]
    pool = preferred or candidates
    return pool[int(rng.integers(len(pool)))]


def plan_speech_items(utterances: list[dict], heldout_ids: list[str], max_items: int, seed: int) -> list[SpeechItem]:
    """Up to ``max_items`` seeded :class:`SpeechItem` s. ``utterances``: every manifest record
    (``utt_id``, ``speaker``, ``text``); ``heldout_ids``: the ones that may be scored."""
    by_speaker: dict[str, list[str]] = {}
    records = {u["utt_id"]: u for u in utterances}
    for u in utterances:
        by_speaker.setdefault(str(u.get("speaker", "")), []).append(u["utt_id"])
    speakers = sorted(s for s in by_speaker if s)
    if len(speakers) < 2:
        raise ValueError(f"the speech table needs utterances of at least 2 speakers (manifest field 'speaker', "
                         f"from the corpus's 'speaker' or 'voice'), found {len(speakers)}: {speakers[:3]}; "
                         "re-prepare a corpus with speaker ids or set evaluation.speech.enabled=false")
    no_text = [i for i in heldout_ids if not str(records[i].get("text", "")).strip()]
    if no_text:
        raise ValueError(f"the speech table needs transcripts: held-out utterances {no_text[:3]} have an empty "
                         "manifest field 'text'")
    eligible = [i for i in heldout_ids if records[i].get("speaker") and len(by_speaker[records[i]["speaker"]]) >= 2]
    if not eligible:
        raise ValueError("the speech table needs held-out utterances whose speaker (manifest field 'speaker') has "
                         f"another utterance for the prompt; none of the {len(heldout_ids)} held-out utterances has")
    order = np.random.default_rng(seed).permutation(len(eligible))
    items = []
    for i, k in enumerate(order[:max_items]):
        target = eligible[int(k)]
        rng = np.random.default_rng([seed, i])
        speaker = records[target]["speaker"]
        own = [u for u in by_speaker[speaker] if u != target]
        prompt = _pick(rng, own, set())
        other = [s for s in speakers if s != speaker][int(rng.integers(len(speakers) - 1))]
        cross_prompt = _pick(rng, by_speaker[other], set())
        items.append(SpeechItem(
            target=target, speaker=speaker, prompt=prompt, reference=_pick(rng, own, {prompt}),
            other_speaker=other, cross_prompt=cross_prompt,
            cross_reference=_pick(rng, by_speaker[other], {cross_prompt})))
    return items
