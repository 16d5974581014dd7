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
