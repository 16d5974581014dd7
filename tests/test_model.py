"""Paper §3.1 model: config validation, shapes, padding invariance, learning on one batch."""

import pytest
import torch

from soundstorm import SoundStorm, SoundStormConfig


def _batch(cfg, batch=2, frames=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, cfg.codebook_size, (batch, cfg.num_levels, frames), generator=g)
    semantic = torch.randint(0, cfg.semantic_vocab_size, (batch, frames // cfg.semantic_upsample), generator=g)
    return codes, semantic


def test_paper_preset_is_near_350m_parameters():
    with torch.device("meta"):
        model = SoundStorm(SoundStormConfig.paper())
    assert 340e6 < model.num_parameters() < 360e6, model.num_parameters()
    cfg = SoundStormConfig.paper()
    assert (cfg.num_levels, cfg.codebook_size, cfg.dim, cfg.depth, cfg.heads, cfg.ff_dim, cfg.conv_kernel) == (
        12, 1024, 1024, 12, 16, 4096, 5)


@pytest.mark.parametrize("field,value", [("num_levels", 0), ("codebook_size", -1), ("dim", 30), ("heads", 0),
                                         ("conv_kernel", 4), ("dropout", 1.5), ("semantic_upsample", 1.5),
                                         ("depth", True)])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field if field != "dim" else "dim"):
        SoundStormConfig.tiny(**{field: value})


def test_config_round_trips_through_a_dict_and_rejects_unknown_fields():
    cfg = SoundStormConfig.tiny()
    assert SoundStormConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="layers"):
        SoundStormConfig.from_dict({**cfg.to_dict(), "layers": 3})


def test_forward_shapes_and_single_level_head():
    cfg = SoundStormConfig.tiny()
    model = SoundStorm(cfg).eval()
    codes, semantic = _batch(cfg)
    codes[:, 2:] = cfg.mask_id
    all_BQTV = model(codes, semantic)
    assert all_BQTV.shape == (2, cfg.num_levels, 12, cfg.codebook_size)
    for q in range(cfg.num_levels):
        one_BTV = model(codes, semantic, level=q)
        assert one_BTV.shape == (2, 12, cfg.codebook_size)
        assert torch.allclose(one_BTV, all_BQTV[:, q], atol=1e-5)


def test_padding_does_not_change_real_frames():
    torch.manual_seed(0)
    cfg = SoundStormConfig.tiny(conv_kernel=5)
    model = SoundStorm(cfg).eval()
    short_codes, short_sem = _batch(cfg, batch=1, frames=10, seed=1)
    long_codes, long_sem = _batch(cfg, batch=1, frames=24, seed=2)
    alone = model(short_codes, short_sem)
    padded_codes = torch.cat([torch.nn.functional.pad(short_codes, (0, 14), value=7), long_codes])
    padded_sem = torch.cat([torch.nn.functional.pad(short_sem, (0, 7), value=3), long_sem])
    batched = model(padded_codes, padded_sem, torch.tensor([10, 24]))
    assert torch.allclose(batched[0, :, :10], alone[0], atol=1e-5)
    # and the padding content itself is irrelevant
    other = padded_codes.clone()
    other[0, :, 10:] = 1
    assert torch.allclose(model(other, padded_sem, torch.tensor([10, 24]))[0, :, :10], alone[0], atol=1e-5)


@pytest.mark.slow  # a few hundred optimizer steps: about a minute on a busy 2-core machine
def test_overfits_one_fixed_batch():
    torch.manual_seed(0)
    cfg = SoundStormConfig.tiny(dim=64, heads=4, ff_dim=128, depth=2)
    model = SoundStorm(cfg)
    codes, semantic = _batch(cfg, batch=4, frames=16, seed=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    first = None
    for _ in range(300):
        loss, _ = model.loss(codes, semantic, generator=generator, validate=False)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        losses = [model.loss(codes, semantic, generator=generator)[0].item() for _ in range(20)]
    assert first > 2.5
    assert sum(losses) / len(losses) < 0.1, losses


def test_forward_rejects_bad_inputs_naming_them():
    cfg = SoundStormConfig.tiny()
    model = SoundStorm(cfg)
    codes, semantic = _batch(cfg)
    with pytest.raises(ValueError, match="codes"):
        model(codes[0], semantic)
    with pytest.raises(ValueError, match="levels"):
        model(codes[:, :2], semantic)
    with pytest.raises(ValueError, match="semantic length"):
        model(codes, semantic[:, :-1])
    with pytest.raises(ValueError, match="semantic"):
        model(codes, semantic.float())
    with pytest.raises(ValueError, match="codes holds ids"):
        model(codes + cfg.codebook_size + 1, semantic)
    with pytest.raises(ValueError, match="semantic holds ids"):
        model(codes, torch.full_like(semantic, -1))
    with pytest.raises(ValueError, match="lengths"):
        model(codes, semantic, torch.tensor([12, 13]))
    with pytest.raises(ValueError, match="batch"):
        model(codes, semantic[:1])
    with pytest.raises(ValueError, match="clean"):
        model.loss(torch.full_like(codes, cfg.mask_id), semantic)


def test_config_from_dict_names_unknown_fields():
    from soundstorm.t2s import T2SConfig

    with pytest.raises(ValueError, match=r"unknown SoundStormConfig fields \['dimm'\]"):
        SoundStormConfig.from_dict({**SoundStormConfig.tiny().to_dict(), "dimm": 3})
    with pytest.raises(ValueError, match=r"unknown T2SConfig fields \['depht'\]"):
        T2SConfig.from_dict({"depht": 2})
    assert SoundStormConfig.from_dict(SoundStormConfig.tiny().to_dict()) == SoundStormConfig.tiny()
