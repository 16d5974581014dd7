"""Paper §3.3 decoding: pass count, level order, schedule, prompt, padding, determinism, errors."""

import math

import pytest
import torch

from soundstorm import SamplerConfig, SoundStorm, SoundStormConfig, generate
from soundstorm.sampler import decode, filter_logits


def _model(**overrides):
    torch.manual_seed(0)
    return SoundStorm(SoundStormConfig.tiny(**overrides)).eval()


def _semantic(cfg, batch, frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.semantic_vocab_size, (batch, frames // cfg.semantic_upsample), generator=g)


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_paper_schedule_is_27_forward_passes_for_12_levels():
    model = _model(num_levels=12)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    codes = generate(model, _semantic(model.config, 1, 40), generator=_seeded(0))
    assert len(calls) == 27
    assert SamplerConfig().resolve(12).steps == (16,) + (1,) * 11
    assert codes.shape == (1, 12, 40)
    assert ((codes >= 0) & (codes < model.config.codebook_size)).all()


@pytest.mark.parametrize("steps", [(1, 1, 1, 1), (3, 2, 1, 5), (8, 1, 1, 1)])
def test_number_of_passes_is_the_sum_of_steps(steps):
    model = _model()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    generate(model, _semantic(model.config, 2, 16), config=SamplerConfig(steps=steps), generator=_seeded(0))
    assert len(calls) == sum(steps)


class Recorder:
    """A fake model: fixed random logits per level, records what the sampler shows it."""

    def __init__(self, batch, levels, frames, vocab, mask_id, seed=0):
        self.logits_BQTV = torch.randn(batch, levels, frames, vocab, generator=_seeded(seed)) * 3
        self.mask_id = mask_id
        self.seen = []  # (level, codes at call)

    def __call__(self, codes_BQT, level):
        self.seen.append((int(level), codes_BQT.clone()))
        return self.logits_BQTV[:, int(level)]


def _run_fake(steps, frames=64, batch=2, levels=4, vocab=16, prompt_frames=0, valid=None, **kw):
    mask_id = vocab
    fake = Recorder(batch, levels, frames, vocab, mask_id)
    codes = torch.full((batch, levels, frames), mask_id)
    codes[:, :, :prompt_frames] = 3
    valid_BT = torch.ones(batch, frames, dtype=torch.bool) if valid is None else valid
    schedule = SamplerConfig(steps=steps, **kw).resolve(levels)
    out = decode(fake, codes, valid_BT, schedule, torch.tensor(1234), mask_id)
    return fake, out


def test_levels_are_decoded_coarse_to_fine_and_fully():
    fake, out = _run_fake((4, 2, 1, 3))
    assert [lvl for lvl, _ in fake.seen] == [0] * 4 + [1] * 2 + [2] + [3] * 3
    for lvl, codes in fake.seen:
        assert (codes[:, lvl + 1:] == fake.mask_id).all(), "finer levels are still masked"
        assert (codes[:, :lvl] != fake.mask_id).all(), "coarser levels are complete"
    assert (out != fake.mask_id).all()


def test_cosine_schedule_and_kept_tokens_stay_fixed():
    steps, frames = 8, 64
    fake, out = _run_fake((steps, 1, 1, 1), frames=frames)
    level0 = [codes[:, 0] for lvl, codes in fake.seen if lvl == 0] + [out[:, 0]]
    for i in range(steps):
        masked_after = (level0[i + 1] == fake.mask_id).sum(-1)
        expected = math.floor(frames * math.cos(math.pi / 2 * (i + 1) / steps))
        if i < steps - 1:
            expected = min(expected, (level0[i] == fake.mask_id).sum(-1).min().item() - 1)
        assert (masked_after == max(expected, 0)).all(), (i, masked_after, expected)
        known = level0[i] != fake.mask_id
        assert torch.equal(level0[i + 1][known], level0[i][known]), "revealed tokens never change"


def test_last_iteration_is_greedy():
    fake, out = _run_fake((1, 1, 1, 1))
    assert torch.equal(out, fake.logits_BQTV.argmax(-1))
    fake, out = _run_fake((1, 1, 1, 1), greedy_last=False, temperature=5.0)
    assert not torch.equal(out, fake.logits_BQTV.argmax(-1)), "sampling at temperature 5 differs from argmax"
    fake, out = _run_fake((6, 3, 1, 2), top_k=1)
    assert torch.equal(out, fake.logits_BQTV.argmax(-1)), "top_k=1 sampling is argmax"


def test_prompt_tokens_are_returned_unchanged():
    model = _model()
    cfg = model.config
    semantic = _semantic(cfg, 2, 30)
    prompt = torch.randint(0, cfg.codebook_size, (2, 2, 9), generator=_seeded(4))  # 2 of 4 levels, 9 of 30 frames
    prompt[1, :, 5:] = cfg.mask_id  # example 1 has a shorter prompt
    out = generate(model, semantic, prompt=prompt, generator=_seeded(1))
    assert torch.equal(out[0, :2, :9], prompt[0])
    assert torch.equal(out[1, :2, :5], prompt[1, :, :5])
    assert (out != cfg.mask_id).all()


def test_fake_model_never_sees_prompt_or_padding_changed():
    valid = torch.ones(2, 32, dtype=torch.bool)
    valid[0, 20:] = False
    fake, out = _run_fake((5, 2, 1, 1), frames=32, prompt_frames=6, valid=valid)
    for _, codes in fake.seen:
        assert (codes[:, :, :6] == 3).all()
        assert (codes[0, :, 20:] == fake.mask_id).all(), "padding frames are never revealed"
    assert (out[0, :, 20:] == fake.mask_id).all() and (out[0, :, :20] != fake.mask_id).all()


def test_same_seed_same_output_and_different_seed_differs():
    model = _model()
    semantic = _semantic(model.config, 2, 24)
    config = SamplerConfig(steps=(6, 2, 2, 2), greedy_last=False)
    a = generate(model, semantic, config=config, generator=_seeded(7))
    b = generate(model, semantic, config=config, generator=_seeded(7))
    c = generate(model, semantic, config=config, generator=_seeded(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_samples_do_not_depend_on_padding_in_the_batch():
    model = _model(conv_kernel=5)
    cfg = model.config
    short = _semantic(cfg, 1, 14, seed=1)
    long = _semantic(cfg, 1, 30, seed=2)
    config = SamplerConfig(steps=(5, 2, 1, 1), temperature=1.5)
    alone = generate(model, short, config=config, generator=_seeded(3))
    batch = torch.cat([torch.nn.functional.pad(short, (0, 8), value=1), long])
    together = generate(model, batch, lengths=torch.tensor([14, 30]), config=config, generator=_seeded(3))
    assert torch.equal(together[0, :, :14], alone[0])
    assert (together[0, :, 14:] == cfg.mask_id).all()


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    kept = filter_logits(logits, None, 0.7).isfinite()
    assert kept.tolist() == [[[True, True, False, False]]]
    kept = filter_logits(logits, None, 0.1).isfinite()
    assert kept.tolist() == [[[True, False, False, False]]]
    kept = filter_logits(logits, 3, None).isfinite()
    assert kept.tolist() == [[[True, True, True, False]]]


def test_sampler_config_validation_names_the_field():
    with pytest.raises(ValueError, match="steps"):
        SamplerConfig(steps=(16, 1)).resolve(4)
    with pytest.raises(ValueError, match="steps"):
        SamplerConfig(steps=(1, 0, 1, 1)).resolve(4)
    with pytest.raises(ValueError, match="temperature"):
        SamplerConfig(temperature=(1.0, 1.0)).resolve(4)
    with pytest.raises(ValueError, match="temperature"):
        SamplerConfig(temperature=0.0).resolve(4)
    with pytest.raises(ValueError, match="top_k"):
        SamplerConfig(top_k=0).resolve(4)
    with pytest.raises(ValueError, match="top_p"):
        SamplerConfig(top_p=1.5).resolve(4)
    with pytest.raises(ValueError, match="choice_noise"):
        SamplerConfig(choice_noise=-1).resolve(4)
    assert SamplerConfig(greedy=True).resolve(4).num_passes == 4


def test_generate_rejects_bad_inputs_naming_them():
    model = _model()
    cfg = model.config
    semantic = _semantic(cfg, 2, 16)
    with pytest.raises(ValueError, match="semantic"):
        generate(model, semantic[0])
    with pytest.raises(ValueError, match="semantic"):
        generate(model, semantic.float())
    with pytest.raises(ValueError, match="semantic holds ids"):
        generate(model, semantic + cfg.semantic_vocab_size)
    with pytest.raises(ValueError, match="steps"):
        generate(model, semantic, config=SamplerConfig(steps=(16,) + (1,) * 11))
    with pytest.raises(ValueError, match="prompt"):
        generate(model, semantic, prompt=torch.zeros(2, 4, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="prompt"):
        generate(model, semantic, prompt=torch.zeros(2, 5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="prompt holds ids"):
        generate(model, semantic, prompt=torch.full((2, 4, 4), cfg.mask_id + 1))
    with pytest.raises(ValueError, match="prompt"):
        generate(model, semantic, prompt=torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="prompt has batch"):
        generate(model, semantic, prompt=torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="lengths"):
        generate(model, semantic, lengths=torch.tensor([16, 17]))
    with pytest.raises(ValueError, match="lengths"):
        generate(model, semantic, lengths=torch.tensor([16.0, 3.0]))
    with pytest.raises(ValueError, match="top_k"):
        generate(model, semantic, config=SamplerConfig(top_k=cfg.codebook_size + 1))


def test_thirty_seconds_from_750_semantic_ids_in_27_passes_with_a_3s_prompt():
    model = _model(num_levels=12, codebook_size=64)
    cfg = model.config
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    semantic = torch.randint(0, cfg.semantic_vocab_size, (1, 750), generator=_seeded(0))
    prompt = torch.randint(0, cfg.codebook_size, (1, 12, 150), generator=_seeded(1))
    codes = generate(model, semantic, prompt=prompt, generator=_seeded(2))
    assert codes.shape == (1, 12, 1500)
    assert len(calls) == 27
    assert torch.equal(codes[:, :, :150], prompt)
    assert ((codes >= 0) & (codes < cfg.codebook_size)).all()


# ---------------------------------------------------------------------- minimum-Bayes-risk choice
def _codebooks(levels=4, vocab=16, dim=3, seed=0):
    return torch.randn(levels, vocab, dim, generator=_seeded(seed))


def test_mbr_code_is_the_argmax_when_sure_and_the_nearest_to_the_mean_when_not():
    from soundstorm.sampler import mbr_codes

    book_VD = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0], [0.1, 0.1]])
    sure_BTV = torch.full((1, 1, 5), -30.0)
    sure_BTV[0, 0, 2] = 30.0
    assert mbr_codes(sure_BTV, book_VD).item() == 2
    # Nearly uniform, the argmax is an arbitrary outer code (index 0 by a hair): the expected vector
    # is near the origin, so the MBR code is the small one.
    unsure_BTV = torch.tensor([[[0.01, 0.0, 0.0, 0.0, 0.0]]])
    assert unsure_BTV.argmax(-1).item() == 0 and mbr_codes(unsure_BTV, book_VD).item() == 4
    # Two likely codes on opposite sides: their average is the origin, not either of them.
    split_BTV = torch.tensor([[[5.0, 5.0, -9.0, -9.0, -9.0]]])
    assert mbr_codes(split_BTV, book_VD).item() == 4
    # It is the minimiser of the expected squared error over the codes, checked exhaustively.
    logits_BTV = torch.randn(2, 7, 16, generator=_seeded(3)) * 2
    book_VD = torch.randn(16, 5, generator=_seeded(4))
    p_BTV = logits_BTV.softmax(-1)
    risk_BTC = torch.einsum("btv,cv->btc", p_BTV, torch.cdist(book_VD, book_VD) ** 2)
    assert torch.equal(mbr_codes(logits_BTV, book_VD), risk_BTC.argmin(-1))


def test_mbr_from_level_changes_only_the_greedy_iterations_of_those_levels():
    from soundstorm.sampler import mbr_codes

    levels, vocab, mask_id = 4, 16, 16
    books_QVD = _codebooks(levels, vocab)
    fake = Recorder(2, levels, 32, vocab, mask_id)
    fake.logits_BQTV[:, 2:] *= 0.05  # fine levels: the model is unsure
    codes = torch.full((2, levels, 32), mask_id)
    valid_BT = torch.ones(2, 32, dtype=torch.bool)
    plain = decode(fake, codes, valid_BT, SamplerConfig(steps=(6, 1, 1, 1)).resolve(levels), torch.tensor(7), mask_id)
    mbr = decode(fake, codes, valid_BT, SamplerConfig(steps=(6, 1, 1, 1), mbr_from_level=3).resolve(levels),
                 torch.tensor(7), mask_id, codebooks_QVD=books_QVD)
    assert torch.equal(mbr[:, :2], plain[:, :2]), "levels 1-2 (MaskGIT level 1 included) are untouched"
    assert torch.equal(plain[:, 2:], fake.logits_BQTV[:, 2:].argmax(-1))
    for q in (2, 3):
        assert torch.equal(mbr[:, q], mbr_codes(fake.logits_BQTV[:, q], books_QVD[q])), q
    assert not torch.equal(mbr[:, 2:], plain[:, 2:]), "unsure fine levels: MBR and argmax differ"
    # The level's temperature sharpens the distribution the expectation is taken under: near 0, the argmax.
    cold = decode(fake, codes, valid_BT, SamplerConfig(steps=(6, 1, 1, 1), mbr_from_level=3,
                                                       temperature=(1.0, 1.0, 1e-4, 1e-4)).resolve(levels),
                  torch.tensor(7), mask_id, codebooks_QVD=books_QVD)
    assert torch.equal(cold, plain)
    with pytest.raises(ValueError, match="needs codebooks_QVD"):
        decode(fake, codes, valid_BT, SamplerConfig(steps=(6, 1, 1, 1), mbr_from_level=3).resolve(levels),
               torch.tensor(7), mask_id)


def test_generate_with_mbr_keeps_passes_prompt_and_padding():
    model = _model()
    cfg = model.config
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    semantic = _semantic(cfg, 2, 30)
    prompt = torch.randint(0, cfg.codebook_size, (2, cfg.num_levels, 8), generator=_seeded(4))
    books = _codebooks(cfg.num_levels, cfg.codebook_size, 6)
    config = SamplerConfig(mbr_from_level=2)
    out = generate(model, semantic, prompt=prompt, lengths=torch.tensor([30, 22]), config=config,
                   generator=_seeded(1), codebooks=books)
    assert len(calls) == 16 + cfg.num_levels - 1
    assert torch.equal(out[:, :, :8], prompt)
    assert (out[1, :, 22:] == cfg.mask_id).all() and (out[:, :, :22] != cfg.mask_id).all()
    again = generate(model, semantic, prompt=prompt, lengths=torch.tensor([30, 22]), config=config,
                     generator=_seeded(1), codebooks=books)
    assert torch.equal(out, again)


def test_mbr_settings_and_codebooks_are_validated_naming_them():
    model = _model()
    cfg = model.config
    semantic = _semantic(cfg, 1, 8)
    for bad in (0, cfg.num_levels + 1, True, 1.5):
        with pytest.raises(ValueError, match="mbr_from_level"):
            SamplerConfig(mbr_from_level=bad).resolve(cfg.num_levels)
    with pytest.raises(ValueError, match="greedy_last"):
        SamplerConfig(mbr_from_level=2, greedy_last=False).resolve(cfg.num_levels)
    config = SamplerConfig(mbr_from_level=2)
    with pytest.raises(ValueError, match="needs codebooks"):
        generate(model, semantic, config=config)
    with pytest.raises(ValueError, match=r"codebooks has shape \(4, 8, 3\)"):
        generate(model, semantic, config=config, codebooks=_codebooks(cfg.num_levels, 8))
    with pytest.raises(ValueError, match="float tensor"):
        generate(model, semantic, config=config, codebooks=torch.zeros(cfg.num_levels, cfg.codebook_size, 2).long())
    books = _codebooks(cfg.num_levels, cfg.codebook_size)
    books[1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        generate(model, semantic, config=config, codebooks=books)
    from soundstorm.sampler import codebooks_for

    with pytest.raises(ValueError, match="has no codebook_vectors"):
        codebooks_for(config, object())
    assert codebooks_for(SamplerConfig(), object()) is None
    # Without the option the codebooks are not needed (the paper's sampler ignores them).
    generate(model, semantic, config=SamplerConfig(), codebooks=None)
