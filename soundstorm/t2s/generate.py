"""Text → semantic tokens: predict each text's length, then fill the masked targets in parallel.

Decoding is SoundStorm's confidence-based sampler (:func:`soundstorm.sampler.decode`) on a single
level: all target positions start masked, each iteration samples every masked position and keeps
the most confident by the cosine schedule, the last iteration is greedy. Text and prompt positions
are outside the decoded region and never change. ``SamplerConfig(steps=(n,))`` sets the number of
iterations (default 16) and the same temperature / top-k / top-p / confidence-noise knobs.

An aligned model (``T2SConfig.aligned``) reads its texts framed by boundary spaces, as in training;
its duration predictor gives each symbol's frames (divided by ``speed``; scaled to ``num_frames``
when that is given), rounded so that they sum to the length, and each target position is told the
symbol it is aligned to. A predicted length is checked before any target is allocated: more than
:attr:`~soundstorm.limits.Limits.max_frames_per_symbol` frames per text symbol (a broken or hostile
duration head; 39,005 frames for "Hello there." was seen) is refused with a ``ValueError``.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

from typing import Sequence

import torch

from soundstorm import limits
from soundstorm._checks import check_int_tensor, check_range
from soundstorm.sampler import SamplerConfig, decode
from soundstorm.t2s.align import with_boundaries
from soundstorm.t2s.batch import TARGET, pack
from soundstorm.t2s.text import encode


def _text_ids(model, texts: Sequence[str]) -> list[list[int]]:
    ids = [encode(text, model.config.frontend) for text in texts]
    return [with_boundaries(x) for x in ids] if model.config.aligned else ids


def _check_speed(speed: float) -> None:
    if not speed > 0:
        raise ValueError(f"speed must be > 0, got {speed!r}")


def _num_frames(model, texts: Sequence[str], durations: list[torch.Tensor], speed: float) -> list[int]:
    """Target lengths from predicted symbol durations: their sum divided by ``speed``, at least 1; refused
    above ``max_frames_per_symbol`` × the text's symbols (see the module docstring)."""
    lengths = [max(1, round(float(d.sum()) / speed)) if torch.isfinite(d).all() else -1 for d in durations]
    per_symbol = limits.current().max_frames_per_symbol
    for text, d, n in zip(texts, durations, lengths):
        if n < 0 or n > per_symbol * len(d):
            shown = "a non-finite length" if n < 0 else f"{n} semantic frames"
            raise ValueError(f"the text-to-semantic model {getattr(model, 'source', '')!r} predicts {shown} for "
                             f"text {text[:60]!r} ({len(d)} symbols, speed {speed:g}); accepted at most "
                             f"{per_symbol} frames per symbol ({per_symbol * len(d)}; limit max_frames_per_symbol): "
                             f"a broken duration head? {limits.how_to_raise('max_frames_per_symbol')}")
    return lengths


def round_durations(durations_N: torch.Tensor, num_frames: int) -> list[int]:
    """Non-negative integer frames per symbol summing to ``num_frames``, proportional to ``durations_N``
    (rounded on the cumulative sum, so rounding errors do not pile up)."""
    total = float(durations_N.sum())
    weights_N = durations_N.double() if total > 0 else torch.ones_like(durations_N, dtype=torch.float64)
    edges_N = torch.round(weights_N.cumsum(0) / weights_N.sum() * num_frames).long()
    return torch.diff(edges_N, prepend=edges_N.new_zeros(1)).tolist()


@torch.no_grad()
def _predicted_durations(model, ids, prompts, device) -> list[torch.Tensor]:
    ctx = {k: v.to(device) for k, v in pack(ids, prompts, [0] * len(ids), model.config.mask_id).items()}
    was_training = model.training
    model.eval()
    try:
        duration_BL = model.symbol_durations(ctx["tokens"], ctx["segment"], ctx["progress"], ctx["context"])
    finally:
        model.train(was_training)
    return [duration_BL[b, : len(x)].float().cpu() for b, x in enumerate(ids)]


def _check_prompts(model, prompts, batch_size: int) -> list[torch.Tensor | None]:
    if prompts is None:
        return [None] * batch_size
    if len(prompts) != batch_size:
        raise ValueError(f"prompts has {len(prompts)} entries, expected one per text ({batch_size}) or None")
    out = []
    for i, prompt in enumerate(prompts):
        if prompt is None:
            out.append(None)
            continue
        prompt_S = check_int_tensor(f"prompts[{i}]", prompt, 1, "[S]")
        check_range(f"prompts[{i}]", prompt_S, 0, model.config.semantic_vocab_size)
        out.append(prompt_S[: model.config.max_prompt_frames] if prompt_S.numel() else None)
    return out


@torch.no_grad()
def predict_num_frames(model, texts: Sequence[str], prompts=None, speed: float = 1.0) -> list[int]:
    """The length predictor's number of semantic frames per text (divided by ``speed``, at least 1)."""
    _check_speed(speed)
    ids = _text_ids(model, texts)
    prompts = _check_prompts(model, prompts, len(ids))
    return _num_frames(model, texts, _predicted_durations(model, ids, prompts, next(model.parameters()).device), speed)


@torch.no_grad()
def generate_semantic(model, texts: Sequence[str], prompts: Sequence[torch.Tensor | None] | None = None, *,
                      num_frames: Sequence[int] | None = None, speed: float = 1.0,
                      config: SamplerConfig | None = None, generator: torch.Generator | None = None,
                      mark_step=None) -> list[torch.Tensor]:
    """Semantic tokens ``[S_b]`` (long, CPU) for each text.

    prompts: per text, the speaker's semantic tokens ``[P]`` (the first ``max_prompt_frames`` are
    used) or None. num_frames: per text, the target length; None → the length predictor's, / speed.
    """
    if isinstance(texts, str) or not texts:
        raise ValueError(f"texts must be a non-empty list of strings, got {texts!r}")
    _check_speed(speed)
    ids = _text_ids(model, texts)
    prompts = _check_prompts(model, prompts, len(ids))
    device = next(model.parameters()).device
    # the duration predictor runs when it gives the length or (aligned model) the alignment
    predicted = _predicted_durations(model, ids, prompts, device) \
        if num_frames is None or model.config.aligned else None
    if num_frames is None:
        num_frames = _num_frames(model, texts, predicted, speed)
    if len(num_frames) != len(ids) or any(isinstance(n, bool) or int(n) != n or n < 1 for n in num_frames):
        raise ValueError(f"num_frames must hold one positive integer per text, got {list(num_frames)!r}")
    durations = [round_durations(d, int(n)) for d, n in zip(predicted, num_frames)] if model.config.aligned else None
    schedule = (config or SamplerConfig(steps=(16,))).resolve(1)
    batch = {k: v.to(device) for k, v in pack(ids, prompts, [int(n) for n in num_frames], model.config.mask_id,
                                              durations).items()}
    valid_BL = batch["segment"] == TARGET
    seed = torch.randint(0, 2**31 - 1, (1,), generator=generator).to(device).view(())

    def logits_fn(codes_B1L, _level):
        return model(codes_B1L[:, 0], batch["segment"], batch["progress"], batch["lengths"], batch["aligned"])

    was_training = model.training
    model.eval()
    try:
        codes_B1L = decode(logits_fn, batch["tokens"][:, None, :], valid_BL, schedule, seed, model.config.mask_id,
                           mark_step)
    finally:
        model.train(was_training)
    return [codes_B1L[b, 0][valid_BL[b]].cpu() for b in range(len(ids))]
