"""Issue 25, the inputs a user hands over: audio, token files, manifests, config keys and the seed.

Each test is one case of the issue that used to pass silently or fail with a message a user could
not act on: a float wav holding int16-scale values, a one-id ``.npy``, a text file named ``.npy``,
non-UTF-8 manifest lines and file names, manifest paths that do not exist, ``+foo=1`` on every CLI,
Hydra composition errors, and an input's seed that moved with its position. The CLI cases run the
real Hydra entry points in-process (``run_main``, as ``test_reliability.py``) or as a child process
where the exit status of the interpreter itself is the point.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_module

from soundstorm import limits
from soundstorm.cli._hydra import check_config
from soundstorm.config_keys import unknown_keys
from soundstorm.data.audio import BadAudio, load_audio, read_audio
from soundstorm.io import read_npy

from _cli import run_cli
from test_reliability import FAST_GEN, make_checkpoint, run_main

RATE = 16000


def speech_like(seconds: float = 1.0, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """Noise bursts under a slow envelope, peak 0.5: something every tokenizer can cut into frames."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.abs(np.sin(2 * np.pi * 3 * t)) * rng.uniform(-1, 1, t.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(espeak_tokens, tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("inputs_ckpt"), espeak_tokens)


def generate_args(checkpoint, tokens, out_dir, *inputs, sampler=FAST_GEN):
    return (f"checkpoint={checkpoint}", f"assets={tokens}", f"inputs=[{','.join(map(str, inputs))}]",
            f"out_dir={out_dir}", *sampler)


# ------------------------------------------------------------------ the audio-input check
def test_read_audio_checks_rate_channels_finite_float_peak_and_length(tmp_path):
    wav = speech_like()
    sf.write(tmp_path / "pcm.wav", wav, RATE, subtype="PCM_16")
    sf.write(tmp_path / "float.wav", wav, RATE, subtype="FLOAT")
    sf.write(tmp_path / "loud.wav", wav * (23600 / np.abs(wav).max()), RATE, subtype="FLOAT")  # int16 scale as float
    sf.write(tmp_path / "stereo.wav", np.stack([wav, -wav * 0.5], axis=1), RATE, subtype="PCM_16")
    assert read_audio(tmp_path / "pcm.wav", 0.5)[1] == RATE
    assert torch.allclose(read_audio(tmp_path / "float.wav", 0.5)[0], torch.from_numpy(wav))
    # a PCM file is scaled by libsndfile whatever its values; only float files can leave [-1, 1]
    with pytest.raises(BadAudio, match=r"float \(FLOAT\) file whose samples peak at 23,600\.0.*rescale.*16-bit PCM"):
        read_audio(tmp_path / "loud.wav", 0.0)
    stereo_N, _ = read_audio(tmp_path / "stereo.wav", 0.0)  # channels mixed down to their mean
    assert stereo_N.ndim == 1 and torch.allclose(stereo_N, torch.from_numpy(wav * 0.25), atol=1e-4)
    with pytest.raises(BadAudio, match=r"too short \(1\.000 s < 3 semantic frames, 2\.000 s\)"):
        read_audio(tmp_path / "pcm.wav", 2.0, "3 semantic frames")
    with limits.override(max_sample_rate=8000), pytest.raises(BadAudio, match="sample rate 16000 Hz is above"):
        read_audio(tmp_path / "pcm.wav", 0.0)
    with pytest.raises(BadAudio, match="^not found$"):
        read_audio(tmp_path / "none.wav", 0.0)
    with pytest.raises(FileNotFoundError, match="prompt_wav=.*none.wav.*not found"):
        load_audio(tmp_path / "none.wav", "prompt_wav")
    with pytest.raises(ValueError, match="voices.A=.*loud.wav.*peak at 23,600"):
        load_audio(tmp_path / "loud.wav", "voices.A")
    resampled_N, rate = load_audio(tmp_path / "pcm.wav", "x", sample_rate=8000)
    assert rate == 8000 and resampled_N.shape[0] == RATE // 2


def test_row9_generate_refuses_a_float_wav_of_int16_scale_and_prepare_lists_it(capsys, checkpoint, espeak_tokens,
                                                                               espeak_corpus, tmp_path):
    source, rate = sf.read(espeak_corpus.parent / "wavs" / "utt00000.wav", dtype="float32")
    loud = tmp_path / "loud.wav"
    sf.write(loud, source * 32768, rate, subtype="FLOAT")
    code, _, err = run_main(capsys, "soundstorm.cli.generate", *generate_args(checkpoint, espeak_tokens,
                                                                              tmp_path / "g", loud))
    assert code == 2 and f"inputs='{loud}'" in err and "peak at" in err and "16-bit PCM" in err, err
    assert not list((tmp_path / "g").glob("loud*"))
    code, _, err = run_main(capsys, "soundstorm.cli.generate", *generate_args(checkpoint, espeak_tokens, tmp_path / "p",
                                                                              espeak_corpus.parent / "wavs" /
                                                                              "utt00001.wav"), f"prompt_wav={loud}")
    assert code == 2 and f"prompt_wav='{loud}'" in err and "peak at" in err, err
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("utt00000", "utt00001", "utt00002"):
        (folder / f"{name}.wav").write_bytes((espeak_corpus.parent / "wavs" / f"{name}.wav").read_bytes())
    (folder / "loud.wav").write_bytes(loud.read_bytes())
    code, out, _ = run_main(capsys, "soundstorm.cli.prepare", f"input={folder}", f"output={tmp_path / 'tokens'}",
                            "codec=melrvq", "codec.num_levels=2", "codec.codebook_size=16", "semantic=mfcc_kmeans",
                            "semantic.vocab_size=8", "progress=false", "num_threads=1")
    manifest = json.loads((tmp_path / "tokens" / "manifest.json").read_text())
    assert code == 0 and len(manifest["utterances"]) == 3, out
    assert [s["path"] for s in manifest["skipped"]] == [str(folder / "loud.wav")] and "peak at" in out


def test_dialogue_voices_go_through_the_same_check(espeak_tokens, espeak_corpus, tmp_path):
    from soundstorm import SamplerConfig, SoundStorm, SoundStormConfig
    from soundstorm.codecs import load_codec
    from soundstorm.dialogue import DialoguePipeline
    from soundstorm.semantic import load_tokenizer
    from soundstorm.t2s.model import T2SConfig, TextToSemantic

    pipeline = DialoguePipeline(TextToSemantic(T2SConfig.tiny(semantic_vocab_size=32)),
                                SoundStorm(SoundStormConfig.tiny(codebook_size=64, semantic_vocab_size=32)),
                                load_codec(espeak_tokens / "codec"), load_tokenizer(espeak_tokens / "semantic"),
                                sampler=SamplerConfig(greedy=True))
    source, rate = sf.read(espeak_corpus.parent / "wavs" / "utt00000.wav", dtype="float32")
    sf.write(tmp_path / "loud.wav", source * 32768, rate, subtype="FLOAT")
    sf.write(tmp_path / "blip.wav", speech_like(0.01, rate), rate)  # 10 ms: less than one semantic frame
    voices = {"A": espeak_corpus.parent / "wavs" / "utt00001.wav"}
    with pytest.raises(ValueError, match=r"voices.B=.*loud.wav.*peak at"):
        pipeline.prepare("A: hello | B: hi", {**voices, "B": tmp_path / "loud.wav"})
    with pytest.raises(ValueError, match=r"voices.B=.*blip.wav.*too short \(0\.010 s < one semantic frame"):
        pipeline.prepare("A: hello | B: hi", {**voices, "B": tmp_path / "blip.wav"})


# ------------------------------------------------------------------ token files given to soundstorm-generate
def test_a_one_id_npy_is_refused_before_any_work_naming_its_length_and_the_minimum(capsys, checkpoint, espeak_tokens,
                                                                                   tmp_path):
    np.save(tmp_path / "one.npy", np.array([3]))
    out = tmp_path / "gen"
    code, _, err = run_main(capsys, "soundstorm.cli.generate", *generate_args(checkpoint, espeak_tokens, out,
                                                                              tmp_path / "one.npy"))
    assert code == 2 and "Traceback" not in err, err
    assert f"input '{tmp_path / 'one.npy'}' holds 1 semantic ids (0.040 s at 25 Hz), fewer than 2 (0.080 s)" in err
    assert "the shortest input the melrvq codec decodes (3 frames at 50 Hz)" in err
    assert not list(out.glob("one*"))  # no orphan one.codes.npy to refuse the next run
    np.save(tmp_path / "one.npy", np.array([3, 4]))
    code, stdout, err = run_main(capsys, "soundstorm.cli.generate", *generate_args(checkpoint, espeak_tokens, out,
                                                                                   tmp_path / "one.npy"))
    assert code == 0 and (out / "one.wav").is_file() and np.load(out / "one.codes.npy").shape == (4, 4), err
    # an audio input too short to decode is refused the same way, by its duration
    sf.write(tmp_path / "short.wav", speech_like(0.05, 24000), 24000)
    code, _, err = run_main(capsys, "soundstorm.cli.generate", *generate_args(checkpoint, espeak_tokens, out,
                                                                              tmp_path / "short.wav"))
    assert code == 2 and "too short (0.050 s < 2 semantic frames, the shortest input the codec decodes" in err, err


def test_a_file_named_npy_that_is_not_a_numpy_array_is_named(capsys, checkpoint, espeak_tokens, tmp_path):
    (tmp_path / "text.npy").write_text("12 13 14\n")
    np.save(tmp_path / "objects.npy", np.array([{"ids": [1, 2]}], dtype=object), allow_pickle=True)
    code, _, err = run_main(capsys, "soundstorm.cli.generate", *generate_args(checkpoint, espeak_tokens,
                                                                              tmp_path / "g", tmp_path / "text.npy"))
    assert code == 2 and f"{tmp_path / 'text.npy'}: not a NumPy .npy array (it starts with b'12 13 " in err, err
    assert "pickled" not in err
    with pytest.raises(ValueError, match=r"objects.npy: a .npy array of Python objects \(dtype object\)"):
        read_npy(tmp_path / "objects.npy", "semantic ids [S]")
    np.save(tmp_path / "cut.npy", np.arange(1000))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:300])
    with pytest.raises(ValueError, match=r"cut.npy: a truncated or corrupt .npy file"):
        read_npy(tmp_path / "cut.npy", "semantic ids [S]")


# ------------------------------------------------------------------ manifests and folders given to soundstorm-prepare
PREPARE = ("codec=melrvq", "codec.num_levels=2", "codec.codebook_size=16", "semantic=mfcc_kmeans",
           "semantic.vocab_size=8", "progress=false", "num_threads=1")


def nothing_in(folder: Path) -> bool:
    """The refused run left nothing in its output folder (an empty folder, or none)."""
    return not folder.exists() or not any(folder.iterdir())


def audio_folder(folder: Path, count: int = 3) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        sf.write(folder / f"utt{i}.wav", speech_like(1.0, seed=i), RATE)
    return folder


def test_a_non_utf8_manifest_line_is_named(capsys, tmp_path):
    audio_folder(tmp_path / "wavs")
    lines = [b'{"path": "wavs/utt0.wav"}', b'{"path": "wavs/caf\xe9.wav", "text": "a path in Latin-1"}']
    (tmp_path / "m.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    code, _, err = run_main(capsys, "soundstorm.cli.prepare", f"input={tmp_path / 'm.jsonl'}",
                            f"output={tmp_path / 'tokens'}", *PREPARE)
    assert code == 2 and f"{tmp_path / 'm.jsonl'}:2: not UTF-8 text (byte 0xe9 at column 19" in err, err
    assert nothing_in(tmp_path / "tokens")


def test_a_non_utf8_file_name_is_refused_before_fitting(capsys, tmp_path):
    folder = audio_folder(tmp_path / "wavs")
    try:
        with open(os.fsencode(folder) + b"/caf\xe9.wav", "wb") as f:
            f.write((folder / "utt0.wav").read_bytes())
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses file names that are not UTF-8")
    out = tmp_path / "tokens"
    code, stdout, err = run_main(capsys, "soundstorm.cli.prepare", f"input={folder}", f"output={out}", *PREPARE)
    assert code == 2 and f"caf\\xe9.wav) is not valid UTF-8" in err and "rename" in err, err
    assert "fitting" not in stdout and nothing_in(out)  # no codec/, semantic/ or shard without a manifest
    # an escaped lone surrogate in a JSONL is the same name
    (tmp_path / "m.jsonl").write_text('{"path": "wavs/x\\udcff.wav"}\n')
    code, _, err = run_main(capsys, "soundstorm.cli.prepare", f"input={tmp_path / 'm.jsonl'}", f"output={out}",
                            *PREPARE)
    assert code == 2 and f"{tmp_path / 'm.jsonl'}:1: its file name (" in err and "not valid UTF-8" in err, err


def test_manifest_paths_that_do_not_exist_are_not_found_with_manifest_line_and_path(capsys, tmp_path):
    audio_folder(tmp_path / "wavs")
    entries = [{"path": "wavs/utt0.wav"}, {"path": "wavs/utt9.wav"}, {"path": "wavs/utt1.wav"},
               {"path": "audio/utt2.wav"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    code, stdout, err = run_main(capsys, "soundstorm.cli.prepare", f"input={tmp_path / 'm.jsonl'}",
                                 f"output={tmp_path / 'tokens'}", *PREPARE)
    assert code == 2 and "unreadable" not in err and "System error" not in err, err
    assert (f"{tmp_path / 'm.jsonl'}:2: path 'wavs/utt9.wav' not found: no file at {tmp_path / 'wavs' / 'utt9.wav'} "
            "(and 1 more of the 4 listed files)") in err
    assert "fitting" not in stdout and nothing_in(tmp_path / "tokens")


# ------------------------------------------------------------------ closed configs
CLIS = [("soundstorm.cli.train", "soundstorm-train"), ("soundstorm.cli.eval", "soundstorm-eval"),
        ("soundstorm.cli.generate", "soundstorm-generate"), ("soundstorm.cli.dialogue", "soundstorm-dialogue"),
        ("soundstorm.cli.prepare", "soundstorm-prepare"), ("soundstorm.cli.bench", "soundstorm-bench"),
        ("soundstorm.cli.train_t2s", "soundstorm-train-t2s")]


@pytest.mark.parametrize("module,prog", CLIS, ids=[p for _, p in CLIS])
def test_row10_every_cli_refuses_a_key_its_schema_does_not_know(capsys, module, prog, tmp_path):
    where = () if module.endswith(("prepare", "bench")) else (f"out_dir={tmp_path / 'out'}",)
    code, out, err = run_main(capsys, module, "+foo=1", *where)
    assert code == 2, out + err
    assert f"{prog}: error: unknown config key 'foo': {prog} has no such setting (the nearest known key is '" in err
    assert "Traceback" not in err
    # nothing of the CLI's own is written (dialogue and train-t2s keep Hydra's run folder under out_dir/hydra)
    assert not (tmp_path / "out").exists() or {p.name for p in (tmp_path / "out").iterdir()} <= {"hydra"}


@pytest.mark.parametrize("args,key,nearest", [
    (("soundstorm.cli.train", "+trainer.max_step=5"), "trainer.max_step", "trainer.max_steps"),
    (("soundstorm.cli.train", "+model.dimm=8"), "model.dimm", "model.dim"),
    (("soundstorm.cli.eval", "+evaluation.speech.max_utterance=2"), "evaluation.speech.max_utterance",
     "evaluation.speech.max_utterances"),
    (("soundstorm.cli.generate", "+backend.options.num_thread=2"), "backend.options.num_thread",
     "backend.options.num_threads"),
    (("soundstorm.cli.prepare", "+segment.max_second=3"), "segment.max_second", "segment.max_seconds"),
    (("soundstorm.cli.prepare", "+codec.num_level=3"), "codec.num_level", "codec.num_levels"),
    (("soundstorm.cli.dialogue", "+t2s_sampler.step=3"), "t2s_sampler.step", "t2s_sampler.steps"),
    (("soundstorm.cli.train_t2s", "+t2s_model.dept=3"), "t2s_model.dept", "t2s_model.depth"),
], ids=lambda v: v if isinstance(v, str) and "." in v and "=" not in v and "cli" not in v else "")
def test_a_misspelt_key_names_the_nearest_known_key(capsys, args, key, nearest):
    code, out, err = run_main(capsys, *args)
    assert code == 2 and f"unknown config key '{key}'" in err and f"the nearest known key is '{nearest}'" in err, err


def test_open_mappings_take_any_key_and_the_known_plus_keys_pass(capsys, tmp_path):
    # speaker names and backend options are data, not settings: the check must not refuse them
    code, _, err = run_main(capsys, "soundstorm.cli.dialogue", "+voices.C=c.wav")
    assert code == 2 and "t2s_checkpoint is not set" in err, err
    code, _, err = run_main(capsys, "soundstorm.cli.generate", "+backend.options.num_threads=1")
    assert code == 2 and "checkpoint is not set" in err, err
    code, _, err = run_main(capsys, "soundstorm.cli.eval", "+evaluation.asr_options.model=base.en")
    assert code == 2 and "checkpoint is not set" in err, err


def cli_configs():
    """(module, config name, overrides) for every primary config with every group option and experiment."""
    root = Path(__file__).resolve().parents[1] / "configs"
    options = {group.name: sorted(p.stem for p in group.glob("*.yaml")) for group in root.iterdir() if group.is_dir()}
    groups = {"train": ("model", "codec", "semantic", "data", "optim", "sampler", "evaluation", "trainer", "logger",
                        "backend"),
              "eval": ("codec", "semantic", "sampler", "evaluation", "backend", "logger"),
              "generate": ("codec", "semantic", "sampler", "backend"), "prepare": ("codec", "semantic"),
              "bench": ("model", "sampler", "backend"), "dialogue": ("sampler", "backend"),
              "train_t2s": ("t2s_model", "data", "optim", "trainer", "logger", "backend")}
    cases = []
    for name, names in groups.items():
        cases.append((name, []))
        cases += [(name, [f"{group}={option}"]) for group in names for option in options[group]]
    cases += [("train", [f"experiment={option}"]) for option in options["experiment"] if option in
              ("quickstart_cpu", "paper_librilight_cuda", "paper_librilight_tpu")]  # the others need Hydra plugins
    cases += [("train_t2s", [f"t2s_experiment={option}"]) for option in options["t2s_experiment"]]
    return cases


def test_every_config_file_passes_its_clis_closed_schema():
    """No false refusal: every key of every config file (and of every group option and experiment) is one its
    CLI's schema knows; and the check does find a key added to one."""
    modules = {"train": "train", "eval": "eval", "generate": "generate", "prepare": "prepare", "bench": "bench",
               "dialogue": "dialogue", "train_t2s": "train_t2s"}
    with initialize_config_module("soundstorm.configs", version_base="1.3"):
        for name, overrides in cli_configs():
            cli = importlib.import_module(f"soundstorm.cli.{modules[name]}")
            main = cli.train_task if name == "train" else cli.main
            cfg = compose(config_name=name, overrides=overrides)
            check_config(cfg, main.schema(), name)  # raises on an unknown key
            if not overrides:  # and it does find one
                with pytest.raises(ValueError, match="unknown config key 'seeed'"):
                    check_config(compose(config_name=name, overrides=["+seeed=1"]), main.schema(), name)
    schema = importlib.import_module("soundstorm.cli.generate").main.schema()
    assert unknown_keys({"codec": {"name": "melrvq", "n_fft": 512, "nfft": 1}}, schema) == [
        ("codec.nfft", "codec.n_fft", sorted(schema["codec"]({"name": "melrvq"})))]


def test_composition_errors_exit_2_with_hydras_message(capsys, tmp_path):
    group = run_cli("soundstorm.cli.generate", "sampler=huge", f"out_dir={tmp_path}")  # the interpreter's status
    assert group.returncode == 2 and "Could not find 'sampler/huge'" in group.stderr, group.stderr
    assert "soundstorm-generate: error: the command line could not be composed into a config" in group.stderr
    code, _, err = run_main(capsys, "soundstorm.cli.train", "seed=[", f"out_dir={tmp_path}")
    assert code == 2 and "no viable alternative at input '['" in err, err
    code, _, err = run_main(capsys, "soundstorm.cli.eval", "foo=1")
    assert code == 2 and "To append to your config use +foo=1" in err, err
    assert not any(tmp_path.iterdir())
    code, out, _ = run_main(capsys, "soundstorm.cli.train", "--help")
    assert code == 0 and "Configuration groups" in out
    # multirun still runs each job through the same checks: each job's error is the CLI's own
    multirun = run_cli("soundstorm.cli.generate", "-m", "seed=1,2", "checkpoint=/nonexistent", f"out_dir={tmp_path}",
                       f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert multirun.returncode == 2 and "#0 : seed=1" in multirun.stdout + multirun.stderr
    assert "soundstorm-generate: error: assets is not set" in multirun.stderr


# ------------------------------------------------------------------ the per-input seed
def test_an_inputs_seed_is_a_stable_hash_of_its_name_not_its_position():
    from soundstorm.cli.generate import input_seed

    expected = int.from_bytes(hashlib.sha256(b"7:speech").digest()[:8], "little") >> 1
    assert input_seed(7, "speech") == expected and 0 <= expected < 2 ** 63  # not Python's salted hash()
    assert len({input_seed(0, "a"), input_seed(0, "b"), input_seed(1, "a")}) == 3


def test_reordering_or_adding_inputs_leaves_each_inputs_output_unchanged(capsys, checkpoint, espeak_tokens,
                                                                         tmp_path):
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        np.save(tmp_path / f"{name}.npy", np.random.default_rng(seed).integers(0, 32, 12))
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "a_again.npy").write_bytes((tmp_path / "a.npy").read_bytes())
    sampled = ("backend=cpu", "sampler.steps=[4,1,1,1]", "window_seconds=1.0", "window_prompt_seconds=0.2")
    runs = {"first": ("a", "b"), "second": ("c", "b", "a", "copy/a_again")}
    for out, names in runs.items():
        code, _, err = run_main(capsys, "soundstorm.cli.generate",
                                *generate_args(checkpoint, espeak_tokens, tmp_path / out,
                                               *(tmp_path / f"{n}.npy" for n in names), sampler=sampled))
        assert code == 0, err
    for name in ("a", "b"):
        assert np.array_equal(np.load(tmp_path / "first" / f"{name}.codes.npy"),
                              np.load(tmp_path / "second" / f"{name}.codes.npy")), name
    # the same ids under another name are sampled with another seed (so the test above can fail)
    assert not np.array_equal(np.load(tmp_path / "second" / "a.codes.npy"),
                              np.load(tmp_path / "second" / "a_again.codes.npy"))
