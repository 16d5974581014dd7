"""Generation on held-out utterances: token accuracy per level, mel distances, examples, long form.

For each held-out utterance the model generates its codes from the semantic tokens twice:
unprompted, and prompted with the reference codes of the first ``prompt_seconds`` (the paper's 3 s
setting; accuracy and audio are then scored on the continuation only). Generated codes are compared
with the reference per level; the codec decodes generated, reference and random codes, and the mel
distance is measured against the codec's reconstruction of the reference (so codec quality is not
charged to the model). Baselines: the most frequent training token at level 1 (unigram) and random
tokens decoded the same way. Utterances longer than the window are generated window by window.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from soundstorm.codecs.base import mel_distance
from soundstorm.evaluation.config import EvaluationConfig
from soundstorm.evaluation.metrics import token_accuracy_per_level
from soundstorm.evaluation.plots import save_spectrograms
from soundstorm.io import atomic_write_wav
from soundstorm.longform import frames_for, generate_windowed, window_frames
from soundstorm.paths import check_name, output_dir
from soundstorm.sampler import codebooks_for


class _Totals:
    """Frame-weighted sums of per-level accuracies and utterance means of scalar metrics."""

    def __init__(self):
        self.correct, self.frames, self.scalars = None, 0, {}

    def add_accuracy(self, acc_Q: list[float], frames: int):
        values = torch.tensor(acc_Q) * frames
        self.correct = values if self.correct is None else self.correct + values
        self.frames += frames

    def add(self, name: str, value: float):
        self.scalars.setdefault(name, []).append(float(value))

    def result(self) -> dict:
        out = {k: sum(v) / len(v) for k, v in self.scalars.items()}
        if self.frames:
            out["accuracy_per_level"] = (self.correct / self.frames).tolist()
        return out


WINDOW_FIELDS = ("evaluation.window_seconds", "evaluation.window_prompt_seconds")  # as the user sets them


class GenerationEvaluator:
    """Runs the generation evaluation of one model against a codec; see the module docstring."""

    def __init__(self, model, codec, sampler_config, config: EvaluationConfig, unigram_token: int | None = None,
                 extra_metrics=(), mark_step=None):
        self.model, self.codec, self.sampler_config, self.config = model, codec, sampler_config, config
        self.extra_metrics = list(extra_metrics)
        self.unigram_token, self.mark_step = unigram_token, mark_step  # mark_step: the backend's (XLA step cuts)
        up = model.config.semantic_upsample
        self.window, self.window_prompt = window_frames(config.window_seconds, config.window_prompt_seconds,
                                                        codec.frame_rate, up, WINDOW_FIELDS)
        self.prompt = frames_for(config.prompt_seconds, codec.frame_rate, up)
        self.codebooks = codebooks_for(sampler_config, codec)  # sampler.mbr_from_level's code vectors

    def generate(self, semantic_S, prompt_QT=None, seed=0):
        """Codes ``[Q, T]`` for ``semantic_S`` (optionally continuing ``prompt_QT``), window by window."""
        return generate_windowed(self.model, semantic_S, window_frames=self.window, prompt_frames=self.window_prompt,
                                 prompt_QT=prompt_QT, config=self.sampler_config,
                                 generator=torch.Generator().manual_seed(seed), mark_step=self.mark_step,
                                 codebooks=self.codebooks)

    def decode(self, codes_QT):
        """The codec's waveform ``[N]`` (CPU) of ``codes_QT``."""
        return self.codec.decode(codes_QT[None].to(torch.long))[0].detach().cpu()

    def utterance(self, utt: dict, index: int, totals: dict, out_dir: Path | None) -> None:
        ref_QT, semantic_S, sr = utt["codes"], utt["semantic"], self.codec.sample_rate
        gen_QT = self.generate(semantic_S, seed=self.config.seed + index)
        totals["unprompted"].add_accuracy(token_accuracy_per_level(gen_QT, ref_QT), ref_QT.shape[1])
        ref_wav, gen_wav = self.decode(ref_QT), self.decode(gen_QT)
        totals["unprompted"].add("mel_distance", mel_distance(gen_wav, ref_wav, sr))
        rand_QT = torch.randint(0, self.codec.codebook_size, ref_QT.shape,
                                generator=torch.Generator().manual_seed(self.config.seed + index))
        totals["random"].add("mel_distance", mel_distance(self.decode(rand_QT), ref_wav, sr))
        if self.unigram_token is not None:
            totals["unigram"].add_accuracy([float((ref_QT[0] == self.unigram_token).float().mean())], ref_QT.shape[1])
        for metric in self.extra_metrics:
            totals["unprompted"].add(metric.name, metric(gen_wav, ref_wav, sr, utt.get("text", "")))
        prompted_wav = None
        if ref_QT.shape[1] > self.prompt + self.model.config.semantic_upsample:
            prm_QT = self.generate(semantic_S, ref_QT[:, :self.prompt], seed=self.config.seed + index)
            totals["prompted"].add_accuracy(token_accuracy_per_level(prm_QT, ref_QT, self.prompt),
                                            ref_QT.shape[1] - self.prompt)
            prompted_wav = self.decode(prm_QT)
            cut = int(self.prompt / self.codec.frame_rate * sr)
            totals["prompted"].add("mel_distance", mel_distance(prompted_wav[cut:], ref_wav[cut:], sr))
        if out_dir is not None and index < self.config.num_examples:
            waves = {"reference": ref_wav, "generated": gen_wav}
            if prompted_wav is not None:
                waves["prompted_3s"] = prompted_wav
            examples, name = output_dir(out_dir, "examples"), check_name(utt["utt_id"], "utt_id")
            for kind, wav in waves.items():
                atomic_write_wav(examples / f"{name}_{kind}.wav", wav, sr)
            save_spectrograms(examples / f"{name}.png", waves, sr, title=name)

    @torch.no_grad()
    def run(self, utterances: list[dict], out_dir: Path | None = None) -> dict:
        """Metrics over ``utterances`` (items of ``TokenDataset.utterance``); writes examples to ``out_dir``."""
        if not utterances:
            raise ValueError("generation evaluation needs at least one held-out utterance")
        totals = {k: _Totals() for k in ("unprompted", "prompted", "random", "unigram")}
        for i, utt in enumerate(utterances[:self.config.max_utterances]):
            self.utterance(utt, i, totals, out_dir)
        res = {k: v.result() for k, v in totals.items()}
        out = {"heldout_level1_accuracy": res["unprompted"]["accuracy_per_level"][0],
               "mel_distance_generated": res["unprompted"]["mel_distance"],
               "mel_distance_random": res["random"]["mel_distance"],
               "generated_unprompted": res["unprompted"], "generated_prompted": res["prompted"],
               "num_utterances": min(len(utterances), self.config.max_utterances)}
        if "accuracy_per_level" in res["unigram"]:
            out["unigram_level1_accuracy"] = res["unigram"]["accuracy_per_level"][0]
        if "mel_distance" in res["prompted"]:
            out["mel_distance_prompted"] = res["prompted"]["mel_distance"]
        return out

    @torch.no_grad()
    def long_form(self, utterances: list[dict], out_dir: Path, seconds: float | None = None) -> dict:
        """Concatenate held-out utterances to ``seconds`` (default ``long_seconds``), generate it in
        windows (prompted with the first ``long_prompt_seconds``), write ``generated_{N}s.wav``,
        ``reference_{N}s.wav`` (codec reconstruction) and ``spectrogram_{N}s.png``."""
        seconds = float(seconds or self.config.long_seconds)
        up, rate = self.model.config.semantic_upsample, self.codec.frame_rate
        needed = frames_for(seconds, rate, up)
        codes, semantic, total = [], [], 0
        while total < needed:
            for utt in utterances:
                codes.append(utt["codes"])
                semantic.append(utt["semantic"])
                total += utt["codes"].shape[1]
                if total >= needed:
                    break
        ref_QT = torch.cat(codes, dim=1)[:, :needed]
        semantic_S = torch.cat(semantic)[:needed // up]
        prompt = frames_for(self.config.long_prompt_seconds, rate, up)
        gen_QT = self.generate(semantic_S, ref_QT[:, :prompt] if prompt else None, seed=self.config.seed)
        sr, tag = self.codec.sample_rate, f"{int(round(seconds))}s"
        gen_wav, ref_wav = self.decode(gen_QT), self.decode(ref_QT)
        out_dir = output_dir(out_dir)
        atomic_write_wav(out_dir / f"generated_{tag}.wav", gen_wav, sr)
        atomic_write_wav(out_dir / f"reference_{tag}.wav", ref_wav, sr)
        save_spectrograms(out_dir / f"spectrogram_{tag}.png", {"reference (codec)": ref_wav, "generated": gen_wav}, sr,
                          title=f"{seconds:.0f} s, prompted with {self.config.long_prompt_seconds:g} s, windows of "
                                f"{self.config.window_seconds:g} s")
        return {"long_form_seconds": gen_wav.shape[-1] / sr,
                "long_form_level1_accuracy": token_accuracy_per_level(gen_QT, ref_QT, prompt)[0],
                "long_form_mel_distance": mel_distance(gen_wav, ref_wav, sr)}
