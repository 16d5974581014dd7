"""Festival speech with distinct speakers and phone alignments, for a corpus a recognizer can read.

Why festival: its voices are read by an offline recognizer far better than espeak-ng, and festival
knows where every phone starts and ends, which lets a content tokenizer learn phones from the corpus
itself. Three base voices (Debian ``festvox-kallpc16k``, ``festvox-kdlpc16k``: two male diphone
voices; ``festvox-us-slt-hts``: CMU Arctic's female HTS voice) become :data:`SPEAKERS` by festival's
prosody settings (diphone voices: mean/std of F0; the HTS voice has its own F0 model and ignores
them) and two sox changes: ``speed``, which moves the formants (a longer or shorter vocal tract) with
the pitch, and ``pitch``, which moves the pitch alone. Measured on 20 corpus sentences per speaker
(pocketsphinx WER; resemblyzer similarity, mean over sentence pairs): WER kal 0.167, ked 0.192,
kal_high 0.188, slt 0.078, slt_low 0.056, slt_deep 0.109 (mean 0.132); similarity between any two
speakers at most 0.776 (slt / slt_low), within a speaker 0.87–0.90. Variants dropped for reading
worse or sounding too alike: formant-raised diphone voices (WER 0.20–0.25 on held-out sentences),
slt raised by 300 cents (WER 0.77), slt lowered by 300 cents (similarity 0.83 to slt_low).

One festival process synthesises a whole batch through a generated Scheme script; phone end times
come from the utterance's ``Segment`` relation and are rescaled by the sox speed factor.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

INSTALL_HINT = ("install it with: sudo apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts "
                "sox")


@dataclass(frozen=True)
class Speaker:
    """A festival voice and how it is changed: F0 target mean/std (Hz; diphone voices only), duration
    stretch, sox speed (pitch, formants and tempo together) and sox pitch shift in cents (pitch alone)."""

    voice: str
    f0_mean: float
    f0_std: float
    stretch: float = 1.0
    speed: float = 1.0
    pitch_cents: float = 0.0


SPEAKERS: dict[str, Speaker] = {
    "kal": Speaker("kal_diphone", 105, 14),
    "ked": Speaker("ked_diphone", 105, 15),
    "kal_high": Speaker("kal_diphone", 200, 30),
    "slt": Speaker("cmu_us_slt_arctic_hts", 170, 34),
    "slt_low": Speaker("cmu_us_slt_arctic_hts", 170, 34, speed=0.9),
    "slt_deep": Speaker("cmu_us_slt_arctic_hts", 170, 34, pitch_cents=-500),
}


def find_tools() -> tuple[str, str]:
    """Paths of ``festival`` and ``sox``; a ``FileNotFoundError`` with the install command otherwise."""
    paths = [shutil.which("festival"), shutil.which("sox")]
    if None in paths:
        missing = "festival" if paths[0] is None else "sox"
        raise FileNotFoundError(f"{missing} was not found on PATH; {INSTALL_HINT}")
    return paths[0], paths[1]


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _script(jobs: list[tuple[str, str, Path]], segs_path: Path) -> str:
    """Scheme that synthesises each ``(speaker, text, wav_path)`` and appends its phones to ``segs_path``."""
    lines = [f"(set! segs_fd (fopen {_scheme_string(str(segs_path))} \"w\"))",
             "(define (say id text wav) (let ((utt (eval (list 'Utterance 'Text text)))) (utt.synth utt)"
             " (utt.save.wave utt wav 'riff)"
             " (mapcar (lambda (seg) (format segs_fd \"%s %s %f\\n\" id (item.name seg) (item.feat seg \"end\")))"
             " (utt.relation.items utt 'Segment))))"]
    current = None
    for speaker_id, text, wav in jobs:
        if speaker_id != current:
            s = SPEAKERS[speaker_id]
            lines.append(f"(voice_{s.voice})(set! int_lr_params '((target_f0_mean {s.f0_mean}) (target_f0_std "
                         f"{s.f0_std}) (model_f0_mean 170) (model_f0_std 34)))(Parameter.set 'Duration_Stretch "
                         f"{s.stretch})")
            current = speaker_id
        lines.append(f"(say {_scheme_string(wav.stem)} {_scheme_string(text)} {_scheme_string(str(wav))})")
    lines.append("(fclose segs_fd)")
    return "\n".join(lines) + "\n"


def _read_segments(segs_path: Path) -> dict[str, list[list]]:
    phones: dict[str, list[list]] = {}
    for line in segs_path.read_text().splitlines():
        utt_id, phone, end = line.split()
        phones.setdefault(utt_id, []).append([phone, float(end)])
    return phones


def synthesize_batch(jobs: list[tuple[str, str, Path]]) -> dict[str, dict]:
    """Synthesise ``(speaker_id, text, wav_path)`` jobs; return ``{stem: {duration, phones}}``.

    ``phones`` is ``[[phone, end_seconds], ...]`` in the final (speed-changed) audio. Each wav is
    written to a temporary name first and moved into place only when complete.
    """
    unknown = sorted({s for s, _, _ in jobs} - set(SPEAKERS))
    if unknown:
        raise ValueError(f"unknown festival speaker(s) {unknown}; expected some of {sorted(SPEAKERS)}")
    festival, sox = find_tools()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw_jobs = [(s, text, tmp / f"{wav.stem}.wav") for s, text, wav in jobs]
        (tmp / "batch.scm").write_text(_script(raw_jobs, tmp / "segs.txt"))
        result = subprocess.run([festival, "--batch", str(tmp / "batch.scm")], capture_output=True, text=True)
        phones = _read_segments(tmp / "segs.txt") if (tmp / "segs.txt").is_file() else {}
        if result.returncode != 0 or len(phones) != len(jobs):
            raise RuntimeError(f"festival failed (exit {result.returncode}, {len(phones)} of {len(jobs)} utterances "
                               f"synthesised; are the voices installed? {INSTALL_HINT}): {result.stderr.strip()[-500:]}")
        out = {}
        for (speaker_id, _, wav), (_, _, raw) in zip(jobs, raw_jobs):
            speaker = SPEAKERS[speaker_id]
            speed = speaker.speed
            part = wav.with_name(f".{wav.name}.tmp.wav")
            # -G: guard against clipping; speed: formants and pitch move by `speed`, duration by 1/speed;
            # pitch: the pitch alone, duration kept (phone times unchanged).
            cmd = [sox, "-G", str(raw), "-b", "16", str(part), *(["speed", f"{speed}"] if speed != 1.0 else []),
                   *(["pitch", f"{speaker.pitch_cents}"] if speaker.pitch_cents else []), "rate", "16000"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                part.unlink(missing_ok=True)
                raise RuntimeError(f"sox failed for {wav.name} (exit {done.returncode}): {done.stderr.strip()}")
            info = sf.info(str(part))
            part.replace(wav)
            out[wav.stem] = {"duration": info.frames / info.samplerate,
                             "phones": [[p, round(end / speed, 4)] for p, end in phones[wav.stem]]}
    return out
