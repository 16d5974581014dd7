"""Stand-in recognizer and verifier for the dialogue CLI tests (loaded by dotted path, as users' own are)."""

import torch


def transcribe(wav_N, sample_rate):
    """Always hears the same words, so each turn's WER is known from its text."""
    return "birds gathered on the wire"


def embed(wav_N, sample_rate):
    """The magnitude spectrum in 16 bands."""
    spectrum = torch.fft.rfft(wav_N.float()).abs()
    return torch.stack([band.sum() for band in spectrum.chunk(16)])
