"""The paper's Table 1 in miniature: intelligibility and voice preservation of generated speech.

Rows, per target utterance (chosen by :mod:`.speech_plan`), each scored by a recognizer (WER, CER
against the manifest ``text``), a speaker verifier (cosine similarity to the reference recordings of
the prompt's and of the source speaker) and the mel distance to the ground-truth recording:

- ``ground_truth``: the original recording (resampled to the codec's rate);
- ``resynthesis``: the codec's decoding of the reference codes (the codec's ceiling);
- ``unprompted``: SoundStorm from the semantic tokens alone;
- ``prompted``: SoundStorm continuing 3 s of a *different* utterance of the same speaker (prompt
  semantic + acoustic tokens prepended; only the continuation is scored), the paper's setting;
- ``cross_speaker``: the target's semantic tokens (speaker A) with a prompt from speaker B;
- ``text_to_semantic`` (given ``semantic_from_text``, e.g. from ``evaluation.speech.t2s_checkpoint``):
  the two-stage pipeline of the paper's dialogue: a first stage turns the target's *text* into semantic
  tokens, prompted with the same speaker's semantic tokens as the ``prompted`` row, and SoundStorm
  continues the same 3 s acoustic prompt. Its WER against ``prompted`` is what the first stage costs.
  The table takes that stage as a callable and never imports it (``soundstorm-eval`` builds it with
  :func:`soundstorm.t2s.speech_row.load_semantic_from_text`).

- ``resynthesis_levels{k}`` / ``prompted_levels{k}`` (with ``evaluation.speech.level_prefixes``): the
  reference codes / the ``prompted`` row's generated codes decoded from their first ``k`` levels only
  (no extra forward pass). Where the generated row falls behind its true-code twin says which levels
  the model gets wrong; where adding levels makes the generated row *worse*, those levels add noise.

``sim_prompt_speaker`` is null where there is no prompt; ``cross_speaker_attribution`` is the fraction
of cross-speaker outputs closer to B's reference than to A's: whether the prompt, not the semantic
tokens, sets the voice. ``per_speaker`` breaks every row's WER down by the target's speaker: a row mean
hides one voice the model renders badly (the quickstart's ked, docs/quickstart.md).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from soundstorm.codecs.base import mel_distance
from soundstorm.data.audio import load_audio
from soundstorm.evaluation.asr import build_recognizer
from soundstorm.evaluation.asr_pool import InlineTranscriber, transcriber_for
from soundstorm.evaluation.metrics import error_rates
from soundstorm.evaluation.plots import save_speech_bars
from soundstorm.evaluation.speaker import build_verifier, cosine
from soundstorm.evaluation.speech_plan import SpeechItem, plan_speech_items
from soundstorm.io import atomic_write_bytes, atomic_write_wav
from soundstorm.paths import check_name, output_dir

ROWS = ("ground_truth", "resynthesis", "unprompted", "prompted", "cross_speaker")
T2S_ROW = "text_to_semantic"
COLUMNS = ("wer", "cer", "sim_prompt_speaker", "sim_source_speaker", "mel_distance")
_LEVEL_ROW = re.compile(r"^(resynthesis|prompted)_levels(\d+)$")


def level_rows(k: int) -> tuple[str, str]:
    """The two rows of a level prefix ``k``: true and generated codes decoded from their first ``k`` levels."""
    return f"resynthesis_levels{k}", f"prompted_levels{k}"


class SpeechTable:
    """Scores :class:`SpeechItem` s with a ``GenerationEvaluator`` (generate / decode), a recognizer and a
    verifier. ``load(utt_id)`` returns a token-folder utterance (``codes``, ``semantic``, ``text``, ``path``).
    ``recognizer``: anything with ``transcribe(wav_N, sample_rate)``, or a transcriber with ``submit`` (a
    :class:`~soundstorm.evaluation.asr_pool.TranscriberPool`: :meth:`run` then goes on to the next target while
    the clips of the last one are transcribed)."""

    def __init__(self, evaluator, recognizer, verifier, load, prompt_seconds: float = 3.0, seed: int = 0,
                 semantic_from_text=None, level_prefixes=(), audio_path=None):
        self.evaluator, self.verifier, self.load = evaluator, verifier, load
        self.transcriber = recognizer if hasattr(recognizer, "submit") else InlineTranscriber(recognizer)
        # utterance → its checked source audio path (TokenDataset.audio_path); None: the record's path as is
        self.audio_path = audio_path or (lambda utt: utt["path"])
        # (text, prompt semantic [P], seed) → semantic [S]: adds the text_to_semantic row
        self.semantic_from_text = semantic_from_text
        num_levels = evaluator.model.config.num_levels if level_prefixes else 0
        bad = [k for k in level_prefixes if not 1 <= k < num_levels]
        if bad:
            raise ValueError(f"evaluation.speech.level_prefixes={list(level_prefixes)}: {bad} outside "
                             f"1..{num_levels - 1} (a prefix of the model's {num_levels} levels; all "
                             f"{num_levels} are the full rows)")
        self.level_prefixes = tuple(level_prefixes)
        self.sample_rate = evaluator.codec.sample_rate
        up = evaluator.model.config.semantic_upsample
        self.prompt_frames = max(up, int(round(prompt_seconds * evaluator.codec.frame_rate / up)) * up)
        self.seed = seed
        self._embeddings: dict[str, torch.Tensor] = {}

    def recording(self, utt: dict) -> torch.Tensor:
        """The utterance's source audio ``[N]`` at the codec's sample rate (read only where
        :meth:`TokenManifest.audio_path` allows)."""
        path = self.audio_path(utt)
        if not Path(path).is_file():
            raise FileNotFoundError(f"the speech table needs the ground-truth audio of utterance {utt['utt_id']!r}: "
                                    f"manifest path {str(path)!r} not found")
        what = f"the speech table needs the ground-truth audio of utterance {utt['utt_id']!r}: manifest path"
        return load_audio(path, what, sample_rate=self.sample_rate)[0]  # checked as every audio input is

    def speaker_embedding(self, utt_id: str) -> torch.Tensor:
        if utt_id not in self._embeddings:
            self._embeddings[utt_id] = self.verifier.embed(self.recording(self.load(utt_id)), self.sample_rate)
        return self._embeddings[utt_id]

    def prompt_semantic(self, prompt_utt: dict) -> torch.Tensor:
        """The prompt's semantic tokens ``[P]``: the first ``prompt_frames`` codec frames' worth."""
        up = self.evaluator.model.config.semantic_upsample
        return prompt_utt["semantic"][:min(self.prompt_frames, prompt_utt["codes"].shape[1] // up * up) // up]

    def continue_prompt(self, target: dict, prompt_utt: dict, seed: int,
                        semantic_S: torch.Tensor | None = None) -> torch.Tensor:
        """Codes ``[Q, T]`` of the target's content (its semantic tokens, or ``semantic_S``) continuing the
        first ``prompt_frames`` of ``prompt_utt``: the continuation only."""
        prompt_S = self.prompt_semantic(prompt_utt)
        num_prompt = prompt_S.shape[0] * self.evaluator.model.config.semantic_upsample
        semantic_S = torch.cat([prompt_S, target["semantic"] if semantic_S is None else semantic_S])
        codes_QT = self.evaluator.generate(semantic_S, prompt_utt["codes"][:, :num_prompt], seed=seed)
        return codes_QT[:, num_prompt:]

    def score(self, wav_N, target: dict, truth_N, source_ref: str, prompt_ref: str | None) -> dict:
        """One row's columns; its ``transcript`` is a Future until :func:`_transcribed` fills it in with the WER."""
        row = {"transcript": self.transcriber.submit(wav_N, self.sample_rate)}
        emb_D = self.verifier.embed(wav_N, self.sample_rate)
        row["sim_prompt_speaker"] = None if prompt_ref is None else cosine(emb_D, self.speaker_embedding(prompt_ref))
        row["sim_source_speaker"] = cosine(emb_D, self.speaker_embedding(source_ref))
        row["mel_distance"] = mel_distance(wav_N, truth_N, self.sample_rate)
        return row

    def item(self, item: SpeechItem, index: int) -> dict:
        """Every row of one target: ``{row: {column: value}}`` plus the ids it used."""
        return _transcribed(self._item_pending(item, index))

    @torch.no_grad()
    def _item_pending(self, item: SpeechItem, index: int) -> dict:
        """:meth:`item` with each row's transcript still a Future."""
        target, seed = self.load(item.target), self.seed + index
        truth_N, decode = self.recording(target), self.evaluator.decode
        waves = {"ground_truth": truth_N, "resynthesis": decode(target["codes"]),
                 "unprompted": decode(self.evaluator.generate(target["semantic"], seed=seed))}
        prompted_QT = self.continue_prompt(target, self.load(item.prompt), seed)
        waves["prompted"] = decode(prompted_QT)
        waves["cross_speaker"] = decode(self.continue_prompt(target, self.load(item.cross_prompt), seed))
        for k in self.level_prefixes:
            true_row, generated_row = level_rows(k)
            waves[true_row], waves[generated_row] = decode(target["codes"][:k]), decode(prompted_QT[:k])
        if self.semantic_from_text is not None:
            prompt_utt = self.load(item.prompt)
            semantic_S = self.semantic_from_text(target["text"], self.prompt_semantic(prompt_utt), seed)
            waves[T2S_ROW] = decode(self.continue_prompt(target, prompt_utt, seed, semantic_S))
        prompt_refs = {"prompted": item.reference, "cross_speaker": item.cross_reference, T2S_ROW: item.reference}
        prompt_refs.update({level_rows(k)[1]: item.reference for k in self.level_prefixes})
        rows = {name: self.score(wav, target, truth_N, item.reference, prompt_refs.get(name))
                for name, wav in waves.items()}
        return {"rows": rows, "waves": waves, "ids": {**vars(item), "text": target["text"]}}

    def run(self, items: list[SpeechItem]) -> tuple[dict, list[dict]]:
        """``(table, per-item results)``; ``table`` = row means plus ``cross_speaker_attribution``."""
        if not items:
            raise ValueError("the speech table has no utterance to score")
        pending = [self._item_pending(item, i) for i, item in enumerate(items)]
        results = [_transcribed(result) for result in pending]
        return summarize(results), results


def _transcribed(result: dict) -> dict:
    """``result`` with every row's transcript Future replaced by its text, and the row's WER and CER."""
    text = result["ids"]["text"]
    for name, row in result["rows"].items():
        transcript = row["transcript"].result()
        result["rows"][name] = {**error_rates(text, transcript), **row, "transcript": transcript}
    return result


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def rows_of(table_or_result: dict) -> tuple[str, ...]:
    """The rows present, in table order: :data:`ROWS`, then ``text_to_semantic`` (when a first stage was
    given), then the level-prefix rows by ``k``, true codes before generated."""
    rows = table_or_result.get("rows", table_or_result)
    prefixes = sorted({int(m.group(2)) for m in map(_LEVEL_ROW.match, rows) if m})
    return ROWS + ((T2S_ROW,) if T2S_ROW in rows else ()) + tuple(r for k in prefixes for r in level_rows(k))


def per_speaker(results: list[dict]) -> dict:
    """``{speaker: {"n": targets, row: mean WER}}`` by the target's speaker (``result["ids"]["speaker"]``),
    speakers sorted; empty when a result carries no speaker."""
    speakers = [r.get("ids", {}).get("speaker") for r in results]
    if not results or any(s is None for s in speakers):
        return {}
    rows = rows_of(results[0])
    by_speaker: dict[str, list[dict]] = {}
    for speaker, result in zip(speakers, results):
        by_speaker.setdefault(str(speaker), []).append(result)
    return {speaker: {"n": len(group), **{row: _mean([r["rows"][row]["wer"] for r in group]) for row in rows}}
            for speaker, group in sorted(by_speaker.items())}


def summarize(results: list[dict]) -> dict:
    """Row means over items, ``cross_speaker_attribution``, ``num_utterances`` and (when the results name
    their speakers) ``per_speaker`` WER."""
    table = {row: {col: _mean([r["rows"][row][col] for r in results]) for col in COLUMNS}
             for row in rows_of(results[0])}
    closer = [r["rows"]["cross_speaker"]["sim_prompt_speaker"] > r["rows"]["cross_speaker"]["sim_source_speaker"]
              for r in results]
    table["cross_speaker_attribution"] = sum(closer) / len(closer)
    table["num_utterances"] = len(results)
    speakers = per_speaker(results)
    if speakers:
        table["per_speaker"] = speakers
    return table


def markdown(table: dict, asr: str = "", verifier: str = "") -> str:
    """The table as GitHub markdown (null → "-")."""
    def cell(value):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

    lines = ["| audio | WER | CER | sim. to prompt's speaker | sim. to source speaker | mel distance |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {row} | " + " | ".join(cell(table[row][col]) for col in COLUMNS) + " |" for row in rows_of(table)]
    lines += ["", f"Cross-speaker attribution (output closer to the prompt's speaker than to the source speaker): "
                  f"{table['cross_speaker_attribution']:.2f} of {table['num_utterances']} pairs."]
    if table.get("per_speaker"):
        rows = rows_of(table)
        lines += ["", "WER by the target's speaker:", "",
                  "| speaker | targets | " + " | ".join(rows) + " |", "|---|---|" + "---|" * len(rows)]
        lines += [f"| {speaker} | {values['n']} | " + " | ".join(cell(values[row]) for row in rows) + " |"
                  for speaker, values in table["per_speaker"].items()]
    if asr or verifier:  # after a blank line: a text line right under a table would render as its last row
        lines += ["", f"Recognizer: {asr}; speaker verifier: {verifier}."]
    return "\n".join(lines) + "\n"


def evaluate_speech(config, evaluator, heldout, others, out_dir, num_examples: int = 0,
                    semantic_from_text=None) -> dict:
    """Plan, score and write the speech table: ``out_dir/speech_table.{md,png}`` and, for the first
    ``num_examples`` targets, every row's audio under ``out_dir/speech_examples``. ``heldout``: the
    ``TokenDataset`` whose utterances are scored; ``others``: a ``TokenDataset`` (the training split) whose
    utterances may serve as prompts and references; ``config``: a
    :class:`~soundstorm.evaluation.speech_plan.SpeechEvalConfig`; ``semantic_from_text``: the first stage of the
    ``text_to_semantic`` row (None: no row). Returns the table."""
    where = {u["utt_id"]: (dataset, i) for dataset in (others, heldout) for i, u in enumerate(dataset.utterances)}
    records = [u for dataset in (others, heldout) for u in dataset.utterances]
    heldout_ids = [u["utt_id"] for u in heldout.utterances]
    items = plan_speech_items(records, heldout_ids, config.max_utterances, config.seed)

    def load(utt_id: str) -> dict:
        dataset, i = where[utt_id]
        return dataset.utterance(i)

    def audio_path(utt: dict):
        return where[utt["utt_id"]][0].audio_path(utt)

    recognizer = build_recognizer(config.asr, config.asr_options)  # here first: its errors name the field
    transcriber = transcriber_for(recognizer, config.asr, config.asr_options, config.asr_workers)
    try:
        scorer = SpeechTable(evaluator, transcriber, build_verifier(config.verifier, config.verifier_options), load,
                             config.prompt_seconds, config.seed, semantic_from_text, config.level_prefixes, audio_path)
        table, results = scorer.run(items)
    finally:
        transcriber.close()
    out_dir = Path(out_dir)
    if results[:num_examples]:
        examples = output_dir(out_dir, "speech_examples")
        for result in results[:num_examples]:
            target = check_name(result["ids"]["target"], "utt_id")
            for row, wav_N in result["waves"].items():
                atomic_write_wav(examples / f"{target}_{row}.wav", wav_N, scorer.sample_rate)
    rows = rows_of(table)
    table["items"] = [{**r["ids"], "rows": {row: {k: r["rows"][row][k] for k in ("wer", "transcript")} for row in rows}}
                      for r in results]
    table["asr"], table["verifier"] = config.asr, config.verifier
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "speech_table.md", markdown(table, config.asr, config.verifier).encode())
    save_speech_bars(out_dir / "speech_table.png", table, rows,
                     title=f"{table['num_utterances']} held-out utterances; ASR {config.asr}, "
                           f"verifier {config.verifier}")
    return table
