"""The dialogue pipeline: scripts, one batched pass per stage, timings, scoring, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from soundstorm import SoundStorm, SoundStormConfig
from soundstorm.dialogue import DialoguePipeline, DialogueResult, Turn, Voice, evaluate_dialogue, parse_script
from soundstorm.dialogue.evaluate import boundary_errors
from soundstorm.sampler import SamplerConfig, generate
from soundstorm.t2s import T2SConfig, TextToSemantic

SCRIPT = "Did the train leave on time? | No, we waited an hour. | That sounds awful."


def test_scripts_pipes_labels_alternation_and_files(tmp_path):
    assert parse_script(SCRIPT, ["A", "B"]) == [Turn("A", "Did the train leave on time?"),
                                               Turn("B", "No, we waited an hour."), Turn("A", "That sounds awful.")]
    labelled = parse_script("B: Hello.\nB: Still me.\nAnd now A. Note: fine.", ["A", "B"])
    assert [t.speaker for t in labelled] == ["B", "B", "A"] and labelled[2].text == "And now A. Note: fine."
    path = tmp_path / "script.txt"
    path.write_text("A: one\n# a comment\nB: two\n")
    assert parse_script(path, ["A", "B"]) == parse_script(f"@{path}", ["A", "B"]) == [Turn("A", "one"), Turn("B", "two")]
    with pytest.raises(FileNotFoundError, match="script file not found"):
        parse_script(tmp_path / "missing.txt", ["A", "B"])
    with pytest.raises(ValueError, match="no turns"):
        parse_script(" | ", ["A", "B"])
    with pytest.raises(ValueError, match="labelled 'C'"):
        parse_script("C: hi", ["A", "B"])
    with pytest.raises(ValueError, match="no words"):
        parse_script("A: hi | ...", ["A", "B"])


@pytest.fixture(scope="module")
def pipeline(espeak_tokens):
    from soundstorm.codecs import load_codec
    from soundstorm.semantic import load_tokenizer

    torch.manual_seed(0)
    soundstorm = SoundStorm(SoundStormConfig.tiny(codebook_size=64, semantic_vocab_size=32))
    t2s = TextToSemantic(T2SConfig.tiny(semantic_vocab_size=32))
    return DialoguePipeline(t2s, soundstorm, load_codec(espeak_tokens / "codec"), load_tokenizer(espeak_tokens / "semantic"),
                            sampler=SamplerConfig(greedy=True), t2s_sampler=SamplerConfig(steps=(4,)), pause_seconds=0.3)


@pytest.fixture(scope="module")
def voices(espeak_corpus):
    return {"A": espeak_corpus.parent / "wavs" / "utt00000.wav", "B": espeak_corpus.parent / "wavs" / "utt00001.wav"}


def test_speaks_turns_in_order_with_pauses_and_stage_latencies(pipeline, voices, tmp_path):
    result = pipeline.speak(SCRIPT, voices, seed=3)
    rate = result.sample_rate
    assert [(t["speaker"], t["text"]) for t in result.turns] == [("A", "Did the train leave on time?"),
                                                                 ("B", "No, we waited an hour."), ("A", "That sounds awful.")]
    assert result.turns[0]["start"] == 0 and math.isclose(result.turns[-1]["end"], result.duration)
    for before, after in zip(result.turns, result.turns[1:]):
        assert math.isclose(after["start"] - before["end"], 0.3, abs_tol=1.0 / rate)
        assert result.wav_N[round(before["end"] * rate): round(after["start"] * rate)].abs().max() == 0
    assert {"text_to_semantic_s", "soundstorm_s", "codec_decode_s", "total_s", "real_time_factor"} <= set(result.latency)
    # each turn lasts at most its semantic length (codec frames = semantic frames × upsample; quiet ends cut)
    frame_s = pipeline.soundstorm.config.semantic_upsample / pipeline.codec.frame_rate
    for turn in result.turns:
        assert 0 < turn["end"] - turn["start"] <= turn["num_semantic_frames"] * frame_s + 0.05
    # silences found in the audio agree with the JSON's turn times (the bar: 0.3 s); a quiet
    # turn end of this untrained model can move a detected boundary by a frame or two (20 ms each)
    assert evaluate_dialogue(result)["summary"]["boundary_error_max_s"] <= 0.06
    paths = result.save(tmp_path, extra={"note": 1})
    saved = json.loads(paths["json"].read_text())
    assert saved["turns"] == result.turns and saved["note"] == 1 and paths["wav"].is_file() and paths["png"].is_file()
    again = pipeline.speak(SCRIPT, voices, seed=3)
    assert torch.equal(again.wav_N, result.wav_N)


def test_the_padded_soundstorm_batch_equals_turn_by_turn_generation(pipeline, voices):
    prompts = {name: pipeline.voice(path) for name, path in voices.items()}
    turns = parse_script(SCRIPT, ["A", "B"])
    semantic = [torch.randint(0, 32, (n,), generator=torch.Generator().manual_seed(n)) for n in (9, 4, 6)]
    batched = pipeline._semantic_to_codes(turns, prompts, semantic, seed=0)
    for turn, semantic_S, codes_QT in zip(turns, semantic, batched):
        prompt = prompts[turn.speaker]
        alone = generate(pipeline.soundstorm, torch.cat([prompt.semantic_P, semantic_S])[None],
                         prompt=prompt.codes_QT[None], config=pipeline.sampler)[0, :, prompt.codes_QT.shape[1]:]
        assert torch.equal(codes_QT, alone)
        assert codes_QT.shape[1] == semantic_S.shape[0] * pipeline.soundstorm.config.semantic_upsample


def test_bad_voices_and_mismatched_components_are_named(pipeline, voices, tmp_path):
    with pytest.raises(FileNotFoundError, match="voices.B="):
        pipeline.speak(SCRIPT, {"A": voices["A"], "B": tmp_path / "none.wav"})
    with pytest.raises(ValueError, match="t2s semantic_vocab_size=16"):
        DialoguePipeline(TextToSemantic(T2SConfig.tiny()), pipeline.soundstorm, pipeline.codec, pipeline.tokenizer)


def _tone(freq: float, seconds: float, rate: int = 8000) -> torch.Tensor:
    return 0.5 * torch.sin(2 * math.pi * freq * torch.arange(int(seconds * rate)) / rate)


class _SpectrumVerifier:
    """A fake verifier: the normalised magnitude spectrum in 16 bands (tones of different pitch differ)."""

    def embed(self, wav_N, sample_rate):
        spectrum = torch.fft.rfft(wav_N.float()).abs()
        return torch.stack([band.sum() for band in spectrum.chunk(16)])


class _FixedRecognizer:
    def __init__(self, transcripts):
        self.transcripts = list(transcripts)

    def transcribe(self, wav_N, sample_rate):
        return self.transcripts.pop(0)


def _hand_made_result(shift: float = 0.0) -> DialogueResult:
    rate, pause = 8000, torch.zeros(4000)
    wav_N = torch.cat([_tone(300, 1.0), pause, _tone(1500, 1.0), pause, _tone(300, 0.5)])
    turns = [{"speaker": "A", "text": "Hello, there!", "start": 0.0, "end": 1.0},
             {"speaker": "B", "text": "good day to you", "start": 1.5 + shift, "end": 2.5},
             {"speaker": "A", "text": "bye", "start": 3.0, "end": 3.5}]
    voices = {"A": Voice(torch.zeros(1), torch.zeros(1, 1), _tone(300, 1.0), rate),
              "B": Voice(torch.zeros(1), torch.zeros(1, 1), _tone(1500, 1.0), rate)}
    return DialogueResult(wav_N, rate, turns, {"total_s": 1.0}, voices)


def test_per_turn_wer_attribution_and_boundaries():
    scores = evaluate_dialogue(_hand_made_result(), _FixedRecognizer(["hello there", "good day to", "hi"]),
                               _SpectrumVerifier())
    turns, summary = scores["turns"], scores["summary"]
    assert [t["wer"] for t in turns] == [0.0, 0.25, 1.0]
    assert math.isclose(summary["wer"], 1.25 / 3)
    assert [t["attributed_to"] for t in turns] == ["A", "B", "A"] and summary["attribution_accuracy"] == 1.0
    assert summary["boundary_error_max_s"] <= 0.02 and summary["latency"] == {"total_s": 1.0}
    assert max(boundary_errors(_hand_made_result(shift=0.4))) == pytest.approx(0.4, abs=0.03)
    inside_speech = _hand_made_result()
    inside_speech.turns[0]["end"], inside_speech.turns[1]["start"] = 0.4, 0.6  # a "pause" within the first tone
    assert boundary_errors(inside_speech)[0] == pytest.approx(0.5 + 0.1, abs=0.03)  # to the quiet at 1 s, + half


def test_dialogue_cli_writes_outputs_scores_a_reference_and_rejects_bad_input(pipeline, voices, espeak_tokens,
                                                                              tmp_path):
    from _cli import run_cli
    from soundstorm.data import TokenManifest

    pipeline.t2s.save_pretrained(tmp_path / "t2s")
    pipeline.soundstorm.save_pretrained(tmp_path / "soundstorm")
    texts = [u["text"] for u in TokenManifest.load(espeak_tokens).utterances[:3]]
    (tmp_path / "script.txt").write_text(f"A: {texts[0]}\nB: {texts[1]}\n{texts[2]}\n")
    common = (f"t2s_checkpoint={tmp_path / 't2s'}", f"soundstorm_checkpoint={tmp_path / 'soundstorm'}",
              f"assets={espeak_tokens}", f"voices.A={voices['A']}", f"voices.B={voices['B']}", "backend=cpu",
              "sampler=greedy", "t2s_sampler.steps=2", f"out_dir={tmp_path / 'out'}")
    scoring = ("evaluation.asr=tests._dialogue_fakes:transcribe", "evaluation.verifier=tests._dialogue_fakes:embed",
               "evaluation.reference=true")
    result = run_cli("soundstorm.cli.dialogue", f"script=@{tmp_path / 'script.txt'}", *common, *scoring)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((tmp_path / "out" / "dialogue.json").read_text())
    assert [t["speaker"] for t in saved["turns"]] == ["A", "B", "A"] and "codec_decode_s" in saved["latency"]
    assert all(t["transcript"] == "birds gathered on the wire" and "attributed_to" in t for t in saved["turns"])
    assert {"wer", "cer", "attribution_accuracy", "boundary_error_max_s"} <= set(saved["evaluation"])
    assert saved["reference"]["wer"] == saved["evaluation"]["wer"]  # same texts, same fake recognizer
    for stem in ("dialogue", "reference"):
        assert all((tmp_path / "out" / f"{stem}.{ext}").is_file() for ext in ("wav", "json", "png"))
    common = (*common, "overwrite=true")  # the folder holds a dialogue now: every run below may replace it
    bad = run_cli("soundstorm.cli.dialogue", "script='C: who am I'", *common, "evaluation.asr=null",
                  "evaluation.verifier=null")
    assert bad.returncode == 2 and "soundstorm-dialogue: error: script turn 1 is labelled 'C'" in bad.stderr
    unknown = run_cli("soundstorm.cli.dialogue", "script='never said in the corpus'", *common, *scoring)
    assert unknown.returncode == 2 and "turns [1] are not" in unknown.stderr
    missing = run_cli("soundstorm.cli.dialogue", "script='hello'", *common, f"t2s_checkpoint={tmp_path / 'nope'}")
    unknown_asr = run_cli("soundstorm.cli.dialogue", "script='hello'", *common, "evaluation.asr=nonesuch")
    assert unknown_asr.returncode == 2 and "evaluation.asr='nonesuch'" in unknown_asr.stderr
    assert missing.returncode == 2 and "t2s_checkpoint=" in missing.stderr and "Traceback" not in missing.stderr
    assert (tmp_path / "out" / "reference.json").is_file()  # refused runs removed nothing (overwrite=true or not)
    again = run_cli("soundstorm.cli.dialogue", f"script=@{tmp_path / 'script.txt'}", *common, "evaluation.asr=null",
                    "evaluation.verifier=null")  # no reference this time: the earlier reference.* must go
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dialogue.json", "dialogue.png", "dialogue.wav"]


def test_least_alike_pair_picks_the_two_most_different_voices():
    from soundstorm.dialogue.voices import least_alike_pair

    embeddings = {"a": torch.tensor([1.0, 0.0, 0.0]), "a2": torch.tensor([0.9, 0.1, 0.0]),
                  "b": torch.tensor([0.0, 1.0, 0.0]), "c": torch.tensor([0.7, 0.7, 0.1])}
    a, b, similarity = least_alike_pair(embeddings)
    assert (a, b) == ("a", "b") and similarity == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least two voices"):
        least_alike_pair({"a": torch.ones(3)})
