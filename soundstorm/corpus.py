"""Synthesise a small English speech corpus with espeak-ng (wav files + a JSONL manifest).

One job: turn the bundled sentences (``soundstorm/data/sentences.txt``) into ``N`` utterances
spoken by many espeak-ng English voices, male and female variants, with pitch and speed varied
deterministically from a seed. Each manifest line: ``{"path", "text", "voice", "duration", ...}``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf

from soundstorm.io import atomic_write_bytes

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
           "en-us-nyc")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
INSTALL_HINT = "install it with: sudo apt-get install espeak-ng   (macOS: brew install espeak-ng)"


def bundled_sentences() -> list[str]:
    """The sentences shipped with the package (comments and blank lines dropped)."""
    text = resources.files("soundstorm").joinpath("data/sentences.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def find_espeak() -> str:
    """Path of ``espeak-ng``; a ``FileNotFoundError`` with the install command when it is missing."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise FileNotFoundError(f"espeak-ng was not found on PATH; {INSTALL_HINT}")
    return path


def plan_utterances(num_utterances: int, seed: int, sentences: list[str]) -> list[dict]:
    """Deterministic (sentence, voice, pitch, speed) choices; genders alternate, accents rotate."""
    if num_utterances < 1:
        raise ValueError(f"num_utterances must be >= 1, got {num_utterances}")
    if not sentences:
        raise ValueError("no sentences to synthesise")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sentences))
    plans = []
    for i in range(num_utterances):
        gender = "female" if i % 2 else "male"
        variants = FEMALE_VARIANTS if gender == "female" else MALE_VARIANTS
        voice = f"{ACCENTS[(i // 2) % len(ACCENTS)]}+{variants[int(rng.integers(len(variants)))]}"
        plans.append({"utt_id": f"utt{i:05d}", "text": sentences[order[i % len(sentences)]], "voice": voice,
                      "gender": gender, "pitch": int(rng.integers(25, 76)), "speed": int(rng.integers(130, 191))})
    return plans


def synthesize(espeak: str, plan: dict, path: Path) -> float:
    """Run espeak-ng for one utterance into ``path`` (written via a temporary file); return seconds."""
    tmp = path.with_name(f".{path.name}.tmp.wav")
    cmd = [espeak, "-v", plan["voice"], "-p", str(plan["pitch"]), "-s", str(plan["speed"]), "-w", str(tmp),
           "--", plan["text"]]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"espeak-ng failed for voice {plan['voice']!r} (exit {result.returncode}): "
                           f"{result.stderr.strip()}")
    info = sf.info(str(tmp))
    tmp.replace(path)
    return info.frames / info.samplerate


def synth_corpus(out_dir, num_utterances: int = 20, seed: int = 0, sentences: list[str] | None = None) -> Path:
    """Write ``out_dir/wavs/*.wav`` and ``out_dir/manifest.jsonl``; return the manifest path.

    Existing wav files of the same plan are reused, so a rerun finishes an interrupted one.
    """
    espeak = find_espeak()
    out_dir = Path(out_dir)
    (out_dir / "wavs").mkdir(parents=True, exist_ok=True)
    lines = []
    for plan in plan_utterances(num_utterances, seed, sentences or bundled_sentences()):
        path = out_dir / "wavs" / f"{plan['utt_id']}.wav"
        if path.is_file():
            info = sf.info(str(path))
            duration = info.frames / info.samplerate
        else:
            duration = synthesize(espeak, plan, path)
        lines.append(json.dumps({"path": f"wavs/{path.name}", **plan, "duration": round(duration, 4)}))
    manifest = out_dir / "manifest.jsonl"
    atomic_write_bytes(manifest, ("\n".join(lines) + "\n").encode())
    return manifest
