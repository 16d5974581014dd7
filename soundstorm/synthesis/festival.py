"""Festival speech with distinct speakers and phone alignments, for a corpus a recognizer can read.

Why festival: its voices are read by an offline recognizer far better than espeak-ng, and festival
knows where every phone starts and ends, which lets a content tokenizer learn phones from the corpus
itself. Base voices: two male diphone voices (Debian ``festvox-kallpc16k``, ``festvox-kdlpc16k``) and
CMU Arctic's female HTS voice (``festvox-us-slt-hts``). :data:`SPEAKERS` changes them with festival's
prosody settings (diphone voices: mean/std of F0; the HTS voice has its own F0 model and ignores them)
and two sox effects: ``speed``, which moves the formants (a longer or shorter vocal tract) with the
pitch, and ``pitch``, which moves the pitch alone.

Two speaker sets (``soundstorm-synth-corpus --speakers``), each of six speakers whose similarity to each
other stays below 0.8 (resemblyzer, mean over sentence pairs):

* :data:`DIPHONE_SPEAKERS` (the CLI's default): variants of the two diphone voices. Their content tokens
  (``semantic=phone_classifier``) do not tell the speakers apart, so a voice prompt sets the voice; a
  recognizer reads them less well than the slt voice.
* :data:`MIXED_SPEAKERS` (the quickstart's, with ``--timing slt``): kal, ked, kal_high, kal_bright and two
  slt variants, which a recognizer reads far better. Each voice's own timing gives it away: festival's
  duration model for the diphone voices, HTS's for slt, and vowel reduction only in the former, so even
  the *true* phone labels name the voice family, and a model conditioned on them keeps the source
  family's voice whatever the prompt. :data:`TIMINGS` ``slt`` removes that: the diphone speakers say each
  text with the slt voice's phone durations and its unreduced vowels (identical phone sequences on all
  ~560 bundled sentences).

The measurements behind both sets (WER per speaker, speaker and family identification from tokens and
labels, the candidates that were left out): ``docs/quickstart.md``, "The festival speakers", and
``docs/results/festival_speaker_survey.json``, ``docs/results/festival_shared_timing.json``.

One festival process synthesises a whole batch through a generated Scheme script; phone end times
come from the utterance's ``Segment`` relation and are rescaled by the sox speed factor.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from soundstorm.io import atomic_file

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

    @property
    def is_hts(self) -> bool:
        """An HTS voice: it times its phones itself (hts_engine), so festival's Duration module does not."""
        return self.voice.endswith("_hts")


SPEAKERS: dict[str, Speaker] = {
    "kal": Speaker("kal_diphone", 105, 14),
    "ked": Speaker("ked_diphone", 105, 15),
    "kal_high": Speaker("kal_diphone", 200, 30),
    "ked_high": Speaker("ked_diphone", 200, 30),  # for --speakers lists only: tried in place of kal_small, it
    # did not help the quickstart (docs/quickstart.md, "The festival speakers")
    "kal_bright": Speaker("kal_diphone", 95, 14, stretch=1.1, speed=1.15),
    "ked_bright": Speaker("ked_diphone", 150, 25, stretch=1.1, speed=1.15),
    "kal_small": Speaker("kal_diphone", 170, 25, stretch=1.15, speed=1.22),
    "slt": Speaker("cmu_us_slt_arctic_hts", 170, 34),
    "slt_low": Speaker("cmu_us_slt_arctic_hts", 170, 34, speed=0.9),
    "slt_deep": Speaker("cmu_us_slt_arctic_hts", 170, 34, pitch_cents=-500),
}
DIPHONE_SPEAKERS = ("kal", "ked", "kal_high", "kal_bright", "ked_bright", "kal_small")
MIXED_SPEAKERS = ("kal", "ked", "kal_high", "kal_bright", "slt", "slt_deep")  # not slt_low: too close to slt
SPEAKER_SETS = {"diphone": DIPHONE_SPEAKERS, "mixed": MIXED_SPEAKERS}


def resolve_speakers(speakers) -> tuple[str, ...]:
    """A speaker set's name (``diphone``, ``mixed``) or a list/comma-separated string of :data:`SPEAKERS`
    names → the names; a ValueError naming ``speakers`` otherwise."""
    if isinstance(speakers, str):
        names = SPEAKER_SETS.get(speakers, tuple(n.strip() for n in speakers.split(",") if n.strip()))
    else:
        names = tuple(speakers)
    unknown = [n for n in names if n not in SPEAKERS]
    if not names or unknown:
        raise ValueError(f"speakers={speakers!r}: expected {' or '.join(SPEAKER_SETS)}, or festival speaker names "
                         f"from {sorted(SPEAKERS)}" + (f" (unknown: {unknown})" if unknown else ""))
    return names


TIMINGS = {"own": None, "slt": "cmu_us_slt_arctic_hts"}


def resolve_timing(timing: str) -> str | None:
    """``own`` (every voice its own phone durations) → None; ``slt`` → the HTS voice whose durations every
    diphone speaker takes; a ValueError naming ``timing`` otherwise."""
    if timing not in TIMINGS:
        raise ValueError(f"timing={timing!r}: expected one of {sorted(TIMINGS)}")
    return TIMINGS[timing]


def find_tools() -> tuple[str, str]:
    """Paths of ``festival`` and ``sox``; a ``FileNotFoundError`` with the install command otherwise."""
    paths = [shutil.which("festival"), shutil.which("sox")]
    if None in paths:
        missing = "festival" if paths[0] is None else "sox"
        raise FileNotFoundError(f"{missing} was not found on PATH; {INSTALL_HINT}")
    return paths[0], paths[1]


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_SAY = ("(define (say id text wav) (let ((utt (eval (list 'Utterance 'Text text)))) (utt.synth utt)"
        " (finish id utt wav)))")
# A diphone voice spoken with another voice's phone durations: festival's front end up to its Duration
# module, then the given end times (one per segment; the same phone sequence, else its own durations and
# a TIMING-MISMATCH line), then F0 and the waveform. The written labels are read after synthesis, so a
# segment the diphone module adds (ked says "er" as "er r" where it lacks a diphone) is labelled too.
_SAY_TIMED = ("(define (set_ends segs ends) (if segs (begin (item.set_feat (car segs) \"end\" (car ends))"
              " (set_ends (cdr segs) (cdr ends)))))"
              "(define (say_timed id text wav ends) (let ((utt (eval (list 'Utterance 'Text text))))"
              " (Initialize utt) (Text utt) (Token_POS utt) (Token utt) (POS utt) (Phrasify utt) (Word utt)"
              " (Pauses utt) (Intonation utt) (PostLex utt) (Duration utt)"
              " (if (equal? (length (utt.relation.items utt 'Segment)) (length ends))"
              " (set_ends (utt.relation.items utt 'Segment) ends) (format t \"TIMING-MISMATCH %s\\n\" id))"
              " (Int_Targets utt) (Wave_Synth utt) (finish id utt wav)))")


def _preamble(segs_path: Path) -> list[str]:
    """Scheme definitions shared by both scripts: ``finish`` saves the wave (unless nil) and the phones."""
    return [f"(set! segs_fd (fopen {_scheme_string(str(segs_path))} \"w\"))",
            "(define (finish id utt wav) (if wav (utt.save.wave utt wav 'riff))"
            " (mapcar (lambda (seg) (format segs_fd \"%s %s %f\\n\" id (item.name seg) (item.feat seg \"end\")))"
            " (utt.relation.items utt 'Segment)))", _SAY, _SAY_TIMED]


def _timing_script(voice: str, texts: list[str], segs_path: Path) -> str:
    """Scheme that synthesises each text with ``voice`` (waveform discarded) and writes its phone ends."""
    lines = _preamble(segs_path) + [f"(voice_{voice})"]
    lines += [f"(say \"t{i}\" {_scheme_string(text)} nil)" for i, text in enumerate(texts)]
    return "\n".join(lines + ["(fclose segs_fd)"]) + "\n"


def _script(jobs: list[tuple[str, str, Path]], segs_path: Path, timing: dict[str, list[float]] | None = None) -> str:
    """Scheme that synthesises each ``(speaker, text, wav_path)`` and appends its phones to ``segs_path``;
    with ``timing`` (text → phone end times), diphone speakers take those durations (× their stretch) and
    festival's unreduced vowels (the HTS voice's phone sequence)."""
    lines = _preamble(segs_path)
    current = None
    for speaker_id, text, wav in jobs:
        s = SPEAKERS[speaker_id]
        timed = timing is not None and not s.is_hts
        if speaker_id != current:
            lines.append(f"(voice_{s.voice})(set! int_lr_params '((target_f0_mean {s.f0_mean}) (target_f0_std "
                         f"{s.f0_std}) (model_f0_mean 170) (model_f0_std 34)))(Parameter.set 'Duration_Stretch "
                         f"{s.stretch})")
            if s.is_hts and s.stretch != 1.0:  # its duration stretch is hts_engine's speaking rate
                lines.append(f"(set! hts_engine_params (append {s.voice}::hts_engine_params (list '(\"-r\" "
                             f"{1.0 / s.stretch:.6f}))))")
            if timed:
                lines.append("(set! postlex_vowel_reduce_cart_tree nil)")
            current = speaker_id
        args = f"{_scheme_string(wav.stem)} {_scheme_string(text)} {_scheme_string(str(wav))}"
        if timed:
            ends = " ".join(f"{end * s.stretch:.5f}" for end in timing[text])
            lines.append(f"(say_timed {args} '({ends}))")
        else:
            lines.append(f"(say {args})")
    lines.append("(fclose segs_fd)")
    return "\n".join(lines) + "\n"


def _read_segments(segs_path: Path) -> dict[str, list[list]]:
    phones: dict[str, list[list]] = {}
    for line in segs_path.read_text().splitlines():
        utt_id, phone, end = line.split()
        phones.setdefault(utt_id, []).append([phone, float(end)])
    return phones


def _run_festival(festival: str, script: str, tmp: Path, expected: int) -> tuple[dict[str, list[list]], str]:
    (tmp / "batch.scm").write_text(script)
    (tmp / "segs.txt").unlink(missing_ok=True)
    result = subprocess.run([festival, "--batch", str(tmp / "batch.scm")], capture_output=True, text=True)
    phones = _read_segments(tmp / "segs.txt") if (tmp / "segs.txt").is_file() else {}
    if result.returncode != 0 or len(phones) != expected:
        raise RuntimeError(f"festival failed (exit {result.returncode}, {len(phones)} of {expected} utterances "
                           f"synthesised; are the voices installed? {INSTALL_HINT}): {result.stderr.strip()[-500:]}")
    return phones, result.stdout


def synthesize_batch(jobs: list[tuple[str, str, Path]], timing_voice: str | None = None) -> dict[str, dict]:
    """Synthesise ``(speaker_id, text, wav_path)`` jobs; return ``{stem: {duration, phones}}``.

    ``phones`` is ``[[phone, end_seconds], ...]`` in the final (speed-changed) audio. Each wav is
    written to a temporary name first and moved into place only when complete. ``timing_voice`` (an HTS
    voice, a value of :data:`TIMINGS`): every diphone speaker says each text with that voice's phone
    durations; where the phone sequences differ it keeps its own and a warning names the utterances.
    """
    unknown = sorted({s for s, _, _ in jobs} - set(SPEAKERS))
    if unknown:
        raise ValueError(f"unknown festival speaker(s) {unknown}; expected some of {sorted(SPEAKERS)}")
    festival, sox = find_tools()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        timing = None
        if timing_voice is not None:
            texts = sorted({text for s, text, _ in jobs if not SPEAKERS[s].is_hts})
            timed, _ = _run_festival(festival, _timing_script(timing_voice, texts, tmp / "segs.txt"), tmp, len(texts))
            timing = {text: [end for _, end in timed[f"t{i}"]] for i, text in enumerate(texts)}
        raw_jobs = [(s, text, tmp / f"{wav.stem}.wav") for s, text, wav in jobs]
        phones, stdout = _run_festival(festival, _script(raw_jobs, tmp / "segs.txt", timing), tmp, len(jobs))
        mismatched = [line.split()[1] for line in stdout.splitlines() if line.startswith("TIMING-MISMATCH")]
        if mismatched:
            warnings.warn(f"{len(mismatched)} utterance(s) kept their own phone durations: the diphone voice's phone "
                          f"sequence differs from {timing_voice}'s ({mismatched[:5]})")
        out = {}
        for (speaker_id, _, wav), (_, _, raw) in zip(jobs, raw_jobs):
            speaker = SPEAKERS[speaker_id]
            speed = speaker.speed
            # -G: guard against clipping; -D: no dither when going back to 16 bits (sox dithers with random
            # noise by default, so the same corpus came out different on every run and so did everything
            # fitted or scored on it); speed: formants and pitch move by `speed`, duration by 1/speed;
            # pitch: the pitch alone, duration kept (phone times unchanged).
            with atomic_file(wav, suffix=".wav") as part:  # a fresh temporary name: no planted link is followed
                cmd = [sox, "-G", "-D", str(raw), "-b", "16", str(part),
                       *(["speed", f"{speed}"] if speed != 1.0 else []),
                       *(["pitch", f"{speaker.pitch_cents}"] if speaker.pitch_cents else []), "rate", "16000"]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"sox failed for {wav.name} (exit {done.returncode}): {done.stderr.strip()}")
                info = sf.info(str(part))
            out[wav.stem] = {"duration": info.frames / info.samplerate,
                             "phones": [[p, round(end / speed, 4)] for p, end in phones[wav.stem]]}
    return out
