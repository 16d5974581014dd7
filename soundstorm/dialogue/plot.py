"""The dialogue's log-mel spectrogram with each turn marked (span shaded by speaker, label on top)."""

from __future__ import annotations

from pathlib import Path

import torch

from soundstorm.evaluation.plots import log_mel
from soundstorm.io import atomic_save_figure

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def save_dialogue_spectrogram(path, wav_N: torch.Tensor, sample_rate: int, turns: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    speakers = list(dict.fromkeys(t["speaker"] for t in turns))
    spec = log_mel(wav_N, sample_rate).numpy()
    duration = wav_N.shape[-1] / sample_rate
    fig, ax = plt.subplots(figsize=(max(8.0, 1.2 * duration), 3.2))
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", extent=(0, duration, 0, spec.shape[0]))
    for turn in turns:
        color = COLORS[speakers.index(turn["speaker"]) % len(COLORS)]
        ax.axvspan(turn["start"], turn["end"], ymin=0.97, ymax=1.0, color=color)
        for edge in (turn["start"], turn["end"]):
            ax.axvline(edge, color=color, linewidth=1.0, alpha=0.8)
        label = f"{turn['speaker']}: {turn['text']}"
        ax.text(turn["start"], spec.shape[0] * 0.9, label[:40] + ("…" if len(label) > 40 else ""), color="white",
                fontsize=7, va="top", clip_on=True)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    legend = ", ".join(f"{s} = {COLORS[i % len(COLORS)].split(':')[1]}" for i, s in enumerate(speakers))
    ax.set_title("dialogue: " + legend)
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)
    return path
