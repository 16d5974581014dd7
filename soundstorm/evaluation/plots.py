"""Figures: reference vs. generated log-mel spectrograms stacked in one PNG; the speech table as bars.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from soundstorm import dsp

from soundstorm.io import atomic_save_figure


def log_mel(wav_N: torch.Tensor, sample_rate: int, n_mels: int = 80) -> torch.Tensor:
    mel = dsp.MelSpectrogram(sample_rate, 1024, sample_rate // 100, n_mels)
    return torch.log(mel(wav_N.float().cpu()).clamp(min=1e-5))


def save_spectrograms(path, waves: dict[str, torch.Tensor], sample_rate: int, title: str = "") -> Path:
    """Write one panel per named waveform (``{"reference": wav_N, "generated": wav_N}``) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(len(waves), 1, figsize=(12, 2.6 * len(waves)), squeeze=False)
    for ax, (name, wav) in zip(axes[:, 0], waves.items()):
        spec = log_mel(wav, sample_rate).numpy()
        ax.imshow(spec, origin="lower", aspect="auto", cmap="magma",
                  extent=(0, wav.shape[-1] / sample_rate, 0, spec.shape[0]))
        ax.set_ylabel(f"{name}\nmel bin")
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)
    return path


def save_speech_bars(path, table: dict, rows, title: str = "") -> Path:
    """Bar charts of the speech table (``speech_table.summarize``): WER/CER, speaker similarities, mel distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    panels = (("error rate (lower is better)", ("wer", "cer")),
              ("speaker similarity (cosine)", ("sim_prompt_speaker", "sim_source_speaker")),
              ("log-mel distance to ground truth", ("mel_distance",)))
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 3.8))
    for ax, (ylabel, columns) in zip(axes, panels):
        width = 0.8 / len(columns)
        for j, col in enumerate(columns):
            values = [np.nan if table[row][col] is None else table[row][col] for row in rows]
            ax.bar(x + (j - (len(columns) - 1) / 2) * width, values, width, label=col)
        ax.set_xticks(x, rows, rotation=25, ha="right")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)
    return path
