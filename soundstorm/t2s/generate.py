"""Text → semantic tokens: predict each text's length, then fill the masked targets in parallel.

Decoding is SoundStorm's confidence-based sampler (:func:`soundstorm.sampler.decode`) on a single
level: all target positions start masked, each iteration samples every masked position and keeps
the most confident by the cosine schedule, the last iteration is greedy. Text and prompt positions
are outside the decoded region and never change. ``SamplerConfig(steps=(n,))`` sets the number of
iterations (default 16) and the same temperature / top-k / top-p / confidence-noise knobs.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

from typing import Sequence

import torch

from soundstorm._checks import check_int_tensor, check_range
from soundstorm.sampler import SamplerConfig, decode
from soundstorm.t2s.batch import TARGET, pack
from soundstorm.t2s.text import encode


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
    if not speed > 0:
        raise ValueError(f"speed must be > 0, got {speed!r}")
    ids = [encode(text, model.config.frontend) for text in texts]
    prompts = _check_prompts(model, prompts, len(ids))
    device = next(model.parameters()).device
    ctx = {k: v.to(device) for k, v in pack(ids, prompts, [0] * len(ids), model.config.mask_id).items()}
    was_training = model.training
    model.eval()
    try:
        log_frames_B = model.log_num_frames(ctx["tokens"], ctx["segment"], ctx["progress"], ctx["context"])
    finally:
        model.train(was_training)
    return [max(1, round(float(f) / speed)) for f in log_frames_B.exp().cpu()]


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
    ids = [encode(text, model.config.frontend) for text in texts]
    prompts = _check_prompts(model, prompts, len(ids))
    if num_frames is None:
        num_frames = predict_num_frames(model, texts, prompts, speed)
    if len(num_frames) != len(ids) or any(isinstance(n, bool) or int(n) != n or n < 1 for n in num_frames):
        raise ValueError(f"num_frames must hold one positive integer per text, got {list(num_frames)!r}")
    schedule = (config or SamplerConfig(steps=(16,))).resolve(1)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in pack(ids, prompts, [int(n) for n in num_frames], model.config.mask_id).items()}
    valid_BL = batch["segment"] == TARGET
    seed = torch.randint(0, 2**31 - 1, (1,), generator=generator).to(device).view(())

    def logits_fn(codes_B1L, _level):
        return model(codes_B1L[:, 0], batch["segment"], batch["progress"], batch["lengths"])

    was_training = model.training
    model.eval()
    try:
        codes_B1L = decode(logits_fn, batch["tokens"][:, None, :], valid_BL, schedule, seed, model.config.mask_id,
                           mark_step)
    finally:
        model.train(was_training)
    return [codes_B1L[b, 0][valid_BL[b]].cpu() for b in range(len(ids))]
