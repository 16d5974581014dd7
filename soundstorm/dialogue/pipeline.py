"""The dialogue pipeline: script + one voice per speaker → text-to-semantic → SoundStorm → codec → one wav.

Stages, each timed (the paper reports 1.4 s / 0.5 s / 0.1 s on a TPU-v4 for 30 s of dialogue):

1. **text → semantic**: all turns in one batch through :func:`soundstorm.t2s.generate_semantic`, each
   turn prompted with its speaker's semantic tokens (so its voice and pace can follow the speaker);
2. **SoundStorm**: all turns in one padded batch through :func:`soundstorm.sampler.generate`; each
   turn's sequence is ``[speaker prompt | turn]`` with the prompt's codec codes as the acoustic
   prompt (the paper's voice prompting), and the prompt part is cut from the output. Generating per
   turn, rather than the whole dialogue as one sequence, keeps every turn next to its own
   speaker's prompt and its attention length short;
3. **codec decode**, per turn; each turn's leading and trailing quiet (frames ``trim_db`` below its
   loudest) is cut, so the turns are joined with exactly ``pause_seconds`` of silence and the times
   in the JSON are where the speech starts and ends.

:class:`DialogueResult` holds the waveform, each turn's speaker, text and start/end time, the
latencies, and writes ``dialogue.wav``, ``dialogue.json`` and ``dialogue.png`` (turns marked).

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from soundstorm.dialogue.script import Turn, parse_script
from soundstorm.sampler import SamplerConfig, codebooks_for, generate
from soundstorm.data.audio import load_audio, resample
from soundstorm.dialogue.evaluate import quiet_runs
from soundstorm.dialogue.plot import save_dialogue_spectrogram
from soundstorm.io import atomic_write_bytes, atomic_write_wav
from soundstorm.assets import check_record, load_assets, open_checkpoint, read_record
from soundstorm.paths import check_name
from soundstorm.t2s import TextToSemantic, generate_semantic


@dataclass
class Voice:
    """A speaker's prompt: semantic tokens ``[P]`` and codec codes ``[Q, P × upsample]``, and its audio."""

    semantic_P: torch.Tensor
    codes_QT: torch.Tensor
    wav_N: torch.Tensor
    sample_rate: int


@dataclass
class DialogueResult:
    wav_N: torch.Tensor
    sample_rate: int
    turns: list[dict]
    latency: dict
    voices: dict = field(default_factory=dict, repr=False)

    @property
    def duration(self) -> float:
        return self.wav_N.shape[0] / self.sample_rate

    def turn_audio(self, index: int) -> torch.Tensor:
        turn = self.turns[index]
        return self.wav_N[round(turn["start"] * self.sample_rate): round(turn["end"] * self.sample_rate)]

    def to_dict(self) -> dict:
        return {"sample_rate": self.sample_rate, "duration": self.duration, "turns": self.turns,
                "latency": self.latency}

    def save(self, out_dir, stem: str = "dialogue", extra: dict | None = None) -> dict[str, Path]:
        """Write ``<stem>.wav``, ``<stem>.json`` (turns, latency, ``extra``) and ``<stem>.png``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = check_name(stem, "stem")
        paths = {"wav": atomic_write_wav(out_dir / f"{stem}.wav", self.wav_N, self.sample_rate),
                 "png": save_dialogue_spectrogram(out_dir / f"{stem}.png", self.wav_N, self.sample_rate, self.turns)}
        paths["json"] = out_dir / f"{stem}.json"
        payload = {**self.to_dict(), **(extra or {}), "files": {k: str(v) for k, v in paths.items()}}
        atomic_write_bytes(paths["json"], json.dumps(payload, indent=2).encode())
        return paths


class DialoguePipeline:
    """Text-to-semantic model + SoundStorm + codec + semantic tokenizer, ready to speak scripts."""

    def __init__(self, t2s, soundstorm, codec, tokenizer, *, sampler: SamplerConfig | None = None,
                 t2s_sampler: SamplerConfig | None = None, prompt_seconds: float = 3.0, pause_seconds: float = 0.4,
                 trim_db: float | None = 40.0):
        self.t2s, self.soundstorm, self.codec, self.tokenizer = t2s.eval(), soundstorm.eval(), codec, tokenizer
        self.sampler = sampler or SamplerConfig()
        self.t2s_sampler = t2s_sampler or SamplerConfig(steps=(16,))
        if not prompt_seconds > 0:
            raise ValueError(f"prompt_seconds must be > 0, got {prompt_seconds!r}")
        if not pause_seconds >= 0:
            raise ValueError(f"pause_seconds must be >= 0, got {pause_seconds!r}")
        if trim_db is not None and not trim_db > 0:
            raise ValueError(f"trim_db must be None (no trimming) or > 0, got {trim_db!r}")
        self.prompt_seconds, self.pause_seconds, self.trim_db = float(prompt_seconds), float(pause_seconds), trim_db
        self._check_components()

    def _check_components(self) -> None:
        s, t = self.soundstorm.config, self.t2s.config
        pairs = (("t2s semantic_vocab_size", t.semantic_vocab_size, "soundstorm semantic_vocab_size",
                  s.semantic_vocab_size),
                 ("semantic tokenizer vocab_size", self.tokenizer.vocab_size, "soundstorm semantic_vocab_size",
                  s.semantic_vocab_size),
                 ("codec num_levels", self.codec.num_levels, "soundstorm num_levels", s.num_levels),
                 ("codec codebook_size", self.codec.codebook_size, "soundstorm codebook_size", s.codebook_size),
                 ("codec frame_rate", self.codec.frame_rate, "semantic frame_rate × soundstorm semantic_upsample",
                  self.tokenizer.frame_rate * s.semantic_upsample))
        for name_a, a, name_b, b in pairs:
            if a != b:
                raise ValueError(f"the dialogue's components disagree: {name_a}={a} but {name_b}={b}; use the "
                                 f"checkpoints trained on this token folder")

    @classmethod
    def from_pretrained(cls, t2s_checkpoint, soundstorm_checkpoint, assets, *, use_ema: bool = True,
                        device="cpu", **kwargs) -> "DialoguePipeline":
        """Load both stages' checkpoints and the codec / semantic tokenizer saved in ``assets`` (a token folder),
        checked as every consumer checks them (:func:`soundstorm.assets.open_checkpoint`): the SoundStorm
        checkpoint against the folder's codec and tokenizer, the text-to-semantic one against its semantic
        tokenizer, each by the fingerprints it records (a token folder of another prepare run is refused)."""
        for name, path in (("t2s_checkpoint", t2s_checkpoint), ("soundstorm_checkpoint", soundstorm_checkpoint)):
            if path is None or not Path(path).is_dir():
                raise FileNotFoundError(f"{name}={str(path)!r}: directory not found")
        loaded = load_assets(assets, "assets")
        soundstorm, _ = open_checkpoint(soundstorm_checkpoint, loaded, field="soundstorm_checkpoint", use_ema=use_ema,
                                        device=device)
        t2s = TextToSemantic.from_pretrained(t2s_checkpoint, map_location=device)
        if t2s.config.semantic_vocab_size != loaded.tokenizer.vocab_size:
            raise ValueError(f"assets={str(assets)!r} holds a semantic tokenizer of vocab_size="
                             f"{loaded.tokenizer.vocab_size}, but t2s_checkpoint={str(t2s_checkpoint)!r} was trained "
                             f"with semantic_vocab_size={t2s.config.semantic_vocab_size}; pass the token folder the "
                             "checkpoints were trained on")
        check_record(read_record(t2s_checkpoint), loaded, "assets", t2s_checkpoint, kinds=("semantic",),
                     checkpoint_field="t2s_checkpoint")
        return cls(t2s, soundstorm, loaded.codec, loaded.tokenizer, **kwargs)

    # ------------------------------------------------------------------ voices
    def voice(self, wav, sample_rate: int | None = None, field: str = "voice prompt") -> Voice:
        """A speaker's prompt from a wav path or a ``[N]`` waveform: its first ``prompt_seconds``. A path is
        checked as every audio input is (:func:`soundstorm.data.audio.load_audio`; ``field`` names it)."""
        if isinstance(wav, (str, Path)):
            wav_N, sample_rate = load_audio(wav, field, 1 / self.tokenizer.frame_rate)
        else:
            if not isinstance(wav, torch.Tensor) or wav.ndim != 1 or sample_rate is None:
                raise ValueError("a voice is a wav path, or a 1-D waveform tensor with its sample_rate")
            wav_N = wav.float()
        upsample = self.soundstorm.config.semantic_upsample
        wav_N = wav_N[: int(round(self.prompt_seconds * sample_rate))]
        semantic_S = self.tokenizer.tokenize(resample(wav_N, sample_rate, self.tokenizer.sample_rate)[None])[0].long()
        codes_QT = self.codec.encode(resample(wav_N, sample_rate, self.codec.sample_rate)[None])[0].long()
        num_semantic = min(semantic_S.shape[0], codes_QT.shape[1] // upsample)
        if num_semantic < 1:
            raise ValueError("a voice prompt is shorter than one semantic frame")
        return Voice(semantic_S[:num_semantic], codes_QT[:, : num_semantic * upsample],
                     resample(wav_N, sample_rate, self.codec.sample_rate), self.codec.sample_rate)

    # ------------------------------------------------------------------ speaking
    @torch.no_grad()
    def speak(self, script, voices: dict, *, seed: int = 0, speed: float = 1.0) -> DialogueResult:
        """Speak ``script`` (string, ``Path`` or ``@file``) with ``voices`` ``{speaker: wav path | Voice}``."""
        turns, prompts = self.prepare(script, voices)
        started = time.perf_counter()
        semantic = self._text_to_semantic(turns, prompts, seed, speed)
        return self.render(turns, prompts, semantic, seed, {"text_to_semantic_s": time.perf_counter() - started})

    def prepare(self, script, voices: dict) -> tuple[list[Turn], dict]:
        """``(turns, {speaker: Voice})``: the parsed script and the encoded voice prompts."""
        if not isinstance(voices, dict) or not voices:
            raise ValueError(f"voices must be a non-empty dict {{speaker: prompt wav}}, got {voices!r}")
        turns = parse_script(script, list(voices))
        for name, v in voices.items():
            if isinstance(v, (str, Path)) and not Path(v).is_file():
                raise FileNotFoundError(f"voices.{name}={str(v)!r}: voice prompt file not found")
        return turns, {name: v if isinstance(v, Voice) else self.voice(v, field=f"voices.{name}")
                       for name, v in voices.items()}

    @torch.no_grad()
    def render(self, turns: list[Turn], prompts: dict, semantic: list[torch.Tensor], seed: int = 0,
               latency: dict | None = None) -> DialogueResult:
        """SoundStorm + codec for given per-turn semantic tokens (from the first stage, or true ones)."""
        latency, started = dict(latency or {}), time.perf_counter()
        codes = self._semantic_to_codes(turns, prompts, semantic, seed)
        latency["soundstorm_s"] = time.perf_counter() - started
        started = time.perf_counter()
        waves = [self.codec.decode(codes_QT[None])[0].float().cpu() for codes_QT in codes]
        latency["codec_decode_s"] = time.perf_counter() - started
        waves = [self._trim(wave_N) for wave_N in waves]
        latency["total_s"] = sum(latency.values())
        wav_N, records = self._join(turns, waves, semantic)
        latency["audio_s"] = wav_N.shape[0] / self.codec.sample_rate
        latency["real_time_factor"] = latency["total_s"] / max(latency["audio_s"], 1e-9)
        return DialogueResult(wav_N, self.codec.sample_rate, records, latency, prompts)

    def _text_to_semantic(self, turns: list[Turn], prompts: dict, seed: int, speed: float) -> list[torch.Tensor]:
        return generate_semantic(self.t2s, [t.text for t in turns], [prompts[t.speaker].semantic_P for t in turns],
                                 speed=speed, config=self.t2s_sampler, generator=torch.Generator().manual_seed(seed))

    def _semantic_to_codes(self, turns, prompts, semantic, seed: int) -> list[torch.Tensor]:
        """One padded SoundStorm batch of ``[prompt | turn]`` sequences; returns each turn's codes ``[Q, T]``."""
        cfg = self.soundstorm.config
        up, mask_id = cfg.semantic_upsample, cfg.mask_id
        device = next(self.soundstorm.parameters()).device
        sequences = [torch.cat([prompts[t.speaker].semantic_P, s]) for t, s in zip(turns, semantic)]
        num_semantic = max(s.shape[0] for s in sequences)
        num_prompt = max(prompts[t.speaker].codes_QT.shape[1] for t in turns)
        semantic_BS = torch.zeros(len(turns), num_semantic, dtype=torch.long)
        prompt_BQT = torch.full((len(turns), cfg.num_levels, num_prompt), mask_id, dtype=torch.long)
        for b, (turn, sequence) in enumerate(zip(turns, sequences)):
            semantic_BS[b, : sequence.shape[0]] = sequence
            codes_QT = prompts[turn.speaker].codes_QT
            prompt_BQT[b, :, : codes_QT.shape[1]] = codes_QT
        lengths_B = torch.tensor([s.shape[0] * up for s in sequences])
        codes_BQT = generate(self.soundstorm, semantic_BS.to(device), prompt=prompt_BQT.to(device),
                             lengths=lengths_B.to(device), config=self.sampler,
                             generator=torch.Generator().manual_seed(seed + 1),
                             codebooks=codebooks_for(self.sampler, self.codec))
        return [codes_BQT[b, :, prompts[t.speaker].codes_QT.shape[1]: lengths_B[b]].cpu()
                for b, t in enumerate(turns)]

    def _trim(self, wave_N: torch.Tensor) -> torch.Tensor:
        """``wave_N`` without its leading and trailing frames ``trim_db`` below its loudest (20 ms frames)."""
        if self.trim_db is None or wave_N.numel() == 0:
            return wave_N
        quiet_F, frame_s = quiet_runs(wave_N, self.codec.sample_rate, self.trim_db)
        loud = (~quiet_F).nonzero().flatten()
        if loud.numel() == 0:
            return wave_N
        hop = round(frame_s * self.codec.sample_rate)
        return wave_N[int(loud[0]) * hop: (int(loud[-1]) + 1) * hop]

    def _join(self, turns, waves, semantic) -> tuple[torch.Tensor, list[dict]]:
        rate = self.codec.sample_rate
        pause_N = torch.zeros(int(round(self.pause_seconds * rate)))
        pieces, records, position = [], [], 0
        for i, (turn, wave_N, semantic_S) in enumerate(zip(turns, waves, semantic)):
            if i:
                pieces.append(pause_N)
                position += pause_N.shape[0]
            pieces.append(wave_N)
            records.append({"index": i, "speaker": turn.speaker, "text": turn.text, "start": position / rate,
                            "end": (position + wave_N.shape[0]) / rate,
                            "num_semantic_frames": int(semantic_S.shape[0])})
            position += wave_N.shape[0]
        return torch.cat(pieces), records
