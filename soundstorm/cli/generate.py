"""`soundstorm-generate`: semantic tokens (from audio or token files) → codes and audio.

Each input is an audio file (``.wav``/``.flac``/``.ogg``/``.mp3``, tokenized by the configured semantic
tokenizer) or a ``.npy`` file of semantic ids ``[S]``. With ``prompt_wav``, its first
``prompt_seconds`` are a voice prompt, as in the paper: their semantic tokens are put in front of the
input's, their codec codes are the acoustic prompt, and the prompt part is cut from the output.
Longer than ``window_seconds`` → generated in windows, each prompted by the last
``window_prompt_seconds`` of the previous window (:mod:`soundstorm.longform`).
The codec and tokenizer are the ones saved in ``assets`` (a ``soundstorm-prepare`` output), checked
against what the checkpoint was trained on (settings and fingerprints, :mod:`soundstorm.assets`).
Writes ``out_dir/<stem>.wav`` and ``out_dir/<stem>.codes.npy`` (``[Q, T]`` int64), atomically; an
existing output is kept unless ``overwrite=true``. Every check runs before any work; exit code 2 on
bad inputs.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from soundstorm import builders
from soundstorm.assets import open_checkpoint, require_checkpoint_dir
from soundstorm.cli._common import run_with_backend
from soundstorm.data.audio import BadAudio, read_audio, resample
from soundstorm.longform import generate_windowed, window_frames
from soundstorm.sampler import codebooks_for
from soundstorm.io import atomic_file, atomic_write_wav, check_output_dir
from soundstorm.quantize import is_quantized
from soundstorm.resources import check_memory, codec_decode_fn, estimate_generation

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def load_wav(path, sample_rate: int) -> torch.Tensor:
    if not Path(path).is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        wav_N, rate = read_audio(path, 0.0)
    except BadAudio as err:
        raise ValueError(f"{path}: {err}") from err
    return resample(wav_N, rate, sample_rate)


def load_semantic(path, tokenizer_factory, vocab_size: int) -> torch.Tensor:
    """Semantic ids ``[S]`` from an audio file (tokenized) or a ``.npy`` token file."""
    path = Path(path)
    if path.suffix.lower() in AUDIO_SUFFIXES:
        tokenizer = tokenizer_factory()
        return tokenizer.tokenize(load_wav(path, tokenizer.sample_rate)[None])[0].long()
    if path.suffix.lower() != ".npy":
        raise ValueError(f"input {str(path)!r}: expected an audio file {AUDIO_SUFFIXES} or a .npy of semantic ids")
    if not path.is_file():
        raise FileNotFoundError(f"token file not found: {path}")
    ids = np.load(path, allow_pickle=False)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or ids.size == 0:
        raise ValueError(f"{path}: expected a non-empty 1-D integer array of semantic ids, got {ids.dtype} {ids.shape}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"{path}: semantic ids in [{ids.min()}, {ids.max()}], expected [0, {vocab_size - 1}]")
    return torch.from_numpy(ids.astype(np.int64))


def voice_prompt(path, seconds: float, codec, tokenizer, upsample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(semantic_S, codes_QT)`` of the first ``seconds`` of ``path``, aligned to whole semantic frames.
    A prompt shorter than ``seconds`` is an error (not silently a shorter prompt)."""
    wav_N = load_wav(path, tokenizer.sample_rate)
    available = wav_N.shape[0] / tokenizer.sample_rate
    if available < seconds:
        raise ValueError(f"prompt_wav={str(path)!r} is {available:.2f} s long, shorter than prompt_seconds={seconds}; "
                         f"expected a prompt at least that long (or set prompt_seconds<={available:.2f})")
    semantic_S = tokenizer.tokenize(wav_N[None])[0].long()
    codes_QT = codec.encode(load_wav(path, codec.sample_rate)[None])[0].long()
    num_semantic = min(int(seconds * tokenizer.frame_rate), semantic_S.shape[0], codes_QT.shape[1] // upsample)
    if num_semantic < 1:
        raise ValueError(f"prompt_seconds={seconds} is shorter than one semantic frame "
                         f"({1 / tokenizer.frame_rate:.3f} s); expected a longer prompt")
    return semantic_S[:num_semantic], codes_QT[:, :num_semantic * upsample]


def plan_outputs(inputs: list[str], out_dir: Path, overwrite: bool) -> list[Path]:
    """``out_dir/<stem>`` per input; two inputs with one stem, or an existing output without
    ``overwrite=true``, are refused before any work (an output is never overwritten silently)."""
    stems: dict[str, str] = {}
    for path in inputs:
        stem = Path(path).stem
        if stem in stems:
            raise ValueError(f"inputs {stems[stem]!r} and {path!r} would both write {out_dir / stem}.wav; expected "
                             "inputs with distinct file names (or run them with different out_dir)")
        stems[stem] = path
    bases = [out_dir / stem for stem in stems]
    existing = [str(b) + suffix for b in bases for suffix in (".wav", ".codes.npy") if Path(str(b) + suffix).exists()]
    if existing and not overwrite:
        raise ValueError(f"out_dir={str(out_dir)!r} already holds {existing[0]}" +
                         (f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else "") +
                         "; expected a fresh out_dir, or overwrite=true to replace them")
    return bases


def check_settings(cfg: DictConfig) -> list[str]:
    """The input list, after checking every field a user types (before any work)."""
    for name in ("checkpoint", "assets", "inputs"):
        if OmegaConf.is_missing(cfg, name) or cfg[name] in (None, "", []):
            raise ValueError(f"{name} is not set; expected {name}={USAGE[name]}")
    for name in ("prompt_seconds", "window_seconds", "window_prompt_seconds"):
        value = cfg[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name}={value!r}; expected a number of seconds > 0")
    if not isinstance(cfg.get("memory_check", True), bool):
        raise ValueError(f"memory_check={cfg.memory_check!r}; expected true or false")
    return [str(cfg.inputs)] if isinstance(cfg.inputs, str) else [str(i) for i in cfg.inputs]


def check_generation_memory(cfg, model, codec, sampler, num_frames: int, window: int, backend) -> str:
    """Refuse an input whose generation would not fit in memory (:mod:`soundstorm.resources`: the model,
    one window's sampler tensors, the whole clip's codes and the codec's decode of it), before any work;
    the summary line to print otherwise."""
    estimate = estimate_generation(model.config, batch_size=1, num_frames=num_frames, window_frames=window,
                                   sampler=sampler, dtype="int8" if is_quantized(model) else "float32",
                                   attention_scores=backend.device.type == "xla",
                                   decode_fn=codec_decode_fn(codec) if num_frames > DECODE_PROBE_FRAMES else None)
    return check_memory(estimate, backend.device, f"generating {num_frames / codec.frame_rate:.1f} s (the longest "
                        "input)", f"expected a smaller request: a lower window_seconds (now {cfg.window_seconds:g}; each "
                        "window is generated on its own, so the sampler's memory follows it), shorter inputs (the codes "
                        "and the codec's decode follow the whole clip), or set memory_check=false to try anyway")


DECODE_PROBE_FRAMES = 200  # the codec's decode is measured on clips this long: shorter outputs cost less than that


USAGE = {"checkpoint": "CHECKPOINT_DIR", "assets": "TOKEN_FOLDER (the soundstorm-prepare output the model was "
         "trained on)", "inputs": "[a.wav,b.npy]"}


def run(cfg: DictConfig, backend) -> list[Path]:
    inputs = check_settings(cfg)
    out_dir = check_output_dir(cfg.out_dir, "out_dir")
    bases = plan_outputs(inputs, out_dir, bool(cfg.overwrite))
    require_checkpoint_dir(cfg.checkpoint)  # the fields in the order they are typed: checkpoint, then assets
    assets = builders.build_assets(cfg.assets, "assets", cfg.get("codec"), cfg.get("semantic"))
    model, _ = open_checkpoint(cfg.checkpoint, assets, use_ema=bool(cfg.use_ema), device=backend.device)
    model = backend.prepare_inference_model(model)  # int8 linear layers with backend=cpu backend.options.dtype=int8
    codec, up = assets.codec, model.config.semantic_upsample
    sampler = builders.build_sampler(cfg.sampler, model.config.num_levels)
    window, window_prompt = window_frames(float(cfg.window_seconds), float(cfg.window_prompt_seconds),
                                          codec.frame_rate, up)
    prompt_S, prompt_QT = None, None
    if cfg.prompt_wav:
        prompt_S, prompt_QT = voice_prompt(cfg.prompt_wav, float(cfg.prompt_seconds), codec, assets.tokenizer, up)
    semantics = [load_semantic(path, lambda: assets.tokenizer, model.config.semantic_vocab_size) for path in inputs]
    if cfg.get("memory_check", True):  # the longest input, before the first window is generated
        longest = max(s.shape[0] for s in semantics) + (0 if prompt_S is None else prompt_S.shape[0])
        print(check_generation_memory(cfg, model, codec, sampler, longest * up, window, backend), flush=True)
    written = []
    for i, (path, base, semantic_S) in enumerate(zip(inputs, bases, semantics)):
        skip = 0
        if prompt_S is not None:
            semantic_S, skip = torch.cat([prompt_S, semantic_S]), prompt_QT.shape[1]
        codes_QT = generate_windowed(model, semantic_S, window_frames=window, prompt_frames=window_prompt,
                                     prompt_QT=prompt_QT, config=sampler,
                                     generator=torch.Generator().manual_seed(int(cfg.seed) + i),
                                     mark_step=backend.mark_step, codebooks=codebooks_for(sampler, codec))[:, skip:]
        with atomic_file(Path(f"{base}.codes.npy")) as tmp, open(tmp, "wb") as f:
            np.save(f, codes_QT.numpy().astype(np.int64))
        atomic_write_wav(Path(f"{base}.wav"), codec.decode(codes_QT[None])[0], codec.sample_rate)
        written.append(Path(f"{base}.wav"))
        print(f"{path} -> {written[-1]} ({codes_QT.shape[1] / codec.frame_rate:.2f} s, codes {tuple(codes_QT.shape)})")
    return written


@hydra.main(config_path="pkg://soundstorm.configs", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_with_backend("soundstorm-generate", cfg.backend, lambda backend: run(cfg, backend))


if __name__ == "__main__":
    main()
