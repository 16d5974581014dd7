"""Transcription beside the evaluation: the speech table's recognizer in worker processes.

Why: pocketsphinx holds Python's GIL while it decodes, so threads do not help. It takes about 1 s
per clip on a 2.8 GHz core, and the quickstart's speech table transcribes 9 clips per target (five
rows and four level-prefix rows). In a one-thread profile on the 2-core Ice Lake VM it was 61% of the
table's time, and with two cores the second one sat mostly idle (docs/quickstart.md). With
``evaluation.speech.asr_workers=N`` (N >= 1), N worker processes each build their own recognizer
from the same name and options, and the table goes on generating and decoding while they transcribe.

A transcript depends only on its clip: :class:`~soundstorm.evaluation.asr.PocketsphinxRecognizer`
starts every call from the decoder's initial state. So the table is the same with any number of
workers (``tests/test_asr_pool.py``). A custom recognizer (``package.module:attr``) must be
importable in a fresh process, as the workers are spawned, not forked.

What crosses the process boundary is the table's own float32 waveform and the transcript string.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np
import torch

from soundstorm.evaluation.asr import build_recognizer

_WORKER_RECOGNIZER = None  # the recognizer of this worker process (set by _start_worker)


def _start_worker(name: str, options: dict) -> None:
    global _WORKER_RECOGNIZER
    torch.set_num_threads(1)  # one process per core: the recognizer is single-threaded, and so is its resampler
    _WORKER_RECOGNIZER = build_recognizer(name, options)


def _transcribe_in_worker(wav_N: np.ndarray, sample_rate: int) -> str:
    return _WORKER_RECOGNIZER.transcribe(torch.from_numpy(wav_N), sample_rate)


class InlineTranscriber:
    """A recognizer behind the pool's interface: ``submit`` transcribes at once, in this process."""

    def __init__(self, recognizer):
        self.recognizer = recognizer

    def submit(self, wav_N: torch.Tensor, sample_rate: int) -> Future:
        future: Future = Future()
        future.set_result(self.recognizer.transcribe(wav_N, sample_rate))
        return future

    def close(self) -> None:
        pass


class TranscriberPool:
    """``workers`` spawned processes, each with ``build_recognizer(name, options)``; ``submit`` returns a
    Future of the transcript. Build the recognizer once in the calling process first: its errors then name
    the field there, not in a worker."""

    def __init__(self, name: str, options: dict | None, workers: int):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"TranscriberPool needs an integer workers >= 1, got {workers!r} "
                             "(InlineTranscriber transcribes in this process)")
        self._executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(name, dict(options or {})))

    def submit(self, wav_N: torch.Tensor, sample_rate: int) -> Future:
        wav = wav_N.detach().to("cpu", torch.float32).contiguous().numpy()
        return self._executor.submit(_transcribe_in_worker, wav, int(sample_rate))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "TranscriberPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def transcriber_for(recognizer, name: str, options: dict | None, workers: int):
    """What the speech table submits its clips to: ``recognizer`` itself (``workers == 0``), or a pool of
    ``workers`` processes running the recognizer of the same ``name`` and ``options``."""
    if workers == 0:
        return InlineTranscriber(recognizer)
    return TranscriberPool(name, options, workers)
