"""The speech table's recognizer in worker processes (soundstorm.evaluation.asr_pool): the same transcripts and
the same table as in one process, in the order the clips were submitted; bad settings name the field."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import soundfile as sf
import torch

from soundstorm.evaluation.asr import PocketsphinxRecognizer
from soundstorm.evaluation.asr_pool import InlineTranscriber, TranscriberPool, transcriber_for
from soundstorm.evaluation.speech_plan import SpeechEvalConfig, SpeechItem
from soundstorm.evaluation.speech_table import SpeechTable

SENTENCES = ("The boy was there when the sun rose.", "A small boat drifted past the lighthouse.",
             "She opened the window and listened to the rain.")


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> list[torch.Tensor]:
    """Three espeak-ng sentences at 16 kHz: clips a recognizer reads to different transcripts."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is needed (apt-get install espeak-ng)")
    tmp = tmp_path_factory.mktemp("pool")
    clips = []
    for i, text in enumerate(SENTENCES):
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(tmp / f"{i}.wav"), text], check=True)
        data, rate = sf.read(str(tmp / f"{i}.wav"), dtype="float32")
        clips.append(torch.from_numpy(data))
        assert rate == 22050
    return clips


def test_pool_gives_the_transcripts_of_one_process_in_submit_order(speech):
    recognizer = PocketsphinxRecognizer()
    noise = torch.randn(40000, generator=torch.Generator().manual_seed(0)) * 0.2
    clips = [speech[0], noise, speech[1], speech[2], speech[0]]
    inline = [recognizer.transcribe(clip, 22050) for clip in clips]
    assert len(set(inline)) >= 3, inline  # the clips are told apart: equal transcripts below mean something
    with TranscriberPool("pocketsphinx", {}, workers=2) as pool:
        futures = [pool.submit(clip, 22050) for clip in clips]
        assert [f.result(timeout=120) for f in futures] == inline
    assert InlineTranscriber(recognizer).submit(speech[1], 22050).result() == inline[2]


class _SpeechEvaluator:
    """Generates nothing real: the decoded clips are the speech clips in turn, so the rows have different
    transcripts."""

    def __init__(self, clips):
        self.clips, self.decoded = clips, 0
        self.model = type("M", (), {"config": type("C", (), {"semantic_upsample": 1, "num_levels": 2})()})()
        self.codec = type("Codec", (), {"sample_rate": 22050, "frame_rate": 50.0})()

    def generate(self, semantic_S, prompt_QT=None, seed=0):
        codes_QT = torch.stack([semantic_S, semantic_S + 1])
        if prompt_QT is not None:
            codes_QT[:, :prompt_QT.shape[1]] = prompt_QT
        return codes_QT

    def decode(self, codes_QT):
        self.decoded += 1
        return self.clips[self.decoded % len(self.clips)]


def test_speech_table_is_the_same_with_worker_processes(speech, tmp_path):
    utts = {}
    for i, name in enumerate(("t1", "t2", "p", "r", "x", "xr")):
        sf.write(str(tmp_path / f"{name}.wav"), speech[i % 3].numpy(), 22050)
        frames = 60 + 40 * i
        utts[name] = {"utt_id": name, "codes": torch.full((2, frames), i), "semantic": torch.arange(frames) % 7 + i,
                      "text": SENTENCES[i % 3], "path": str(tmp_path / f"{name}.wav")}
    items = [SpeechItem(target=t, speaker="A", prompt="p", reference="r", other_speaker="B", cross_prompt="x",
                        cross_reference="xr") for t in ("t1",)]
    verifier = type("V", (), {"embed": lambda self, wav, sr: torch.stack([wav.abs().mean(), wav.std() + 0.1])})()

    def table(transcriber):
        scorer = SpeechTable(_SpeechEvaluator(speech), transcriber, verifier, utts.__getitem__, prompt_seconds=1.0,
                             level_prefixes=(1,))
        summary, results = scorer.run(items)
        return summary, [{row: (values["wer"], values["transcript"]) for row, values in r["rows"].items()}
                         for r in results]

    inline = table(PocketsphinxRecognizer())
    assert len({t for r in inline[1] for _, t in r.values()}) >= 2  # not every row heard alike
    pool = transcriber_for(PocketsphinxRecognizer(), "pocketsphinx", {}, workers=2)
    try:
        assert isinstance(pool, TranscriberPool)
        assert table(pool) == inline
    finally:
        pool.close()


@pytest.mark.parametrize("workers", [-1, 1.5, True, "2"])
def test_bad_worker_counts_name_the_field(workers):
    with pytest.raises(ValueError, match="evaluation.speech.asr_workers"):
        SpeechEvalConfig(asr_workers=workers)
    with pytest.raises(ValueError, match="workers >= 1"):
        TranscriberPool("pocketsphinx", {}, workers=0 if workers == "2" else workers)


def test_a_worker_error_reaches_the_caller(speech):
    """What the recognizer raises in a worker, the Future raises here, with its message (not a hang)."""
    with TranscriberPool("pocketsphinx", {}, workers=1) as pool:
        bad = pool.submit(torch.stack([speech[0], speech[0]]), 22050)  # [2, N]: not a mono waveform
        good = pool.submit(speech[0], 22050)
        with pytest.raises(ValueError, match="mono waveform"):
            bad.result(timeout=120)
        assert good.result(timeout=120) == PocketsphinxRecognizer().transcribe(speech[0], 22050)
