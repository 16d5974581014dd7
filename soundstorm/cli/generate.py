"""`soundstorm-generate`: semantic tokens (from audio or token files) → codes and audio.

Each input is an audio file (``.wav``/``.flac``/``.ogg``/``.mp3``, tokenized by the configured semantic
tokenizer) or a ``.npy`` file of semantic ids ``[S]``. With ``prompt_wav``, its first
``prompt_seconds`` are a voice prompt, as in the paper: their semantic tokens are put in front of the
input's, their codec codes are the acoustic prompt, and the prompt part is cut from the output.
Longer than ``window_seconds`` → generated in windows, each prompted by the last
``window_prompt_seconds`` of the previous window (:mod:`soundstorm.longform`).
The codec and tokenizer are the ones saved in ``assets`` (a ``soundstorm-prepare`` output), checked
against what the checkpoint was trained on (settings and fingerprints, :mod:`soundstorm.assets`).
Writes ``out_dir/<stem>.wav`` and then ``out_dir/<stem>.codes.npy`` (``[Q, T]`` int64), each atomically, so
a ``.codes.npy`` never exists without its wav. The folder follows :mod:`soundstorm.outputs`: one writer at a
time, an existing output refused unless ``overwrite=true`` (which removes it once every check has passed).
Every check runs before any work; exit code 2 on bad inputs or a folder in use, 1 on an operating-system
error such as a full disk (the message lists the complete outputs and the inputs left to run).
Each input is sampled with its own seed (:func:`input_seed`: a hash of ``seed`` and its file
name, not its position), so adding or reordering inputs leaves the others' outputs unchanged.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from soundstorm import builders
from soundstorm.assets import open_checkpoint, require_checkpoint_dir
from soundstorm.cli._common import run_with_backend
from soundstorm.cli._hydra import cli_schema, hydra_main
from soundstorm.codecs.base import min_decode_frames
from soundstorm.data.audio import load_audio, resample
from soundstorm.longform import generate_windowed, window_frames
from soundstorm.sampler import codebooks_for
from soundstorm.io import atomic_file, atomic_write_wav, read_npy
from soundstorm.outputs import claim
from soundstorm.quantize import is_quantized
from soundstorm.resources import check_memory, codec_decode_fn, estimate_generation

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def min_semantic_ids(codec, upsample: int) -> int:
    """The fewest semantic ids an input may hold: its codes (``ids × upsample`` frames) must be enough
    for the codec to decode (:func:`soundstorm.codecs.base.min_decode_frames`)."""
    return max(1, math.ceil(min_decode_frames(codec) / upsample))


def check_input_length(path, num_ids: int, codec, upsample: int) -> None:
    """Refuse an input of fewer than :func:`min_semantic_ids` semantic ids, naming the file, its length and
    the minimum (before any work: a codec that cannot decode it would fail after the codes were written)."""
    fewest, rate = min_semantic_ids(codec, upsample), codec.frame_rate / upsample
    if num_ids < fewest:
        raise ValueError(f"input {str(path)!r} holds {num_ids} semantic ids ({num_ids / rate:.3f} s at {rate:g} Hz), "
                         f"fewer than {fewest} ({fewest / rate:.3f} s), the shortest input the {codec.name} codec "
                         f"decodes ({min_decode_frames(codec)} frames at {codec.frame_rate:g} Hz); expected a longer "
                         "input")


def load_semantic(path, tokenizer_factory, vocab_size: int, codec, upsample: int) -> torch.Tensor:
    """Semantic ids ``[S]`` from an audio file (checked, :func:`soundstorm.data.audio.load_audio`, and
    tokenized) or a ``.npy`` token file, at least :func:`min_semantic_ids` long."""
    path = Path(path)
    if path.suffix.lower() in AUDIO_SUFFIXES:
        tokenizer = tokenizer_factory()
        fewest = min_semantic_ids(codec, upsample)
        wav_N, _ = load_audio(path, "inputs", fewest / tokenizer.frame_rate, tokenizer.sample_rate,
                              f"{fewest} semantic frames, the shortest input the codec decodes")
        ids = tokenizer.tokenize(wav_N[None])[0].long()
        check_input_length(path, ids.shape[0], codec, upsample)
        return ids
    if path.suffix.lower() != ".npy":
        raise ValueError(f"input {str(path)!r}: expected an audio file {AUDIO_SUFFIXES} or a .npy of semantic ids")
    ids = read_npy(path, "semantic ids [S]")
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or ids.size == 0:
        raise ValueError(f"{path}: expected a non-empty 1-D integer array of semantic ids, got {ids.dtype} {ids.shape}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"{path}: semantic ids in [{ids.min()}, {ids.max()}], expected [0, {vocab_size - 1}]")
    check_input_length(path, ids.size, codec, upsample)
    return torch.from_numpy(ids.astype(np.int64))


def voice_prompt(path, seconds: float, codec, tokenizer, upsample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(semantic_S, codes_QT)`` of the first ``seconds`` of ``path``, aligned to whole semantic frames.
    A prompt shorter than ``seconds`` is an error (not silently a shorter prompt)."""
    wav_N, rate = load_audio(path, "prompt_wav", 1 / tokenizer.frame_rate)
    available = wav_N.shape[0] / rate
    if available < seconds:
        raise ValueError(f"prompt_wav={str(path)!r} is {available:.2f} s long, shorter than prompt_seconds={seconds}; "
                         f"expected a prompt at least that long (or set prompt_seconds<={available:.2f})")
    semantic_S = tokenizer.tokenize(resample(wav_N, rate, tokenizer.sample_rate)[None])[0].long()
    codes_QT = codec.encode(resample(wav_N, rate, codec.sample_rate)[None])[0].long()
    num_semantic = min(int(seconds * tokenizer.frame_rate), semantic_S.shape[0], codes_QT.shape[1] // upsample)
    if num_semantic < 1:
        raise ValueError(f"prompt_seconds={seconds} is shorter than one semantic frame "
                         f"({1 / tokenizer.frame_rate:.3f} s); expected a longer prompt")
    return semantic_S[:num_semantic], codes_QT[:, :num_semantic * upsample]


def input_seed(seed: int, name: str) -> int:
    """The sampler seed of the input named ``name`` (its file stem, which is also its output's name):
    a stable hash (sha256) of ``seed`` and the name, so an input's output does not change when inputs
    are reordered, added or removed (``seed + position`` would)."""
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # < 2**63: any torch.Generator seed


def plan_outputs(inputs: list[str], out_dir: Path) -> list[Path]:
    """``out_dir/<stem>`` per input; two inputs with one stem are refused before any work (one would
    overwrite the other). Outputs of an earlier run are the claim's concern (:func:`run`)."""
    stems: dict[str, str] = {}
    for path in inputs:
        stem = Path(path).stem
        if stem in stems:
            raise ValueError(f"inputs {stems[stem]!r} and {path!r} would both write {out_dir / stem}.wav; expected "
                             "inputs with distinct file names (or run them with different out_dir)")
        stems[stem] = path
    return [out_dir / stem for stem in stems]


def write_output(base: Path, wav_N: torch.Tensor, sample_rate: int, codes_QT: torch.Tensor) -> Path:
    """``<base>.wav``, then ``<base>.codes.npy``, each atomically: a ``.codes.npy`` exists only beside its
    complete wav (the codes are the pair's last file). When the codes cannot be written, the wav just
    written is removed again, so a failure leaves either the whole pair or none of it."""
    wav_path, codes_path = Path(f"{base}.wav"), Path(f"{base}.codes.npy")
    atomic_write_wav(wav_path, wav_N, sample_rate)
    try:
        with atomic_file(codes_path) as tmp, open(tmp, "wb") as f:
            np.save(f, codes_QT.numpy().astype(np.int64))
    except BaseException:
        wav_path.unlink(missing_ok=True)
        raise
    return wav_path


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
    out_dir = Path(cfg.out_dir)
    bases = plan_outputs(inputs, out_dir)
    written: list[Path] = []

    def kept() -> str:  # said when an OSError (a full disk) stops the run: what is whole, how to go on
        left = [path for path, base in zip(inputs, bases) if Path(f"{base}.wav") not in written]
        n = len(written)
        done = (f"{n} output{'s' if n != 1 else ''} finished before it {'are' if n != 1 else 'is'} complete, each "
                f"wav with its .codes.npy ({', '.join(p.name for p in written)})" if written else
                "No output was finished")
        return (f"It stopped at the output of {left[0]}. {done}; no partial output was left (every file is written "
                f"to a temporary name and renamed, and a .codes.npy only beside its wav). Fix the cause (free space), "
                f"then rerun with the inputs not written yet: inputs=[{','.join(left)}]")

    with claim(out_dir, "out_dir", "soundstorm-generate", outputs=[f"{b.name}{suffix}" for b in bases
                                                                    for suffix in (".wav", ".codes.npy")],
               overwrite=cfg.overwrite, enabled=backend.dist.is_main, kept=kept) as out:
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
        semantics = [load_semantic(path, lambda: assets.tokenizer, model.config.semantic_vocab_size, codec, up)
                     for path in inputs]
        if cfg.get("memory_check", True):  # the longest input, before the first window is generated
            longest = max(s.shape[0] for s in semantics) + (0 if prompt_S is None else prompt_S.shape[0])
            print(check_generation_memory(cfg, model, codec, sampler, longest * up, window, backend), flush=True)
        for path, base, semantic_S in zip(inputs, bases, semantics):
            skip = 0
            if prompt_S is not None:
                semantic_S, skip = torch.cat([prompt_S, semantic_S]), prompt_QT.shape[1]
            codes_QT = generate_windowed(model, semantic_S, window_frames=window, prompt_frames=window_prompt,
                                         prompt_QT=prompt_QT, config=sampler,
                                         generator=torch.Generator().manual_seed(input_seed(cfg.seed, base.name)),
                                         mark_step=backend.mark_step, codebooks=codebooks_for(sampler, codec))[:, skip:]
            wav_N = codec.decode(codes_QT[None])[0]
            if not out.committed:  # the first write: every check has passed, earlier outputs go (overwrite=true)
                out.commit()
            written.append(write_output(base, wav_N, codec.sample_rate, codes_QT))
            print(f"{path} -> {written[-1]} ({codes_QT.shape[1] / codec.frame_rate:.2f} s, codes "
                  f"{tuple(codes_QT.shape)})")
    return written


# the config groups of its closed schema (soundstorm.cli._hydra)
SECTIONS = ("codec", "semantic", "sampler", "backend")


@hydra_main("soundstorm-generate", "generate", lambda: cli_schema("generate", SECTIONS))
def main(cfg: DictConfig) -> None:
    run_with_backend("soundstorm-generate", cfg.backend, lambda backend: run(cfg, backend))


if __name__ == "__main__":
    main()
