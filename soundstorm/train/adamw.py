"""AdamW whose update is skipped on device when a step was not finite, without copying any state.

The training loop must skip a step whose loss or gradient norm is NaN/inf, and must not read that
flag back to the host (a sync per step; on XLA it also cuts the step graph). Undoing
``torch.optim.AdamW.step()`` afterwards needs a copy of the parameters and of both moments every
step (3× the weights of extra memory traffic, and of peak memory on a 32 GiB TPU chip). Instead,
:class:`SkippableAdamW` folds the flag into the update: with ``f = finite`` (0 or 1),

    m ← m + f·(1−β1)·(g − m)        v ← v + f·(1−β2)·(g² − v)        step ← step + f
    p ← p − f·lr·(wd·p + m̂ / (√v̂ + ε))        (m̂, v̂ bias-corrected with step)

which is AdamW (decoupled weight decay, as ``torch.optim.AdamW``) when ``f = 1`` and leaves every
tensor bit-for-bit unchanged when ``f = 0``. Non-finite gradients are zeroed first so no NaN
reaches the moments. ``torch._foreach_*`` ops keep it a handful of kernels per group on CUDA; the
state dict has AdamW's keys, so checkpoints load either way.

On the CPU and CUDA the same update runs in torch's fused AdamW kernel, whose ``found_inf`` argument
(the one ``GradScaler`` uses) skips a step on device exactly as above: one pass over the weights instead
of some twenty. Why: on 2 CPU cores the foreach path took 58 ms of the quickstart's 490 ms step, the
fused kernel 5 ms (``docs/quickstart.md``). XLA keeps the foreach path (its graph is fused anyway).
"""

from __future__ import annotations

import torch


# devices whose fused AdamW kernel takes found_inf (torch >= 2.4 on the CPU)
FUSED_DEVICES = ("cpu", "cuda") if hasattr(torch, "_fused_adamw_") else ()


class SkippableAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` with :meth:`skip_unless`: the next :meth:`step` applies only where the flag holds."""

    def __init__(self, params, **kwargs):
        if kwargs.get("amsgrad") or kwargs.get("maximize"):
            raise ValueError("SkippableAdamW supports neither amsgrad nor maximize")
        super().__init__(params, **kwargs)
        self._finite: torch.Tensor | None = None

    def skip_unless(self, finite: torch.Tensor) -> None:
        """The next :meth:`step` updates only if ``finite`` (a 0-d bool tensor on the parameters' device)."""
        self._finite = finite

    def _state_for(self, param: torch.Tensor) -> dict:
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        elif state["step"].device != param.device:  # a loaded checkpoint keeps AdamW's CPU step counter
            state["step"] = state["step"].to(param.device, torch.float32)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        finite, self._finite = self._finite, None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            flag = torch.ones((), dtype=torch.bool, device=params[0].device) if finite is None else finite
            if params[0].device.type in FUSED_DEVICES and all(p.dtype == torch.float32 for p in params):
                self._fused_update_group(group, params, flag)
            else:
                self._update_group(group, params, flag)
        return loss

    def _fused_update_group(self, group: dict, params: list, finite: torch.Tensor) -> None:
        """The update in torch's fused AdamW kernel; ``found_inf = 1 - finite`` skips it on device (the
        step count is put back, as torch's own fused AdamW does for a GradScaler's skipped step)."""
        beta1, beta2 = group["betas"]
        states = [self._state_for(p) for p in params]
        steps = [s["step"] for s in states]
        found_inf = (~finite).to(torch.float32).reshape(1)
        torch._foreach_add_(steps, 1.0)
        torch._fused_adamw_(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                            [s["exp_avg_sq"] for s in states], [], steps, lr=group["lr"], beta1=beta1, beta2=beta2,
                            weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False, maximize=False,
                            grad_scale=None, found_inf=found_inf)
        torch._foreach_sub_(steps, [found_inf.reshape(())] * len(steps))

    def _update_group(self, group: dict, params: list, finite: torch.Tensor) -> None:
        beta1, beta2 = group["betas"]
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        states = [self._state_for(p) for p in params]
        f = finite.to(torch.float32)
        grads = [torch.where(finite, p.grad, torch.zeros_like(p.grad)) for p in params]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, [f] * len(steps))  # (a list: the 0-d tensor overload reads f to the host on XLA)
        # moments: m += f(1-β1)(g - m), v += f(1-β2)(g² - v)
        delta = torch._foreach_sub(grads, exp_avgs)
        torch._foreach_mul_(delta, f * (1.0 - beta1))
        torch._foreach_add_(exp_avgs, delta)
        delta = torch._foreach_mul(grads, grads)
        torch._foreach_sub_(delta, exp_avg_sqs)
        torch._foreach_mul_(delta, f * (1.0 - beta2))
        torch._foreach_add_(exp_avg_sqs, delta)
        # bias corrections from the (possibly unchanged) step, at least 1 so a skipped first step stays finite
        counts = torch._foreach_clamp_min(steps, 1.0)
        correction1 = torch._foreach_pow(beta1, counts)
        torch._foreach_neg_(correction1)
        torch._foreach_add_(correction1, 1.0)  # 1 - β1^step
        correction2 = torch._foreach_pow(beta2, counts)
        torch._foreach_neg_(correction2)
        torch._foreach_add_(correction2, 1.0)  # 1 - β2^step
        torch._foreach_sqrt_(correction2)
        # p ← p·(1 − f·lr·wd) − f·lr/bc1 · m / (√v/√bc2 + ε)
        if weight_decay:
            torch._foreach_mul_(params, 1.0 - f * (lr * weight_decay))
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, correction2)
        torch._foreach_add_(denom, eps)
        update = torch._foreach_div(exp_avgs, denom)
        torch._foreach_div_(update, correction1)
        torch._foreach_mul_(update, -lr * f)
        torch._foreach_add_(params, update)
