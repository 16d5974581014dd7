"""`soundstorm-generate`: semantic tokens (from audio or token files) → codes and audio.

Each input is an audio file (``.wav``/``.flac``/``.ogg``/``.mp3``, tokenized by the configured semantic
tokenizer) or a ``.npy`` file of semantic ids ``[S]``. With ``prompt_wav``, its first
``prompt_seconds`` are a voice prompt, as in the paper: their semantic tokens are put in front of the
input's, their codec codes are the acoustic prompt, and the prompt part is cut from the output.
Longer than ``window_seconds`` → generated in windows, each prompted by the last
``window_prompt_seconds`` of the previous window (:mod:`soundstorm.longform`).
Writes ``out_dir/<stem>.wav`` and ``out_dir/<stem>.codes.npy`` (``[Q, T]`` int64). Exit code 2 on bad inputs.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from soundstorm import builders
from soundstorm.cli._common import run_with_backend
from soundstorm.data.audio import BadAudio, read_audio, resample
from soundstorm.evaluation.generation import frames_for, write_wav
from soundstorm.longform import generate_windowed
from soundstorm.model import SoundStorm

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
    """``(semantic_S, codes_QT)`` of the first ``seconds`` of ``path``, aligned to whole semantic frames."""
    semantic_S = tokenizer.tokenize(load_wav(path, tokenizer.sample_rate)[None])[0].long()
    codes_QT = codec.encode(load_wav(path, codec.sample_rate)[None])[0].long()
    num_semantic = min(int(seconds * tokenizer.frame_rate), semantic_S.shape[0], codes_QT.shape[1] // upsample)
    if num_semantic < 1:
        raise ValueError(f"prompt_wav={str(path)!r} is shorter than one semantic frame")
    return semantic_S[:num_semantic], codes_QT[:, :num_semantic * upsample]


def run(cfg: DictConfig, backend) -> list[Path]:
    model, _ = SoundStorm.from_checkpoint(cfg.checkpoint, bool(cfg.use_ema), backend.device)
    backend.configure_model(model)  # attention kernel: Pallas flash on TPU, SDPA elsewhere
    model = backend.prepare_inference_model(model)  # int8 linear layers with backend=cpu backend.options.dtype=int8
    up = model.config.semantic_upsample
    codec = builders.build_codec(builders.resolved(cfg.codec))
    tokenizer_cache = []

    def tokenizer():
        if not tokenizer_cache:
            tokenizer_cache.append(builders.build_semantic(builders.resolved(cfg.semantic)))
        return tokenizer_cache[0]

    sampler = builders.build_sampler(cfg.sampler, model.config.num_levels)
    inputs = list(cfg.inputs) if not isinstance(cfg.inputs, str) else [cfg.inputs]
    prompt_S, prompt_QT = None, None
    if cfg.prompt_wav:
        prompt_S, prompt_QT = voice_prompt(cfg.prompt_wav, float(cfg.prompt_seconds), codec, tokenizer(), up)
    out_dir, written = Path(cfg.out_dir), []
    for i, path in enumerate(inputs):
        semantic_S = load_semantic(path, tokenizer, model.config.semantic_vocab_size)
        skip = 0
        if prompt_S is not None:
            semantic_S, skip = torch.cat([prompt_S, semantic_S]), prompt_QT.shape[1]
        codes_QT = generate_windowed(model, semantic_S, window_frames=frames_for(cfg.window_seconds, codec.frame_rate, up),
                                     prompt_frames=frames_for(cfg.window_prompt_seconds, codec.frame_rate, up),
                                     prompt_QT=prompt_QT, config=sampler,
                                     generator=torch.Generator().manual_seed(int(cfg.seed) + i),
                                     mark_step=backend.mark_step)[:, skip:]
        stem = Path(path).stem
        out_dir.mkdir(parents=True, exist_ok=True)
        np.save(out_dir / f"{stem}.codes.npy", codes_QT.numpy().astype(np.int64))
        written.append(write_wav(out_dir / f"{stem}.wav", codec.decode(codes_QT[None])[0], codec.sample_rate))
        print(f"{path} -> {written[-1]} ({codes_QT.shape[1] / codec.frame_rate:.2f} s, codes {tuple(codes_QT.shape)})")
    return written


@hydra.main(config_path="pkg://soundstorm.configs", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_with_backend("soundstorm-generate", cfg.backend, lambda backend: run(cfg, backend))


if __name__ == "__main__":
    main()
