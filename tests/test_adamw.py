"""SkippableAdamW: the update of torch.optim.AdamW when finite, nothing changed (bit for bit) when not."""

from __future__ import annotations

import copy

import pytest
import torch

from soundstorm.train.adamw import SkippableAdamW
from soundstorm.train.optim import guarded_step


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(5, 3, generator=g)), torch.nn.Parameter(torch.randn(4, generator=g))]


def _grads(step):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(5, 3, generator=g), torch.randn(4, generator=g)]


def test_finite_steps_match_torch_adamw_and_state_dicts_load_both_ways():
    ours, ref = _params(), _params()
    kwargs = dict(lr=1e-2, betas=(0.9, 0.98), eps=1e-8)
    opt = SkippableAdamW([{"params": ours[:1], "weight_decay": 0.1}, {"params": ours[1:], "weight_decay": 0.0}],
                         **kwargs)
    torch_opt = torch.optim.AdamW([{"params": ref[:1], "weight_decay": 0.1}, {"params": ref[1:], "weight_decay": 0.0}],
                                  **kwargs)
    for step in range(5):
        for p, q, grad in zip(ours, ref, _grads(step)):
            p.grad, q.grad = grad.clone(), grad.clone()
        guarded_step(opt, torch.tensor(True))
        torch_opt.step()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert float(opt.state[ours[0]]["step"]) == 5.0
    opt.load_state_dict(copy.deepcopy(torch_opt.state_dict()))  # torch's checkpoint into ours, then one more step each
    for p, q, grad in zip(ours, ref, _grads(9)):
        p.data.copy_(q.data)
        p.grad, q.grad = grad.clone(), grad.clone()
    opt.step()
    torch_opt.step()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("first", [True, False])
def test_a_nonfinite_step_changes_nothing(first):
    params = _params()
    opt = SkippableAdamW(params, lr=1e-2, weight_decay=0.1)
    if not first:
        for p, grad in zip(params, _grads(0)):
            p.grad = grad
        opt.step()
    before = [p.detach().clone() for p in params]
    moments = {k: [opt.state[p][k].clone() for p in params] for k in ("exp_avg", "exp_avg_sq", "step")} \
        if not first else None
    for p, grad in zip(params, _grads(1)):
        p.grad = grad
    params[0].grad[0, 0] = float("nan")
    guarded_step(opt, torch.tensor(False))
    for p, old in zip(params, before):
        assert torch.equal(p, old)
    for k, olds in (moments or {}).items():
        assert all(torch.equal(opt.state[p][k], old) for p, old in zip(params, olds)), k
    if first:  # skipped very first step: the moments exist, empty, and the counter did not move
        assert all(float(opt.state[p]["step"]) == 0 and not opt.state[p]["exp_avg"].any() for p in params)


def test_guarded_step_refuses_a_plain_optimizer():
    params = _params()
    with pytest.raises(TypeError, match="SkippableAdamW"):
        guarded_step(torch.optim.AdamW(params), torch.tensor(True))
