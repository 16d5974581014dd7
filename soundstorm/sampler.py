"""Confidence-based parallel decoding, level by level (paper §3.3).

Decoding starts with every acoustic token masked except the prompt. Levels are decoded coarse to
fine; within level q, ``steps[q]`` MaskGIT iterations each predict all still-masked tokens of that
level, keep the most confident ones according to a cosine schedule and leave the rest masked. The
last iteration of a level reveals everything left, greedily (argmax) by default. With the default
schedule ``(16, 1, ..., 1)`` that is 16 + (Q - 1) forward passes: 27 for Q = 12.

The paper leaves these choices open, so they are :class:`SamplerConfig` fields with documented
defaults: per-level temperature (1.0), top-k / top-p filtering (off), greedy last iteration (on)
and the confidence: log-probability of the sampled token plus Gumbel noise scaled by
``choice_noise × (1 - progress)`` (MaskGIT's annealed choice temperature, 4.5).

One option goes beyond the paper, off by default: ``mbr_from_level``. A greedy iteration takes the
argmax, which is the right choice when the model is sure and an arbitrary one when it is not: a
briefly trained model's fine levels are nearly uniform, and their argmax codes add residual vectors
that are as large as the true ones but unrelated to them (noise). The minimum-Bayes-risk choice takes
the code whose codec vector is nearest the model's *expected* vector ``sum_k p_k e_k``, i.e. the code
that minimises the expected squared error in the codec's space: the argmax when the model is sure, a
small, average residual when it is not. It needs the codec's codebooks (``Codec.codebook_vectors()``).
It stays off by default and in the quickstart: on the CPU quickstart's model it made speech more
intelligible but moved the voice towards the source speaker, losing cross-speaker attribution
(``docs/quickstart.md``, "The minimum-Bayes-risk option on this model").

Shapes are fixed for the whole decode and every per-iteration quantity (level, temperature,
schedule fraction, noise scale) is a 0-d tensor prepared before the loop, so one compiled graph
serves every sampling iteration (torch_xla, CUDA graphs). Random numbers are counter-based
(a hash of seed, iteration, example index, frame and token), not drawn from a stateful stream:
no ``torch.multinomial``, and a sequence's samples do not depend on the padded length of the
batch it is decoded in.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Tuple

import torch

from soundstorm._checks import check_finite_weights, check_int_tensor, check_lengths, check_range, frame_mask


@dataclass
class SamplerConfig:
    """Decoding schedule and sampling knobs: every rule about them lives here.

    steps: iterations per level, coarse to fine; None → ``(16, 1, ..., 1)`` (the paper), or one pass per
    level with ``greedy``.
    greedy: one greedy (argmax) pass per level, Q forward passes, deterministic (``steps`` must then be
    None or all ones).
    temperature: one float for every level, or one per level.
    top_k / top_p: optional filtering of each position's distribution before sampling.
    greedy_last: the last iteration of each level takes the argmax (the paper).
    choice_noise: scale of the Gumbel noise added to the confidence, annealed to 0 over a level.
    mbr_from_level: None (the paper) or a level ``q`` (1-based, as the paper counts): the greedy
    iterations of levels ``q..Q`` take the minimum-Bayes-risk code (see the module docstring) instead
    of the argmax, under the level's temperature (1: the model's distribution; towards 0: the argmax);
    ``generate`` then needs ``codebooks``.

    Everything that does not depend on the model is checked when the config is built; :meth:`resolve`
    adds what does (one entry per level, levels that exist) and maps the config to a model's schedule.
    """

    steps: Optional[Tuple[int, ...]] = None
    greedy: bool = False
    temperature: Any = 1.0  # a float, or a sequence of one float per level
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    greedy_last: bool = True
    choice_noise: float = 4.5
    mbr_from_level: Optional[int] = None

    def __post_init__(self):
        """Lists (from a config file) become tuples, so equal configs compare equal."""
        for name in ("greedy", "greedy_last"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"SamplerConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if self.steps is not None:
            if not isinstance(self.steps, (list, tuple)) or not self.steps or any(
                    isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.steps):
                raise ValueError(f"SamplerConfig.steps must be None or a non-empty sequence of positive integers, "
                                 f"got {self.steps!r}")
            self.steps = tuple(self.steps)
            if self.greedy and any(s != 1 for s in self.steps):
                raise ValueError(f"SamplerConfig.greedy=True means one pass per level, but steps={self.steps}; "
                                 "set steps=None (or all ones), or greedy=False")
        temperatures = self.temperature if isinstance(self.temperature, (list, tuple)) else [self.temperature]
        if not temperatures or any(isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0
                                   or not math.isfinite(t) for t in temperatures):
            raise ValueError(f"SamplerConfig.temperature must be a finite number > 0, or one per level, got "
                             f"{self.temperature!r}")
        if isinstance(self.temperature, list):
            self.temperature = tuple(self.temperature)
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"SamplerConfig.top_k must be None or a positive integer, got {self.top_k!r}")
        if self.top_p is not None and (isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float))
                                       or not 0.0 < float(self.top_p) <= 1.0):
            raise ValueError(f"SamplerConfig.top_p must be None or in (0, 1], got {self.top_p!r}")
        if isinstance(self.choice_noise, bool) or not isinstance(self.choice_noise, (int, float)) \
                or not self.choice_noise >= 0 or not math.isfinite(self.choice_noise):
            raise ValueError(f"SamplerConfig.choice_noise must be a finite number >= 0, got {self.choice_noise!r}")
        mbr = self.mbr_from_level
        if mbr is not None:
            if isinstance(mbr, bool) or not isinstance(mbr, int) or mbr < 1:
                raise ValueError(f"SamplerConfig.mbr_from_level must be None or a level >= 1 (1-based), got {mbr!r}")
            if not self.greedy_last and not self.greedy:
                raise ValueError(f"SamplerConfig.mbr_from_level={mbr} changes the greedy iterations, and "
                                 "greedy_last=False leaves none; set greedy_last=true or mbr_from_level=null")

    def resolve(self, num_levels: int) -> "ResolvedSchedule":
        """The schedule for a model of ``num_levels`` levels; what depends on the model is checked here."""
        if self.steps is not None:
            steps = self.steps
        else:
            steps = (1,) * num_levels if self.greedy else (16,) + (1,) * (num_levels - 1)
        if len(steps) != num_levels:
            raise ValueError(f"SamplerConfig.steps has {len(steps)} entries {steps}, expected one per level "
                             f"(num_levels={num_levels})")
        if isinstance(self.temperature, tuple):
            if len(self.temperature) != num_levels:
                raise ValueError(f"SamplerConfig.temperature has {len(self.temperature)} entries, expected 1 or "
                                 f"num_levels={num_levels}")
            temperatures = tuple(float(t) for t in self.temperature)
        else:
            temperatures = (float(self.temperature),) * num_levels
        mbr = self.mbr_from_level
        if mbr is not None and mbr > num_levels:
            raise ValueError(f"SamplerConfig.mbr_from_level must be None or a level in 1..{num_levels} (1-based), "
                             f"got {mbr!r}")
        return ResolvedSchedule(steps, temperatures, self.top_k, None if self.top_p is None else float(self.top_p),
                                self.greedy_last or self.greedy, float(self.choice_noise),
                                None if mbr is None else mbr - 1)


@dataclass(frozen=True)
class ResolvedSchedule:
    steps: tuple[int, ...]
    temperatures: tuple[float, ...]
    top_k: int | None
    top_p: float | None
    greedy_last: bool
    choice_noise: float
    mbr_first_index: int | None = None  # 0-based index of the first minimum-Bayes-risk level; None: argmax

    @property
    def num_passes(self) -> int:
        return sum(self.steps)


@dataclass
class _Iteration:
    """One decoding iteration: Python facts that pick the graph, tensors that parametrise it."""

    is_last: bool  # reveal everything still masked at this level
    greedy: bool  # argmax instead of sampling
    mbr: bool = False  # greedy, by the minimum-Bayes-risk code instead of the argmax
    tensors: dict = field(default_factory=dict)  # level, temperature, keep_fraction, choice_scale, counter


def _iterations(schedule: ResolvedSchedule, device) -> list[_Iteration]:
    out, counter = [], 0
    for level, (num_steps, temperature) in enumerate(zip(schedule.steps, schedule.temperatures)):
        for i in range(num_steps):
            is_last = i == num_steps - 1
            progress = (i + 1) / num_steps
            values = {
                "level": torch.tensor(level, dtype=torch.long),
                "is_first": torch.tensor(i == 0),
                "inv_temperature": torch.tensor(1.0 / temperature),
                # fraction of the level's initially-masked tokens still masked after this iteration
                "keep_fraction": torch.tensor(math.cos(math.pi / 2 * progress)),
                "choice_scale": torch.tensor(schedule.choice_noise * (1.0 - progress)),
                "counter": torch.tensor(counter, dtype=torch.long),
            }
            # copied as [1] and viewed as 0-d on the device: torch_xla bakes some 0-d host values
            # (0, 1, ...) into the graph as constants, which would give iterations distinct graphs
            greedy = is_last and schedule.greedy_last
            mbr = greedy and schedule.mbr_first_index is not None and level >= schedule.mbr_first_index
            out.append(_Iteration(is_last, greedy, mbr,
                                  {k: v.view(1).to(device).view(()) for k, v in values.items()}))
            counter += 1
    return out


# ---------------------------------------------------------------------- counter-based noise
_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash in int64 arithmetic (multipliers < 2^31, so no int64 overflow)."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _M32
    return x ^ (x >> 16)


def counter_gumbel(key_B: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise, a pure function of a per-example key ``[B]`` and positions ``index``."""
    key = key_B.view(-1, *([1] * index.ndim))
    bits = _mix32(_mix32(index[None] ^ key) + key)
    uniform = ((bits >> 8).float() + 0.5) * (1.0 / (1 << 24))
    return -torch.log(-torch.log(uniform))


def _stream_keys(seed: torch.Tensor, salt: int, counter: torch.Tensor, batch_size: int) -> torch.Tensor:
    examples_B = torch.arange(batch_size, device=seed.device, dtype=torch.long)
    return _mix32(_mix32(_mix32(seed + salt) + counter) + examples_B)


# ---------------------------------------------------------------------- filtering
def filter_logits(logits_BTV: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set logits outside the top-k / nucleus (top-p) to -inf; shapes stay fixed."""
    if top_k is not None and top_k < logits_BTV.shape[-1]:
        kth_BT1 = torch.topk(logits_BTV, top_k, dim=-1).values[..., -1:]
        logits_BTV = logits_BTV.masked_fill(logits_BTV < kth_BT1, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_BTV, order_BTV = logits_BTV.sort(dim=-1, descending=True)
        probs_BTV = sorted_BTV.softmax(dim=-1)
        # drop a token when the mass strictly before it already reaches top_p (the top token stays)
        drop_sorted_BTV = (probs_BTV.cumsum(dim=-1) - probs_BTV) >= top_p
        drop_BTV = torch.zeros_like(drop_sorted_BTV).scatter(-1, order_BTV, drop_sorted_BTV)
        logits_BTV = logits_BTV.masked_fill(drop_BTV, float("-inf"))
    return logits_BTV


# ---------------------------------------------------------------------- decoding
def _most_confident(logits_BTV, sampled_BT, unknown_BT, num_unknown_B, initial_unknown_B, t, seed, frames_T):
    """``reveal_BT``: the unknown positions whose confidence ranks above the cosine schedule's cut."""
    batch_size = logits_BTV.shape[0]
    log_probs_BTV = logits_BTV.log_softmax(dim=-1)
    confidence_BT = log_probs_BTV.gather(-1, sampled_BT[..., None]).squeeze(-1)
    choice_key_B = _stream_keys(seed, 0xC401CE, t["counter"], batch_size)
    confidence_BT = confidence_BT + t["choice_scale"] * counter_gumbel(choice_key_B, frames_T)
    confidence_BT = torch.where(unknown_BT, confidence_BT, torch.full_like(confidence_BT, float("inf")))
    # tokens left masked: cosine share of the level's initial count, at least one revealed
    keep_masked_B = torch.floor(initial_unknown_B * t["keep_fraction"]).long()
    keep_masked_B = torch.minimum(keep_masked_B, num_unknown_B - 1).clamp(min=0)
    rank_BT = confidence_BT.argsort(dim=-1, stable=True).argsort(dim=-1, stable=True)
    return unknown_BT & (rank_BT >= keep_masked_B[:, None])


LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mbr_codes(logits_BTV: torch.Tensor, codebook_VD: torch.Tensor) -> torch.Tensor:
    """The minimum-Bayes-risk code ``[B, T]`` under squared error in the codec's space: the code whose
    vector is nearest the expected vector ``softmax(logits) @ codebook`` (``argmin_c ||e_c||² - 2 e_c·mean``;
    ``||mean||²`` is the same for every code)."""
    mean_BTD = logits_BTV.float().softmax(dim=-1) @ codebook_VD
    distance_BTV = (codebook_VD * codebook_VD).sum(dim=-1) - 2.0 * mean_BTD @ codebook_VD.t()
    return distance_BTV.argmin(dim=-1)


def decode(
    logits_fn: LogitsFn,
    codes_BQT: torch.Tensor,
    valid_BT: torch.Tensor,
    schedule: ResolvedSchedule,
    seed: torch.Tensor,
    mask_id: int,
    mark_step: Callable[[], None] | None = None,
    codebooks_QVD: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fill every masked, non-padding position of ``codes_BQT`` level by level.

    ``logits_fn(codes_BQT, level)`` returns ``[B, T, V]`` logits for one level (``level`` a 0-d long
    tensor); it is called exactly ``sum(schedule.steps)`` times. Positions that are not masked on
    entry (the prompt) and padding frames (``valid_BT`` False) are never changed.
    ``mark_step()`` (the XLA backend's) runs once after the set-up and after every iteration, so
    that each iteration is one graph and every sampling iteration, like every greedy one, reuses it.
    ``codebooks_QVD``: the codec's code vectors, for the minimum-Bayes-risk iterations
    (``schedule.mbr_first_index``).
    """
    batch_size, num_levels, num_frames = codes_BQT.shape
    device = codes_BQT.device
    levels_Q = torch.arange(num_levels, device=device)
    frames_T = torch.arange(num_frames, device=device, dtype=torch.long)
    initial_unknown_B = torch.zeros(batch_size, dtype=torch.long, device=device)
    iterations = _iterations(schedule, device)
    if codebooks_QVD is None and any(it.mbr for it in iterations):
        raise ValueError("the schedule's mbr_first_index needs codebooks_QVD (the codec's code vectors); got None")
    if mark_step is not None:
        mark_step()  # materialise the set-up (XLA keeps small host copies as pending constants)

    for it in iterations:
        t = it.tensors
        at_level_Q = levels_Q == t["level"]
        codes_BT = codes_BQT.index_select(1, t["level"].view(1)).squeeze(1)
        unknown_BT = (codes_BT == mask_id) & valid_BT
        num_unknown_B = unknown_BT.sum(dim=-1)
        initial_unknown_B = torch.where(t["is_first"], num_unknown_B, initial_unknown_B)

        logits_BTV = logits_fn(codes_BQT, t["level"]).float()
        if it.mbr:
            sampled_BT = mbr_codes(logits_BTV * t["inv_temperature"],
                                   codebooks_QVD.index_select(0, t["level"].view(1)).squeeze(0))
        elif it.greedy:
            sampled_BT = logits_BTV.argmax(dim=-1)
        else:
            logits_BTV = filter_logits(logits_BTV * t["inv_temperature"], schedule.top_k, schedule.top_p)
            token_index_TV = torch.arange(num_frames * logits_BTV.shape[-1], device=device).view(num_frames, -1)
            sample_key_B = _stream_keys(seed, 0x5EED, t["counter"], batch_size)
            sampled_BT = (logits_BTV + counter_gumbel(sample_key_B, token_index_TV)).argmax(dim=-1)

        if it.is_last:
            reveal_BT = unknown_BT
        else:
            reveal_BT = _most_confident(logits_BTV, sampled_BT, unknown_BT, num_unknown_B, initial_unknown_B,
                                        t, seed, frames_T)

        write_BQT = at_level_Q[None, :, None] & reveal_BT[:, None, :]
        codes_BQT = torch.where(write_BQT, sampled_BT[:, None, :], codes_BQT)
        if mark_step is not None:
            mark_step()
    return codes_BQT


def check_codebooks(codebooks, cfg) -> torch.Tensor:
    """``codebooks`` as float32 ``[Q, K, D]`` matching the model's levels and codebook size, or a ValueError."""
    expected = f"[{cfg.num_levels}, {cfg.codebook_size}, D] (codec.codebook_vectors())"
    if codebooks is None:
        raise ValueError(f"SamplerConfig.mbr_from_level is set, so generate() needs codebooks={expected}; got None")
    if not isinstance(codebooks, torch.Tensor) or not codebooks.is_floating_point() or codebooks.ndim != 3:
        raise ValueError(f"codebooks must be a float tensor {expected}, got "
                         f"{tuple(codebooks.shape) if isinstance(codebooks, torch.Tensor) else type(codebooks).__name__}")
    if tuple(codebooks.shape[:2]) != (cfg.num_levels, cfg.codebook_size):
        raise ValueError(f"codebooks has shape {tuple(codebooks.shape)}, expected {expected}: the codec the model "
                         "was trained on")
    if not bool(torch.isfinite(codebooks).all()):
        raise ValueError("codebooks has non-finite values")
    return codebooks.float()


def codebooks_for(config: SamplerConfig | None, codec) -> torch.Tensor | None:
    """``codec.codebook_vectors()`` when ``config`` asks for the minimum-Bayes-risk choice, else None:
    what every caller of :func:`generate` with a codec at hand passes as ``codebooks``."""
    if config is None or config.mbr_from_level is None:
        return None
    if not callable(getattr(codec, "codebook_vectors", None)):
        raise ValueError(f"SamplerConfig.mbr_from_level={config.mbr_from_level} needs the codec's code vectors, and "
                         f"codec {getattr(codec, 'name', type(codec).__name__)!r} has no codebook_vectors() "
                         "([Q, K, D], see soundstorm.codecs.base); set mbr_from_level=null")
    return codec.codebook_vectors()


def _initial_codes(cfg, prompt, batch_size: int, num_frames: int, device) -> torch.Tensor:
    """``[B, Q, T]`` all masked except the (validated) prompt in the first levels and frames."""
    codes_BQT = torch.full((batch_size, cfg.num_levels, num_frames), cfg.mask_id, dtype=torch.long, device=device)
    if prompt is not None:
        prompt_BQT = check_int_tensor("prompt", prompt, 3, "[B, Qp, Tp]")
        b, qp, tp = prompt_BQT.shape
        if b != batch_size:
            raise ValueError(f"prompt has batch {b}, semantic has batch {batch_size}")
        if qp > cfg.num_levels or tp > num_frames:
            raise ValueError(f"prompt shape {tuple(prompt_BQT.shape)} is longer than the output "
                             f"[{batch_size}, {cfg.num_levels}, {num_frames}] (levels or frames)")
        check_range("prompt", prompt_BQT, 0, cfg.mask_id + 1)
        codes_BQT[:, :qp, :tp] = prompt_BQT.to(device)
    return codes_BQT


@torch.no_grad()
def generate(
    model,
    semantic: torch.Tensor,
    *,
    prompt: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    config: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
    mark_step: Callable[[], None] | None = None,
    wrap_logits: Callable[[LogitsFn, torch.Tensor], LogitsFn] | None = None,
    codebooks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generate acoustic codes ``[B, Q, T]`` (``T = S × semantic_upsample``) from ``semantic [B, S]``.

    prompt: optional ``[B, Qp, Tp]`` codes with ``Qp <= Q`` and ``Tp <= T`` covering the first
    levels and frames; they are returned unchanged. A prompt entry equal to the mask id
    (``codebook_size``) means "not given" and is generated, which lets prompts differ in length
    within a batch.
    lengths: optional ``[B]`` real frames per example; padding frames come back as the mask id.
    generator: the source of the seed; the same seed gives the same output.
    mark_step: called after the set-up and every decoding iteration (``backend.mark_step`` on XLA).
    wrap_logits: ``wrap_logits(logits_fn, codes_BQT)`` returns the logits function to decode with,
    e.g. one that counts the passes (the benchmark's). To replay the passes as CUDA graphs, pass
    :class:`soundstorm.backends.cuda_graphs.GraphedModel` as ``model``.
    codebooks: the codec's code vectors ``[Q, K, D]`` (``codec.codebook_vectors()``), needed when
    ``config.mbr_from_level`` is set, ignored otherwise.
    """
    cfg = model.config
    semantic_BS = check_int_tensor("semantic", semantic, 2, "[B, S]")
    check_range("semantic", semantic_BS, 0, cfg.semantic_vocab_size)
    batch_size, num_frames = semantic_BS.shape[0], semantic_BS.shape[1] * cfg.semantic_upsample
    if num_frames < 1:
        raise ValueError(f"semantic must have at least one frame, got shape {tuple(semantic_BS.shape)}")
    schedule = (config or SamplerConfig()).resolve(cfg.num_levels)
    if schedule.top_k is not None and schedule.top_k > cfg.codebook_size:
        raise ValueError(f"SamplerConfig.top_k={schedule.top_k} exceeds codebook_size={cfg.codebook_size}")
    device = next(model.parameters()).device
    codebooks_QVD = None if schedule.mbr_first_index is None else check_codebooks(codebooks, cfg).to(device)
    if device.type != "xla":  # on XLA the check would compile one more graph; from_pretrained checks loaded weights
        check_finite_weights(model, "the model given to generate()")
    lengths_B = None if lengths is None else check_lengths(lengths, batch_size, num_frames).to(device)

    codes_BQT = _initial_codes(cfg, prompt, batch_size, num_frames, device)
    valid_BT = frame_mask(lengths_B, batch_size, num_frames, device)
    seed = torch.randint(0, 2**31 - 1, (1,), generator=generator).to(device).view(())  # see _iterations
    semantic_BS = semantic_BS.to(device)

    semantic_BTD = model.embed_semantic(semantic_BS)  # the same for every pass: embedded once

    def logits_fn(codes, level):
        return model(codes, semantic_BS, lengths_B, level=level, validate=False, semantic_embedding=semantic_BTD)

    was_training = model.training
    model.eval()
    if wrap_logits is not None:
        logits_fn = wrap_logits(logits_fn, codes_BQT)
    try:
        codes_BQT = decode(logits_fn, codes_BQT, valid_BT, schedule, seed, cfg.mask_id, mark_step, codebooks_QVD)
    finally:
        model.train(was_training)
    return codes_BQT
