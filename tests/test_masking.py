"""Paper §3.2 masking rules, tested directly on `soundstorm.masking.corrupt` and `SoundStorm.loss`."""

import math

import pytest
import torch
import torch.nn.functional as F

from soundstorm import SoundStorm, SoundStormConfig, corrupt
from soundstorm.masking import masked_loss

MASK = 99


def _codes(batch, levels, frames, seed=0):
    return torch.randint(0, 50, (batch, levels, frames), generator=torch.Generator().manual_seed(seed))


def test_level_is_uniform_over_levels():
    out = corrupt(_codes(20000, 4, 8), generator=torch.Generator().manual_seed(1), mask_id=MASK)
    freq = torch.bincount(out.level, minlength=4).float() / 20000
    assert freq.shape == (4,)
    assert torch.allclose(freq, torch.full((4,), 0.25), atol=0.015), freq


def test_level_weights_set_how_often_each_level_is_trained():
    weights = torch.tensor([6.0, 3.0, 0.0, 1.0])
    out = corrupt(_codes(20000, 4, 8), generator=torch.Generator().manual_seed(1), mask_id=MASK,
                  level_weights=weights)
    freq = torch.bincount(out.level, minlength=4).float() / 20000
    assert torch.allclose(freq, weights / weights.sum(), atol=0.015), freq
    assert not bool((out.level == 2).any())  # a zero weight never trains that level
    # Only the level draw changes: the prompt delimiters and mask ratios are the paper's, draw for draw.
    uniform = corrupt(_codes(20000, 4, 8), generator=torch.Generator().manual_seed(1), mask_id=MASK)
    assert torch.equal(out.prompt_len, uniform.prompt_len) and torch.equal(out.mask_ratio, uniform.mask_ratio)


@pytest.mark.parametrize("weights", [[1.0, 1.0], [1.0, -1.0, 1.0], [0.0, 0.0, 0.0], [1.0, float("nan"), 1.0], "abc"])
def test_bad_level_weights_are_named(weights):
    with pytest.raises(ValueError, match="level_weights"):
        corrupt(_codes(2, 3, 4), generator=torch.Generator().manual_seed(0), mask_id=MASK, level_weights=weights)


def test_mask_ratio_follows_cosine_of_uniform():
    out = corrupt(_codes(20000, 3, 4), generator=torch.Generator().manual_seed(2), mask_id=MASK)
    p = out.mask_ratio
    # p = cos(u), u ~ U[0, pi/2]  =>  P(p <= x) = 1 - (2/pi) arccos(x), E[p] = 2/pi, E[p^2] = 1/2
    assert abs(p.mean().item() - 2 / math.pi) < 0.01
    assert abs((p**2).mean().item() - 0.5) < 0.01
    for x in (0.1, 0.3, 0.5, 0.7, 0.9):
        expected = 1 - (2 / math.pi) * math.acos(x)
        assert abs((p <= x).float().mean().item() - expected) < 0.015


def test_masked_fraction_on_level_q_matches_the_ratio():
    codes = _codes(3000, 3, 64)
    out = corrupt(codes, generator=torch.Generator().manual_seed(3), mask_id=MASK)
    frames = torch.arange(64)
    eligible_BT = frames[None] >= out.prompt_len[:, None]
    masked_B = out.loss_mask.any(dim=1).sum(-1).float()
    # Bernoulli(p) over eligible frames: E[masked] = p * eligible; check in aggregate and by correlation
    expected_B = out.mask_ratio * eligible_BT.sum(-1)
    assert abs(masked_B.sum().item() / expected_B.sum().item() - 1) < 0.02
    big = eligible_BT.sum(-1) >= 32
    frac_B = masked_B[big] / eligible_BT.sum(-1)[big]
    assert (frac_B - out.mask_ratio[big]).abs().mean() < 0.08


def test_prompt_visible_finer_masked_coarser_untouched():
    codes = _codes(500, 5, 30)
    lengths = torch.randint(1, 31, (500,), generator=torch.Generator().manual_seed(4))
    out = corrupt(codes, lengths, generator=torch.Generator().manual_seed(5), mask_id=MASK)
    frames = torch.arange(30)
    for b in range(500):
        t, q, n = out.prompt_len[b].item(), out.level[b].item(), lengths[b].item()
        assert 0 <= t <= n - 1
        assert torch.equal(out.inputs[b, :, :t], codes[b, :, :t]), "prompt frames must stay visible"
        assert torch.equal(out.inputs[b, :q], codes[b, :q]), "coarser levels are never masked"
        assert (out.inputs[b, q + 1:, t:n] == MASK).all(), "finer levels are fully masked after the prompt"
        level_masked = out.inputs[b, q] == MASK
        assert torch.equal(level_masked, out.loss_mask[b, q])
        assert not out.loss_mask[b, :, n:].any(), "padding is never in the loss"
        assert not out.loss_mask[b, :q].any() and not out.loss_mask[b, q + 1:].any()
        assert not level_masked[:t].any()
        assert torch.equal(out.inputs[b, q][~level_masked], codes[b, q][~level_masked])
    del frames


def test_prompt_delimiter_is_uniform_over_frames():
    out = corrupt(_codes(40000, 2, 4), generator=torch.Generator().manual_seed(6), mask_id=MASK)
    freq = torch.bincount(out.prompt_len, minlength=4).float() / 40000
    assert torch.allclose(freq, torch.full((4,), 0.25), atol=0.015), freq


def test_corrupt_is_reproducible_with_a_generator():
    codes = _codes(8, 4, 16)
    a = corrupt(codes, generator=torch.Generator().manual_seed(7), mask_id=MASK)
    b = corrupt(codes, generator=torch.Generator().manual_seed(7), mask_id=MASK)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.loss_mask, b.loss_mask)


def _tiny_model_and_batch(batch: int, frames: int):
    """A tiny SoundStorm (seeded) and random clean codes ``[B, Q, T]`` and semantic ids ``[B, T/2]`` for it."""
    torch.manual_seed(0)
    cfg = SoundStormConfig.tiny()
    model = SoundStorm(cfg)
    codes = torch.randint(0, cfg.codebook_size, (batch, cfg.num_levels, frames))
    semantic = torch.randint(0, cfg.semantic_vocab_size, (batch, frames // 2))
    return cfg, model, codes, semantic


def test_loss_counts_only_masked_level_q_tokens():
    cfg, model, codes, semantic = _tiny_model_and_batch(6, 12)
    model.eval()
    corruption = corrupt(codes, generator=torch.Generator().manual_seed(8), mask_id=cfg.mask_id)
    loss, metrics = masked_loss(model, codes, semantic, None, corruption)
    logits_BQTV = model(corruption.inputs, semantic)
    ce_BQT = F.cross_entropy(logits_BQTV.permute(0, 3, 1, 2), codes, reduction="none")
    expected = ce_BQT[corruption.loss_mask].mean()
    assert torch.allclose(loss, expected, atol=1e-5)
    assert metrics["num_tokens"].item() == corruption.loss_mask.sum().item()
    per_level = [ce_BQT[:, q][corruption.loss_mask[:, q]] for q in range(cfg.num_levels)]
    for q, values in enumerate(per_level):
        if values.numel():
            assert torch.allclose(metrics["loss_per_level"][q], values.mean(), atol=1e-5)
        assert metrics["tokens_per_level"][q].item() == values.numel()


def _loss_and_grads(model, codes, semantic, lengths, corruption, **kwargs):
    model.zero_grad()
    loss, metrics = masked_loss(model, codes, semantic, lengths, corruption, **kwargs)
    loss.backward()
    return loss.detach(), metrics, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("level_weights", [None, [1.0, 0.0, 3.0, 0.0]])  # every level drawn / levels 2, 4 never
def test_head_on_loss_tokens_only_gives_the_same_loss_metrics_and_gradients(level_weights):
    """The CPU trainer's path (head, softmax and argmax on the loss tokens only) computes what the
    fixed-shape path computes, on padded examples, levels that no example drew included."""
    cfg, model, codes, semantic = _tiny_model_and_batch(7, 16)
    lengths = torch.tensor([16, 9, 12, 16, 5, 14, 16])
    corruption = corrupt(codes, lengths, torch.Generator().manual_seed(3), mask_id=cfg.mask_id,
                         level_weights=level_weights)
    assert corruption.loss_mask.sum() > 0
    full = _loss_and_grads(model, codes, semantic, lengths, corruption)
    gathered = _loss_and_grads(model, codes, semantic, lengths, corruption, loss_tokens_only=True)
    assert torch.allclose(gathered[0], full[0], rtol=1e-5)
    for key in full[1]:
        assert torch.allclose(gathered[1][key], full[1][key], rtol=1e-5, atol=1e-6), key
    if level_weights is not None:
        assert gathered[1]["tokens_per_level"][1] == 0 and gathered[1]["tokens_per_level"][3] == 0
    for name, grad in full[2].items():
        assert torch.allclose(gathered[2][name], grad, rtol=1e-4, atol=1e-6), name


def test_head_on_loss_tokens_only_without_any_loss_token_is_a_zero_loss_with_zero_gradients():
    cfg, model, codes, semantic = _tiny_model_and_batch(2, 6)
    corruption = corrupt(codes, generator=torch.Generator().manual_seed(0), mask_id=cfg.mask_id)
    corruption.loss_mask[:] = False
    loss, metrics, grads = _loss_and_grads(model, codes, semantic, None, corruption, loss_tokens_only=True)
    assert loss.item() == 0.0 and metrics["num_tokens"].item() == 0
    assert metrics["tokens_per_level"].tolist() == [0.0] * cfg.num_levels
    assert all(torch.count_nonzero(g) == 0 for g in grads.values())


def test_corrupt_rejects_bad_inputs():
    with pytest.raises(ValueError, match="codes"):
        corrupt(torch.zeros(2, 3), mask_id=MASK)
    with pytest.raises(ValueError, match="integer"):
        corrupt(torch.zeros(2, 3, 4), mask_id=MASK)
    with pytest.raises(ValueError, match="lengths"):
        corrupt(torch.zeros(2, 3, 4, dtype=torch.long), torch.tensor([5, 1]), mask_id=MASK)
    with pytest.raises(ValueError, match="lengths"):
        corrupt(torch.zeros(2, 3, 4, dtype=torch.long), torch.tensor([0, 1]), mask_id=MASK)
