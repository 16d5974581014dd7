"""Generating longer than the trained window: overlapping windows, each prompted by the last one.

The model attends over the whole sequence, so its cost grows with the square of the length and it
generalises poorly far beyond the window lengths it was trained on. :func:`generate_windowed`
therefore decodes ``window_frames`` frames at a time. Window k+1 starts ``prompt_frames`` before
window k ends, and those last frames of window k (all levels) are its acoustic prompt, so voice and
recording conditions carry over; only the new frames are generated. An optional user prompt
(e.g. the first 3 s of a reference) conditions the first window; a prompt longer than a window
conditions it through its last ``prompt_frames`` frames only. Window starts are multiples of
the semantic upsample ratio so the semantic tokens stay aligned.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import torch

from soundstorm.sampler import SamplerConfig, generate


def frames_for(seconds: float, frame_rate: float, multiple: int) -> int:
    """``seconds`` as a whole number of ``multiple``-frame steps at ``frame_rate`` (rounded to the nearest)."""
    return int(round(seconds * frame_rate / multiple)) * multiple


def window_frames(window_seconds: float, prompt_seconds: float, frame_rate: float, upsample: int,
                  fields: tuple[str, str] = ("window_seconds", "window_prompt_seconds")) -> tuple[int, int]:
    """``(window_frames, prompt_frames)`` for :func:`generate_windowed` from the seconds a user set (config
    fields ``fields``), rounded to whole semantic frames (``upsample`` codec frames at ``frame_rate``).

    Settings that cannot work are refused here, in the user's own fields and seconds, before any work:
    a window shorter than two semantic frames, and a window prompt that is not shorter than the window
    once both are rounded (each later window generates ``window - prompt`` new frames)."""
    window_field, prompt_field = fields
    step_s = upsample / frame_rate  # one semantic frame
    window, prompt = frames_for(window_seconds, frame_rate, upsample), frames_for(prompt_seconds, frame_rate, upsample)
    if window < 2 * upsample:
        raise ValueError(f"{window_field}={window_seconds:g} is shorter than two semantic frames ({2 * step_s:g} s at "
                         f"{1 / step_s:g} Hz); expected {window_field} >= {2 * step_s:g}")
    if not 0 <= prompt < window:
        exact = abs(prompt - prompt_seconds * frame_rate) < 1e-6 and abs(window - window_seconds * frame_rate) < 1e-6
        rounded = "" if exact else (f" (rounded to whole semantic frames of {step_s:g} s: {prompt / frame_rate:g} s "
                                    f"and {window / frame_rate:g} s)")
        raise ValueError(f"{prompt_field}={prompt_seconds:g} must be at least 0 and shorter than {window_field}="
                         f"{window_seconds:g}{rounded}: each window after the first is prompted by the last "
                         f"{prompt_field} of the one before and generates the rest; expected e.g. {prompt_field}="
                         f"{max(0.0, window_seconds / 10):g}")
    return window, prompt


def generate_windowed(model, semantic_S: torch.Tensor, *, window_frames: int, prompt_frames: int,
                      prompt_QT: torch.Tensor | None = None, config: SamplerConfig | None = None,
                      generator: torch.Generator | None = None, mark_step=None,
                      codebooks: torch.Tensor | None = None) -> torch.Tensor:
    """Codes ``[Q, T]`` for ``semantic_S [S]`` (``T = S × upsample``), decoded window by window.

    window_frames: codec frames per window (at most what the model was trained on).
    prompt_frames: frames of the previous window that prompt the next (must be < window_frames).
    prompt_QT: optional user prompt ``[Qp, Tp]`` for the start of the output.
    mark_step: ``backend.mark_step``, called after every decoding iteration (one XLA graph per
    iteration, reused by every window of the same length).
    codebooks: the codec's code vectors, for ``config.mbr_from_level`` (see :func:`soundstorm.sampler.generate`).
    """
    up = model.config.semantic_upsample
    if semantic_S.ndim != 1:
        raise ValueError(f"semantic_S must have shape [S], got {tuple(semantic_S.shape)}")
    if window_frames < 2 * up or window_frames % up:
        raise ValueError(f"window_frames={window_frames} must be a multiple of the semantic upsample {up} and >= {2 * up}")
    if not 0 <= prompt_frames < window_frames or prompt_frames % up:
        raise ValueError(f"prompt_frames={prompt_frames} must be a multiple of {up} in [0, window_frames={window_frames})")
    total = semantic_S.shape[0] * up
    q = model.config.num_levels
    codes_QT = torch.full((q, total), model.config.mask_id, dtype=torch.long)
    start = 0
    if prompt_QT is not None:
        if prompt_QT.ndim != 2 or prompt_QT.shape[0] > q or prompt_QT.shape[1] > total:
            raise ValueError(f"prompt_QT shape {tuple(prompt_QT.shape)} must be [Qp <= {q}, Tp <= the output's "
                             f"{total} frames]")
        codes_QT[:prompt_QT.shape[0], :prompt_QT.shape[1]] = prompt_QT
        if prompt_QT.shape[1] > window_frames - up:  # only the prompt's last prompt_frames fit the first window
            start = (prompt_QT.shape[1] - prompt_frames) // up * up
    while True:
        end = min(start + window_frames, total)
        window_QT = generate(model, semantic_S[None, start // up:end // up], prompt=codes_QT[None, :, start:end],
                             config=config, generator=generator, mark_step=mark_step, codebooks=codebooks)[0].cpu()
        codes_QT[:, start:end] = window_QT
        if end == total:
            return codes_QT
        start = end - prompt_frames
