"""The festival corpus: six speakers, transcripts, phone alignments that fit the audio, and a
held-out split by *sentence* that survives prepare and the dataset split."""

from __future__ import annotations

import json
import shutil

import pytest
import soundfile as sf

from _cli import run_cli
from soundstorm.synthesis.corpus import plan_utterances, synth_corpus
from soundstorm.data import TokenManifest
from soundstorm.data.split import split_utterances
from soundstorm.synthesis.festival import DIPHONE_SPEAKERS, MIXED_SPEAKERS, SPEAKERS, resolve_speakers, resolve_timing

slow = pytest.mark.slow  # the tests that synthesise and prepare run CLIs in child processes

SENTENCES = [f"The number {n} is written on the {w} door." for n, w in
             zip(("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
                 ("red", "blue", "green", "white", "black", "old", "new", "front", "back", "small"))]


@pytest.fixture(scope="module")
def festival_corpus(tmp_path_factory):
    if shutil.which("festival") is None or shutil.which("sox") is None:
        pytest.skip("festival and sox are needed (apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox)")
    out = tmp_path_factory.mktemp("festival_corpus")
    result = run_cli("soundstorm.cli.synth_corpus", "--out", str(out), "--engine", "festival", "--num-utterances", "12",
                     "--heldout-fraction", "0.3", "--sentences-per-utterance", "2")
    assert result.returncode == 0, result.stderr
    return out / "manifest.jsonl"


@slow
def test_festival_corpus_speakers_transcripts_and_phones(festival_corpus):
    entries = [json.loads(line) for line in festival_corpus.read_text().splitlines()]
    assert len(entries) == 12 and {e["speaker"] for e in entries} == set(DIPHONE_SPEAKERS)
    for entry in entries:
        info = sf.info(str(festival_corpus.parent / entry["path"]))
        duration = info.frames / info.samplerate
        assert info.samplerate == 16_000 and abs(duration - entry["duration"]) < 1e-3
        ends = [end for _, end in entry["phones"]]
        assert ends == sorted(ends) and entry["phones"][0][0] == "pau"
        # the last phone ends where the audio ends, also after sox changed the speed of the variant
        assert abs(ends[-1] - duration) < 0.05, (entry["speaker"], ends[-1], duration)
        assert entry["text"] and entry["split"] in ("train", "heldout")


@slow
def test_heldout_sentences_never_reach_training(festival_corpus, tmp_path):
    entries = [json.loads(line) for line in festival_corpus.read_text().splitlines()]
    heldout = [e for e in entries if e["split"] == "heldout"]
    assert heldout and len(heldout) < len(entries)
    train_text = " ".join(e["text"] for e in entries if e["split"] == "train")
    assert all(e["text"] not in train_text for e in heldout)
    result = run_cli("soundstorm.cli.prepare", f"input={festival_corpus}", f"output={tmp_path / 'tokens'}",
                     "codec=melrvq", "codec.num_levels=2", "codec.codebook_size=16", "semantic=phone_classifier",
                     "semantic.fit_epochs=1", "progress=false", "num_threads=1")
    assert result.returncode == 0, result.stderr + result.stdout
    manifest = TokenManifest.load(tmp_path / "tokens")
    train_ids, heldout_ids = split_utterances(manifest.utterances, heldout_fraction=0.5, seed=0)
    assert sorted(heldout_ids) == sorted(e["utt_id"] for e in heldout)  # the corpus's split wins over the fraction
    assert {u["speaker"] for u in manifest.utterances} == set(DIPHONE_SPEAKERS)


def test_speaker_variants_are_synthesised_identically_every_time(tmp_path):
    """sox's speed/pitch effects without dither: the same job gives the same bytes (a corpus is reproducible)."""
    if shutil.which("festival") is None or shutil.which("sox") is None:
        pytest.skip("festival and sox are needed (apt-get install festival festvox-kallpc16k sox)")
    from soundstorm.synthesis.festival import synthesize_batch

    outputs = []
    for attempt in ("a", "b"):
        (tmp_path / attempt).mkdir()
        jobs = [("kal_small", SENTENCES[0], tmp_path / attempt / "x.wav"),
                ("kal", SENTENCES[1], tmp_path / attempt / "y.wav")]
        synthesize_batch(jobs)
        outputs.append([(tmp_path / attempt / name).read_bytes() for name in ("x.wav", "y.wav")])
    assert outputs[0] == outputs[1]


def test_festival_batches_in_parallel_give_the_same_corpus(tmp_path):
    """Batches synthesised at once (``workers``) write the same bytes and phones as one after another, and
    a bad ``workers`` fails before anything is written."""
    if shutil.which("festival") is None or shutil.which("sox") is None:
        pytest.skip("festival and sox are needed (apt-get install festival festvox-kallpc16k festvox-us-slt-hts sox)")
    from soundstorm.synthesis import corpus

    plans = plan_utterances(5, 0, SENTENCES, "festival", speakers="mixed")
    runs = {}
    for workers in (1, 3):
        wav_dir = tmp_path / f"w{workers}"
        wav_dir.mkdir()
        results = corpus._synth_festival(plans, wav_dir, resolve_timing("slt"), batch_size=2, workers=workers)
        runs[workers] = (results, {p.name: p.read_bytes() for p in sorted(wav_dir.iterdir())})
    assert len(runs[1][1]) == 5 and list(runs[1][0]) == [p["utt_id"] for p in plans]
    assert runs[3] == runs[1]
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=f"workers must be an integer >= 1.*got {bad!r}"):
            synth_corpus(tmp_path / "bad", engine="festival", workers=bad)
    assert not (tmp_path / "bad").exists()


def test_a_failed_festival_batch_stops_the_batches_not_yet_started(tmp_path, monkeypatch):
    """The error of the first failing batch is raised, and the batches queued behind it do not run."""
    import threading
    import time

    import soundstorm.synthesis.festival as festival
    from soundstorm.synthesis import corpus

    started, lock = [], threading.Lock()

    def synthesize_batch(jobs, timing_voice=None):
        with lock:
            started.append(jobs[0][2].stem)
        if jobs[0][2].stem == "utt00000":
            raise RuntimeError("festival failed (exit 1): no voice")
        time.sleep(0.2)
        return {wav.stem: {"duration": 1.0, "phones": []} for _, _, wav in jobs}

    monkeypatch.setattr(festival, "find_tools", lambda: ("festival", "sox"))
    monkeypatch.setattr(festival, "synthesize_batch", synthesize_batch)
    plans = plan_utterances(16, 0, SENTENCES, "festival")
    with pytest.raises(RuntimeError, match="no voice"):
        corpus._synth_festival(plans, tmp_path, batch_size=2, workers=2)
    assert started[0] == "utt00000" and len(started) <= 4, started  # of 8 batches


def test_shared_timing_gives_diphone_speakers_the_hts_voice_phone_durations(tmp_path):
    """--timing slt: a diphone speaker says a text with the slt voice's phones and durations (the voices'
    own timing names the voice family to a content tokenizer); without it they differ."""
    if shutil.which("festival") is None or shutil.which("sox") is None:
        pytest.skip("festival and sox are needed (apt-get install festival festvox-kallpc16k festvox-us-slt-hts sox)")
    from soundstorm.synthesis.festival import synthesize_batch

    text = "The engineer checked every bolt on the bridge before it opened."
    speakers = ("slt", "kal", "kal_bright")
    shared = synthesize_batch([(s, text, tmp_path / f"{s}.wav") for s in speakers], resolve_timing("slt"))
    own = synthesize_batch([(s, text, tmp_path / f"own_{s}.wav") for s in speakers[:2]])

    def names(result):
        return [p for p, _ in result["phones"]]

    def ends(result):
        return [end for _, end in result["phones"]]

    assert names(shared["kal"]) == names(shared["slt"]) == names(shared["kal_bright"])
    assert ends(shared["kal"]) == pytest.approx(ends(shared["slt"]), abs=1e-3)
    bright = SPEAKERS["kal_bright"]  # its stretch applies to the shared durations, then sox speed shortens them
    assert ends(shared["kal_bright"]) == pytest.approx([e * bright.stretch / bright.speed for e in ends(shared["slt"])],
                                                       abs=2e-3)
    for name, result in shared.items():  # the labels still fit the audio
        assert abs(ends(result)[-1] - result["duration"]) < 0.05, name
    # festival's own timing (and vowel reduction) for the diphone voice: not the HTS voice's
    assert names(own["own_kal"]) != names(own["own_slt"]) or \
        max(abs(a - b) for a, b in zip(ends(own["own_kal"]), ends(own["own_slt"]))) > 0.05
    with pytest.raises(ValueError, match="timing='fast'"):
        resolve_timing("fast")
    with pytest.raises(ValueError, match="timing='fast'"):
        synth_corpus(tmp_path / "corpus", engine="festival", timing="fast")
    assert not (tmp_path / "corpus").exists()


def test_shared_timing_falls_back_to_own_durations_with_a_warning(tmp_path, monkeypatch):
    """A timing whose phone sequence differs from the diphone voice's is not forced on it: the voice keeps
    its own durations, the labels still fit the audio, and a warning names the utterance."""
    if shutil.which("festival") is None or shutil.which("sox") is None:
        pytest.skip("festival and sox are needed (apt-get install festival festvox-kallpc16k festvox-us-slt-hts sox)")
    import soundstorm.synthesis.festival as festival

    timing_script = festival._timing_script  # time another (shorter) text: a different phone sequence
    monkeypatch.setattr(festival, "_timing_script",
                        lambda voice, texts, path: timing_script(voice, ["Hello."] * len(texts), path))
    with pytest.warns(UserWarning, match=r"1 utterance\(s\) kept their own phone durations.*'x'"):
        out = festival.synthesize_batch([("kal", SENTENCES[3], tmp_path / "x.wav")], resolve_timing("slt"))
    ends = [end for _, end in out["x"]["phones"]]
    assert len(ends) > 10 and abs(ends[-1] - out["x"]["duration"]) < 0.05


def test_speaker_sets_and_bad_speaker_names():
    plans = plan_utterances(12, 0, SENTENCES, engine="festival", speakers="mixed")
    assert {p["speaker"] for p in plans} == set(MIXED_SPEAKERS)
    assert {p["speaker"] for p in plan_utterances(4, 0, SENTENCES, engine="festival", speakers="kal,slt")} == {"kal", "slt"}
    assert resolve_speakers(["ked"]) == ("ked",)
    for bad in ("kal,nobody", "", []):
        with pytest.raises(ValueError, match="speakers="):
            resolve_speakers(bad)


def test_plan_keeps_heldout_sentences_alone_and_rotates_speakers():
    plans = plan_utterances(40, 0, SENTENCES, engine="festival", heldout_fraction=0.2, sentences_per_utterance=2)
    heldout = {p["text"] for p in plans if p["split"] == "heldout"}
    assert len(heldout) == 2 and heldout <= set(SENTENCES)
    assert all(h not in p["text"] for h in heldout for p in plans if p["split"] == "train")
    assert {len(p["text"].split(". ")) for p in plans if p["split"] == "train"} == {2}
    by_text = {}
    for p in plans:
        by_text.setdefault(p["text"], set()).add(p["speaker"])
    assert all(len(s) >= 2 for s in by_text.values())  # a repeated text gets another speaker
    assert plans == plan_utterances(40, 0, SENTENCES, engine="festival", heldout_fraction=0.2, sentences_per_utterance=2)
    assert all("split" not in p for p in plan_utterances(6, 0, SENTENCES, engine="festival"))  # no fraction: no field
    with pytest.raises(ValueError, match="holds out all"):
        plan_utterances(4, 0, SENTENCES[:2], engine="festival", heldout_fraction=0.9)
    with pytest.raises(ValueError, match="engine"):
        plan_utterances(4, 0, SENTENCES, engine="sapi")


def test_split_without_corpus_field_groups_by_sentence():
    records = [{"utt_id": f"u{i}", "text": f"Sentence {i % 5}!" if i % 2 else f"sentence {i % 5}"}
               for i in range(20)]
    train, heldout = split_utterances(records, heldout_fraction=0.2, seed=0)
    texts = {r["utt_id"]: r["text"].lower().strip("!") for r in records}
    assert heldout and {texts[i] for i in heldout}.isdisjoint(texts[i] for i in train)
    assert len({texts[i] for i in heldout}) == 1  # 20% of 5 sentences, every utterance of it
    with pytest.raises(ValueError, match="split must be 'train' or 'heldout'"):
        split_utterances([{"utt_id": "a", "text": "x", "split": "test"}, {"utt_id": "b", "text": "y"}], 0.1)
