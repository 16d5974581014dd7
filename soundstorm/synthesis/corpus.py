"""Synthesise a small English speech corpus (wav files + a JSONL manifest) with festival or espeak-ng.

One job: turn the bundled sentences (``soundstorm/synthesis/sentences.txt``) into ``N`` utterances with a
speaker id and a transcript each, and decide which *sentences* are held out. Engines:

- ``festival`` (:mod:`soundstorm.synthesis.festival`): six distinct speakers that an offline recognizer reads,
  plus festival's phone alignments (``phones``: ``[[phone, end_seconds], ...]``);
- ``espeak``: many espeak-ng English voices with pitch and speed varied from the seed (robotic: a
  recognizer reads it poorly); the speaker id is the voice.

Each manifest line: ``{"path", "utt_id", "text", "speaker", "split", "duration", ...}``. With
``heldout_fraction > 0``, ``split`` is ``heldout`` for every utterance of the held-out sentences (a
seeded fraction of the sentences), else ``train``, so no held-out sentence is ever heard in
training; prepare copies it and training splits by it. Without it there is no ``split`` field and
training holds out whole sentences by its own ``data.heldout_fraction``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf

from soundstorm.synthesis import festival
from soundstorm.io import atomic_file, atomic_write_bytes

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
           "en-us-nyc")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
ENGINES = ("festival", "espeak")
INSTALL_HINT = "install it with: sudo apt-get install espeak-ng   (macOS: brew install espeak-ng)"


def bundled_sentences() -> list[str]:
    """The sentences shipped with the package (comments and blank lines dropped)."""
    text = resources.files("soundstorm.synthesis").joinpath("sentences.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def find_espeak() -> str:
    """Path of ``espeak-ng``; a ``FileNotFoundError`` with the install command when it is missing."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise FileNotFoundError(f"espeak-ng was not found on PATH; {INSTALL_HINT}")
    return path


def heldout_sentences(sentences: list[str], heldout_fraction: float, seed: int) -> set[str]:
    """The ``max(1, round(fraction × n))`` distinct sentences with the smallest ``sha1(seed:text)`` (none at 0)."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    distinct = sorted(set(sentences))
    num = 0 if heldout_fraction == 0 else max(1, round(heldout_fraction * len(distinct)))
    if distinct and num >= len(distinct):
        raise ValueError(f"heldout_fraction={heldout_fraction} holds out all {len(distinct)} sentences; "
                         "nothing would be left to train on")
    return set(sorted(distinct, key=lambda t: hashlib.sha1(f"{seed}:{t}".encode()).hexdigest())[:num])


def _units(sentences: list[str], order, held: set[str], per_utterance: int) -> list[list[str]]:
    """Sentences grouped into utterance texts in ``order``: held-out ones alone, training ones by ``per_utterance``."""
    units, current = [], []
    for k in order:
        if sentences[k] in held:
            units.append([sentences[k]])
            continue
        current.append(sentences[k])
        if len(current) == per_utterance:
            units.append(current)
            current = []
    return units + ([current] if current else [])


def plan_utterances(num_utterances: int, seed: int, sentences: list[str], engine: str = "espeak",
                    heldout_fraction: float = 0.0, sentences_per_utterance: int = 1,
                    speakers="diphone") -> list[dict]:
    """Deterministic per-utterance choices: text, speaker (and espeak voice settings), split.

    Held-out sentences (:func:`heldout_sentences`) are spoken alone; training utterances join
    ``sentences_per_utterance`` sentences, so a model trained on them has heard sequences as long as
    a 3 s voice prompt followed by a held-out sentence. Texts are used in a seeded order, each once
    before any repeats; festival speakers (``speakers``: a set of :mod:`soundstorm.synthesis.festival`, ``diphone`` or
    ``mixed``, or a list of its speaker names) rotate so that a repeated text gets another speaker.
    Espeak: genders alternate, accents rotate.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if num_utterances < 1:
        raise ValueError(f"num_utterances must be >= 1, got {num_utterances}")
    if isinstance(sentences_per_utterance, bool) or not isinstance(sentences_per_utterance, int) \
            or sentences_per_utterance < 1:
        raise ValueError(f"sentences_per_utterance must be an integer >= 1, got {sentences_per_utterance!r}")
    if not sentences:
        raise ValueError("no sentences to synthesise")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sentences))
    held = heldout_sentences(sentences, heldout_fraction, seed)
    units = _units(sentences, order, held, sentences_per_utterance)
    speakers = list(festival.resolve_speakers(speakers)) if engine == "festival" else []
    plans = []
    for i in range(num_utterances):
        unit = units[i % len(units)]
        plan = {"utt_id": f"utt{i:05d}", "text": " ".join(unit)}
        if heldout_fraction > 0:  # no field otherwise: training then holds out by sentence itself
            plan["split"] = "heldout" if unit[0] in held else "train"
        if engine == "festival":
            plan["speaker"] = speakers[(i + i // len(units)) % len(speakers)]
        else:
            gender = "female" if i % 2 else "male"
            variants = FEMALE_VARIANTS if gender == "female" else MALE_VARIANTS
            voice = f"{ACCENTS[(i // 2) % len(ACCENTS)]}+{variants[int(rng.integers(len(variants)))]}"
            plan.update(speaker=voice, voice=voice, gender=gender, pitch=int(rng.integers(25, 76)),
                        speed=int(rng.integers(130, 191)))
        plans.append(plan)
    return plans


def synthesize(espeak: str, plan: dict, path: Path) -> float:
    """Run espeak-ng for one utterance into ``path`` (written via a temporary file); return seconds."""
    with atomic_file(path, suffix=".wav") as tmp:  # a fresh temporary name: no planted link is followed
        cmd = [espeak, "-v", plan["voice"], "-p", str(plan["pitch"]), "-s", str(plan["speed"]), "-w", str(tmp),
               "--", plan["text"]]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or tmp.stat().st_size == 0:
            raise RuntimeError(f"espeak-ng failed for voice {plan['voice']!r} (exit {result.returncode}): "
                               f"{result.stderr.strip()}")
        info = sf.info(str(tmp))
    return info.frames / info.samplerate


def _duration(path: Path) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate


def _synth_espeak(plans: list[dict], wav_dir: Path) -> dict[str, dict]:
    espeak = find_espeak()
    out = {}
    for plan in plans:
        path = wav_dir / f"{plan['utt_id']}.wav"
        out[plan["utt_id"]] = {"duration": _duration(path) if path.is_file() else synthesize(espeak, plan, path)}
    return out


def _synth_festival(plans: list[dict], wav_dir: Path, timing_voice: str | None = None,
                    batch_size: int = 100, workers: int = 1) -> dict[str, dict]:
    """Festival in batches of one process each (fast: no reuse of earlier files is needed).

    Batches are independent (each runs its own festival and sox processes, and its timing pass sees only
    its own texts), so ``workers`` of them run at once on threads that wait on those processes: the
    files and the manifest are the same for any ``workers``; only the wall time changes.
    """
    festival.find_tools()
    batches = [[(p["speaker"], p["text"], wav_dir / f"{p['utt_id']}.wav") for p in plans[lo: lo + batch_size]]
               for lo in range(0, len(plans), batch_size)]
    out = {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(batches) or 1))) as pool:
        # results in plan order; when a batch fails (e.g. a missing voice) map cancels the ones not yet started
        for result in pool.map(lambda jobs: festival.synthesize_batch(jobs, timing_voice), batches):
            out.update(result)
    return out


def synth_corpus(out_dir, num_utterances: int = 20, seed: int = 0, sentences: list[str] | None = None,
                 engine: str = "espeak", heldout_fraction: float = 0.0, sentences_per_utterance: int = 1,
                 speakers="diphone", timing: str = "own", workers: int = 1) -> Path:
    """Write ``out_dir/wavs/*.wav`` and ``out_dir/manifest.jsonl``; return the manifest path.

    Espeak: a rerun reuses existing wav files of the same plan, so it finishes an interrupted run;
    festival is fast enough to redo. ``timing`` (festival): ``own`` or ``slt``, see
    :func:`soundstorm.synthesis.festival.resolve_timing`. ``workers`` (festival): batches synthesised at
    once, one core each; the corpus is the same for any value.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 (festival batches synthesised at once), got {workers!r}")
    out_dir = Path(out_dir)
    timing_voice = festival.resolve_timing(timing)  # a bad value fails before anything is written
    plans = plan_utterances(num_utterances, seed, sentences or bundled_sentences(), engine, heldout_fraction,
                            sentences_per_utterance, speakers)
    (out_dir / "wavs").mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.jsonl"
    if engine == "festival":
        results = _synth_festival(plans, out_dir / "wavs", timing_voice, workers=workers)
    else:
        results = _synth_espeak(plans, out_dir / "wavs")
    lines = []
    for plan in plans:
        result = results[plan["utt_id"]]
        entry = {"path": f"wavs/{plan['utt_id']}.wav", **plan, "engine": engine,
                 "duration": round(result["duration"], 4)}
        if "phones" in result:
            entry["phones"] = result["phones"]
        lines.append(json.dumps(entry))
    atomic_write_bytes(manifest, ("\n".join(lines) + "\n").encode())
    return manifest
