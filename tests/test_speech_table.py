"""The speech table (Table 1 in miniature) end to end through ``soundstorm-eval``, and its planning.

The corpus: two festival diphone voices saying four sentences each, with ``speaker`` ids in the JSONL
that ``soundstorm-prepare`` must carry into the token manifest. The model is an untrained tiny
SoundStorm: its output is noise, so the recognizer must read the ground truth better.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from soundstorm.evaluation.speech_plan import SpeechEvalConfig, plan_speech_items
from soundstorm.evaluation.speech_table import ROWS, markdown, summarize
from _cli import run_cli
from conftest import PREPARE_SMALL


def _records(num_per_speaker=3, speakers=("a", "b", "c"), heldout_every=3):
    recs = [{"utt_id": f"{s}{i}", "speaker": s, "text": f"sentence {i}"}
            for s in speakers for i in range(num_per_speaker)]
    return recs, [r["utt_id"] for k, r in enumerate(recs) if k % heldout_every == 0]


def test_plan_is_seeded_and_follows_the_rules():
    recs, heldout = _records()
    items = plan_speech_items(recs, heldout, max_items=10, seed=3)
    assert items == plan_speech_items(recs, heldout, max_items=10, seed=3)
    assert sorted(i.target for i in items) == sorted(heldout)
    speaker_of = {r["utt_id"]: r["speaker"] for r in recs}
    for item in items:
        assert item.prompt != item.target and speaker_of[item.prompt] == item.speaker == speaker_of[item.target]
        assert item.reference not in (item.target, item.prompt) and speaker_of[item.reference] == item.speaker
        assert item.other_speaker != item.speaker and speaker_of[item.cross_prompt] == item.other_speaker
        assert item.cross_reference != item.cross_prompt and speaker_of[item.cross_reference] == item.other_speaker
    assert len(plan_speech_items(recs, heldout, max_items=2, seed=3)) == 2


def test_plan_names_the_missing_field():
    recs, heldout = _records(speakers=("a",))
    with pytest.raises(ValueError, match="at least 2 speakers .*'speaker'"):
        plan_speech_items(recs, heldout, 4, 0)
    recs, heldout = _records()
    recs[0]["text"] = ""
    with pytest.raises(ValueError, match="'text'"):
        plan_speech_items(recs, heldout, 4, 0)
    recs, _ = _records(num_per_speaker=1)
    with pytest.raises(ValueError, match="another utterance"):
        plan_speech_items(recs, ["a0"], 4, 0)
    with pytest.raises(ValueError, match="evaluation.speech.max_utterances"):
        SpeechEvalConfig(max_utterances=0)


def test_summary_counts_cross_speaker_attribution():
    def row(sim_prompt, sim_source):
        return {"wer": 0.5, "cer": 0.25, "sim_prompt_speaker": sim_prompt, "sim_source_speaker": sim_source,
                "mel_distance": 1.0}

    results = [{"rows": {**{r: row(None, 0.5) for r in ROWS}, "cross_speaker": row(p, s)}}
               for p, s in ((0.9, 0.5), (0.4, 0.6), (0.8, 0.7), (0.1, 0.2))]
    table = summarize(results)
    assert table["cross_speaker_attribution"] == 0.5 and table["num_utterances"] == 4
    assert table["unprompted"]["sim_prompt_speaker"] is None
    assert table["cross_speaker"]["sim_prompt_speaker"] == pytest.approx(0.55)
    text = markdown(table)
    assert "| unprompted | 0.500 | 0.250 | - | 0.500 | 1.000 |" in text and "0.50 of 4 pairs" in text


def test_summary_breaks_wer_down_by_the_target_speaker():
    def result(speaker, prompted_wer):
        rows = {r: {"wer": 0.1, "cer": 0.0, "sim_prompt_speaker": 0.9, "sim_source_speaker": 0.1, "mel_distance": 0.0}
                for r in ROWS}
        rows["prompted"] = {**rows["prompted"], "wer": prompted_wer}
        return {"rows": rows, "ids": {"speaker": speaker}}

    table = summarize([result("kal", 0.0), result("ked", 0.5), result("ked", 0.3), result("kal", 0.2)])
    assert list(table["per_speaker"]) == ["kal", "ked"]
    assert table["per_speaker"]["ked"]["n"] == 2
    assert table["per_speaker"]["ked"]["prompted"] == pytest.approx(0.4)
    assert table["per_speaker"]["kal"]["prompted"] == pytest.approx(0.1)
    assert table["per_speaker"]["kal"]["unprompted"] == pytest.approx(0.1)
    assert table["prompted"]["wer"] == pytest.approx(0.25)  # the row mean is unchanged
    text = markdown(table)
    assert "WER by the target's speaker" in text and "| ked | 2 | 0.100 | 0.100 | 0.100 | 0.400 | 0.100 |" in text
    # results without speakers (a hand-built list) keep the table as it was
    assert "per_speaker" not in summarize([{"rows": result("kal", 0.0)["rows"]}])


SENTENCES = ("The boy was there when the sun rose.", "It is easy to tell the depth of a well.",
             "Help the woman get back to her feet.", "A rod is used to catch pink salmon.")


@pytest.fixture(scope="module")
def speaker_tokens(tmp_path_factory):
    """Two festival voices (speakers ``kal``, ``ked``) × four sentences, prepared with the small codec."""
    if shutil.which("text2wave") is None:
        pytest.skip("festival is not installed (apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)")
    out = tmp_path_factory.mktemp("speakers")
    lines = []
    for speaker in ("kal", "ked"):
        for i, text in enumerate(SENTENCES):
            path = out / f"{speaker}{i}.wav"
            subprocess.run(["text2wave", "-eval", f"(voice_{speaker}_diphone)", "-o", str(path)], input=text,
                           text=True, check=True, capture_output=True)
            lines.append(json.dumps({"path": path.name, "text": text, "speaker": speaker}) + "\n")
    (out / "manifest.jsonl").write_text("".join(lines))
    result = run_cli("soundstorm.cli.prepare", f"input={out / 'manifest.jsonl'}", f"output={out / 'tokens'}",
                     *PREPARE_SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "tokens"


def _random_model(tokens, directory):
    from soundstorm.data import TokenManifest
    from soundstorm.model import SoundStorm, SoundStormConfig

    manifest = TokenManifest.load(tokens)
    config = SoundStormConfig.tiny(num_levels=manifest.num_levels, codebook_size=int(manifest.codec["codebook_size"]),
                                   semantic_vocab_size=int(manifest.semantic["vocab_size"]),
                                   semantic_upsample=manifest.semantic_upsample)
    SoundStorm(config).save_pretrained(directory)
    return directory


EVAL = ("backend=cpu",
        "backend.options.num_threads=1", "data.batch_size=4", "data.heldout_fraction=0.3",
        "evaluation.max_utterances=1", "evaluation.max_batches=1", "evaluation.mask_ratios=[1.0]",
        "evaluation.long_seconds=0", "evaluation.num_examples=1", "sampler=greedy")


@pytest.mark.slow
def test_eval_cli_writes_the_speech_table(speaker_tokens, tmp_path):
    from soundstorm.data import TokenManifest

    assert {u["speaker"] for u in TokenManifest.load(speaker_tokens).utterances} == {"kal", "ked"}
    model_dir = _random_model(speaker_tokens, tmp_path / "model")
    out = tmp_path / "eval"
    result = run_cli("soundstorm.cli.eval", f"checkpoint={model_dir}", f"data.root={speaker_tokens}", f"out_dir={out}",
                     *EVAL, "evaluation.speech.enabled=true", "evaluation.speech.max_utterances=2",
                     "evaluation.speech.level_prefixes=[2]")
    assert result.returncode == 0, result.stderr[-3000:]
    speech = json.loads((out / "metrics.json").read_text())["speech"]
    assert speech["num_utterances"] == 2 and len(speech["items"]) == 2
    rows = ROWS + ("resynthesis_levels2", "prompted_levels2")
    for row in rows:
        assert set(speech[row]) == {"wer", "cer", "sim_prompt_speaker", "sim_source_speaker", "mel_distance"}
        assert 0.0 <= speech[row]["cer"] and -1.0 <= speech[row]["sim_source_speaker"] <= 1.0
    for row in ("ground_truth", "resynthesis", "unprompted"):
        assert speech[row]["sim_prompt_speaker"] is None
    assert None not in (speech["prompted"]["sim_prompt_speaker"], speech["cross_speaker"]["sim_prompt_speaker"])
    for item in speech["items"]:
        assert item["speaker"] == item["target"][:3] == item["prompt"][:3] and item["prompt"] != item["target"]
        assert item["other_speaker"] == item["cross_prompt"][:3] != item["speaker"]
        assert item["text"] in SENTENCES and set(item["rows"]) == set(rows)
    assert 0.0 <= speech["cross_speaker_attribution"] <= 1.0
    assert speech["ground_truth"]["mel_distance"] == pytest.approx(0.0, abs=1e-6)
    # an untrained model makes noise: the recognizer reads the real recordings better
    assert speech["ground_truth"]["wer"] < 0.6 and speech["ground_truth"]["wer"] < speech["unprompted"]["wer"] - 0.2
    assert speech["ground_truth"]["cer"] < speech["unprompted"]["cer"]
    assert "| ground_truth |" in (out / "speech_table.md").read_text() and "| cross_speaker |" in result.stdout
    assert (out / "speech_table.png").stat().st_size > 0 and list((out / "wandb").glob("offline-run-*"))
    assert len(list((out / "speech_examples").glob("*.wav"))) == len(rows)
    assert speech["resynthesis_levels2"]["sim_prompt_speaker"] is None
    assert speech["prompted_levels2"]["sim_prompt_speaker"] is not None
    assert "| prompted_levels2 |" in (out / "speech_table.md").read_text()


def test_eval_cli_speech_table_needs_two_speakers(speaker_tokens, tmp_path):
    """One speaker id for every utterance: ``prog: error`` naming the field, exit 2, before any scoring."""
    import shutil

    tokens = tmp_path / "tokens"
    shutil.copytree(speaker_tokens, tokens)
    manifest = json.loads((tokens / "manifest.json").read_text())
    for utt in manifest["utterances"]:
        utt["speaker"] = "only"
    (tokens / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("soundstorm.cli.eval", f"checkpoint={_random_model(tokens, tmp_path / 'model')}",
                     f"data.root={tokens}", f"out_dir={tmp_path / 'eval'}", *EVAL, "evaluation.speech.enabled=true",
                     "logger=none")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "soundstorm-eval: error: " in result.stderr and "'speaker'" in result.stderr
    assert not (tmp_path / "eval" / "metrics.json").exists()


class _FakeEvaluator:
    """Records what the table asks for: generate copies the prompt and fills with the semantic ids."""

    def __init__(self):
        self.model = type("M", (), {"config": type("C", (), {"semantic_upsample": 2})()})()
        self.codec = type("Codec", (), {"sample_rate": 8000, "frame_rate": 50.0})()
        self.calls = []

    def generate(self, semantic_S, prompt_QT=None, seed=0):
        self.calls.append((semantic_S.clone(), None if prompt_QT is None else prompt_QT.clone()))
        codes_QT = semantic_S.repeat_interleave(2)[None].clone()
        if prompt_QT is not None:
            codes_QT[:, :prompt_QT.shape[1]] = prompt_QT
        return codes_QT

    def decode(self, codes_QT):
        return torch.sin(torch.arange(codes_QT.shape[1] * 160) * 0.05) * 0.1 * (1 + codes_QT.float().mean() / 100)


def test_prompted_rows_prepend_another_utterance_and_score_the_continuation(tmp_path):
    from soundstorm.evaluation.speech_plan import SpeechItem
    from soundstorm.evaluation.speech_table import SpeechTable

    utts = {}
    for name, num_semantic, value in (("t", 10, 1), ("p", 200, 7), ("r", 20, 3), ("x", 200, 9), ("xr", 20, 5)):
        sf.write(str(tmp_path / f"{name}.wav"), np.full(num_semantic * 320, 0.01 * value, dtype=np.float32), 8000)
        utts[name] = {"utt_id": name, "codes": torch.full((1, 2 * num_semantic), 100 + value),
                      "semantic": torch.full((num_semantic,), value), "text": "hello world",
                      "path": str(tmp_path / f"{name}.wav")}
    recognizer = type("R", (), {"transcribe": lambda self, wav, sr: "hello word"})()
    verifier = type("V", (), {"embed": lambda self, wav, sr: torch.stack([wav.abs().mean(), wav.std() + 0.1])})()
    evaluator = _FakeEvaluator()
    table = SpeechTable(evaluator, recognizer, verifier, utts.__getitem__, prompt_seconds=3.0)
    item = SpeechItem(target="t", speaker="A", prompt="p", reference="r", other_speaker="B", cross_prompt="x",
                      cross_reference="xr")
    result = table.item(item, 0)
    unprompted, prompted, cross = evaluator.calls
    assert unprompted[1] is None and torch.equal(unprompted[0], utts["t"]["semantic"])
    for (semantic_S, prompt_QT), source in ((prompted, "p"), (cross, "x")):  # 3 s = 150 frames = 75 semantic
        assert torch.equal(semantic_S, torch.cat([utts[source]["semantic"][:75], utts["t"]["semantic"]]))
        assert torch.equal(prompt_QT, utts[source]["codes"][:, :150])
    for row in ("resynthesis", "unprompted", "prompted", "cross_speaker"):  # continuation only: the target's length
        assert result["waves"][row].shape[0] == 20 * 160, row
    assert result["rows"]["ground_truth"]["wer"] == 0.5 and result["rows"]["ground_truth"]["mel_distance"] == 0.0
    assert result["rows"]["prompted"]["sim_prompt_speaker"] == result["rows"]["prompted"]["sim_source_speaker"]
    cross_row = result["rows"]["cross_speaker"]
    assert cross_row["sim_prompt_speaker"] != cross_row["sim_source_speaker"]


def test_text_to_semantic_row_speaks_the_text_with_the_prompted_rows_voice(tmp_path):
    """With a first stage, the table gains ``text_to_semantic``: the target's *text* → semantic tokens
    (prompted with the ``prompted`` row's semantic prompt) → SoundStorm continuing the same acoustic prompt."""
    from soundstorm.evaluation.speech_plan import SpeechItem
    from soundstorm.evaluation.speech_table import T2S_ROW, SpeechTable

    utts = {}
    for name, num_semantic, value in (("t", 10, 1), ("p", 200, 7), ("r", 20, 3), ("x", 200, 9), ("xr", 20, 5)):
        sf.write(str(tmp_path / f"{name}.wav"), np.full(num_semantic * 320, 0.01 * value, dtype=np.float32), 8000)
        utts[name] = {"utt_id": name, "codes": torch.full((1, 2 * num_semantic), 100 + value),
                      "semantic": torch.full((num_semantic,), value), "text": f"the text of {name}",
                      "path": str(tmp_path / f"{name}.wav")}
    seen = []

    def semantic_from_text(text, prompt_semantic_P, seed):
        seen.append((text, prompt_semantic_P.clone(), seed))
        return torch.full((12,), 42)

    recognizer = type("R", (), {"transcribe": lambda self, wav, sr: "the text of t"})()
    verifier = type("V", (), {"embed": lambda self, wav, sr: torch.stack([wav.abs().mean(), wav.std() + 0.1])})()
    evaluator = _FakeEvaluator()
    table = SpeechTable(evaluator, recognizer, verifier, utts.__getitem__, prompt_seconds=3.0,
                        semantic_from_text=semantic_from_text)
    item = SpeechItem(target="t", speaker="A", prompt="p", reference="r", other_speaker="B", cross_prompt="x",
                      cross_reference="xr")
    result = table.item(item, 4)
    [(text, prompt, seed)] = seen
    assert text == "the text of t" and torch.equal(prompt, utts["p"]["semantic"][:75]) and seed == 4
    semantic_S, prompt_QT = evaluator.calls[-1]
    assert torch.equal(semantic_S, torch.cat([utts["p"]["semantic"][:75], torch.full((12,), 42)]))
    assert torch.equal(prompt_QT, utts["p"]["codes"][:, :150])
    assert result["waves"][T2S_ROW].shape[0] == 12 * 2 * 160  # the continuation only
    row = result["rows"][T2S_ROW]
    assert row["wer"] == 0.0 and row["sim_prompt_speaker"] == row["sim_source_speaker"]
    summary = summarize([result])
    assert summary[T2S_ROW]["wer"] == 0.0 and "| text_to_semantic | 0.000 |" in markdown(summary)
    assert T2S_ROW not in summarize([{"rows": {r: v for r, v in result["rows"].items() if r != T2S_ROW}}])


def test_text_to_semantic_checkpoint_errors_name_the_field(tmp_path):
    from soundstorm import SoundStorm, SoundStormConfig
    from soundstorm.t2s import T2SConfig, TextToSemantic
    from soundstorm.t2s.speech_row import load_semantic_from_text

    model = SoundStorm(SoundStormConfig.tiny())
    assert load_semantic_from_text(None, model) is None
    with pytest.raises(FileNotFoundError, match="evaluation.speech.t2s_checkpoint="):
        load_semantic_from_text(tmp_path / "missing", model)
    t2s_dir = tmp_path / "t2s"
    TextToSemantic(T2SConfig.tiny(semantic_vocab_size=model.config.semantic_vocab_size + 1)).save_pretrained(t2s_dir)
    with pytest.raises(ValueError, match="evaluation.speech.t2s_checkpoint=.* not trained on the same tokenizer"):
        load_semantic_from_text(t2s_dir, model)
    TextToSemantic(T2SConfig.tiny(semantic_vocab_size=model.config.semantic_vocab_size)).save_pretrained(t2s_dir)
    semantic_from_text = load_semantic_from_text(t2s_dir, model)
    ids_S = semantic_from_text("Hello there.", torch.zeros(4, dtype=torch.long), 0)
    assert ids_S.ndim == 1 and 0 <= int(ids_S.min()) and int(ids_S.max()) < model.config.semantic_vocab_size
    assert torch.equal(ids_S, semantic_from_text("Hello there.", torch.zeros(4, dtype=torch.long), 0))


class _LevelsEvaluator(_FakeEvaluator):
    """Three levels; generate returns codes 10 + level on the continuation; decode records what it got."""

    def __init__(self):
        super().__init__()
        self.model.config.num_levels = 3
        self.decoded = []

    def generate(self, semantic_S, prompt_QT=None, seed=0):
        self.calls.append((semantic_S.clone(), None if prompt_QT is None else prompt_QT.clone()))
        codes_QT = (10 + torch.arange(3))[:, None].repeat(1, 2 * semantic_S.shape[0])
        if prompt_QT is not None:
            codes_QT[:, :prompt_QT.shape[1]] = prompt_QT
        return codes_QT

    def decode(self, codes_QT):
        self.decoded.append(codes_QT.clone())
        return super().decode(codes_QT)


def test_level_prefix_rows_decode_the_first_levels_of_the_same_codes(tmp_path):
    """``level_prefixes=[1, 2]``: rows decoding the first k levels of the reference codes and of the *prompted
    row's* generated codes (no extra generation), scored like their full rows, in table order."""
    from soundstorm.evaluation.speech_plan import SpeechItem
    from soundstorm.evaluation.speech_table import SpeechTable, rows_of

    utts = {}
    for name, num_semantic, value in (("t", 10, 1), ("p", 200, 7), ("r", 20, 3), ("x", 200, 9), ("xr", 20, 5)):
        sf.write(str(tmp_path / f"{name}.wav"), np.full(num_semantic * 320, 0.01 * value, dtype=np.float32), 8000)
        utts[name] = {"utt_id": name, "codes": (100 * value + torch.arange(3))[:, None].repeat(1, 2 * num_semantic),
                      "semantic": torch.full((num_semantic,), value), "text": "hello world",
                      "path": str(tmp_path / f"{name}.wav")}
    recognizer = type("R", (), {"transcribe": lambda self, wav, sr: "hello world"})()
    verifier = type("V", (), {"embed": lambda self, wav, sr: torch.stack([wav.abs().mean(), wav.std() + 0.1])})()
    evaluator = _LevelsEvaluator()
    table = SpeechTable(evaluator, recognizer, verifier, utts.__getitem__, prompt_seconds=3.0, level_prefixes=(1, 2))
    item = SpeechItem(target="t", speaker="A", prompt="p", reference="r", other_speaker="B", cross_prompt="x",
                      cross_reference="xr")
    result = table.item(item, 0)
    assert len(evaluator.calls) == 3  # unprompted, prompted, cross_speaker: the prefixes reuse the prompted codes
    decoded = [c for c in evaluator.decoded if c.shape[0] < 3]
    true_codes, generated_codes = utts["t"]["codes"], (10 + torch.arange(3))[:, None].repeat(1, 20)
    assert [c.shape[0] for c in decoded] == [1, 1, 2, 2]
    assert torch.equal(decoded[0], true_codes[:1]) and torch.equal(decoded[1], generated_codes[:1])
    assert torch.equal(decoded[2], true_codes[:2]) and torch.equal(decoded[3], generated_codes[:2])
    rows = result["rows"]
    assert rows["resynthesis_levels2"]["sim_prompt_speaker"] is None
    assert rows["prompted_levels1"]["sim_prompt_speaker"] == rows["prompted_levels1"]["sim_source_speaker"]
    assert rows["prompted_levels2"]["wer"] == 0.0 and rows["resynthesis_levels1"]["mel_distance"] > 0
    summary = summarize([result])
    assert rows_of(summary) == ROWS + ("resynthesis_levels1", "prompted_levels1", "resynthesis_levels2",
                                       "prompted_levels2")
    assert "| prompted_levels2 | 0.000 |" in markdown(summary)


@pytest.mark.parametrize("prefixes", [[0], [3], [1, 1], [True], ["2"]])
def test_level_prefixes_outside_the_model_levels_are_refused(prefixes):
    from soundstorm.evaluation.speech_table import SpeechTable

    with pytest.raises(ValueError, match="evaluation.speech.level_prefixes"):
        SpeechTable(_LevelsEvaluator(), None, None, None, level_prefixes=SpeechEvalConfig(
            max_utterances=1, level_prefixes=prefixes).level_prefixes)
