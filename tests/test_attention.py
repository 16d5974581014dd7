"""Attention kernel selection (Pallas flash on TPU only, SDPA elsewhere) and activation checkpointing."""

from __future__ import annotations

import torch

from soundstorm import SoundStorm, SoundStormConfig
from soundstorm.attention import SegmentFlashAttention, flash_length, sdpa_attention, select_attention
from soundstorm.backends import get_backend


def reference_flash(q, k, v, causal, q_segment_ids, kv_segment_ids, sm_scale):
    """torch_xla's flash_attention contract, written with plain ops: a query attends to keys of its segment."""
    assert not causal and q.shape[2] == flash_length(q.shape[2])  # the wrapper padded to the kernel's blocks
    same_BTT = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
    scores = (q @ k.transpose(-1, -2)) * sm_scale
    return torch.softmax(scores.masked_fill(~same_BTT[:, None], float("-inf")), dim=-1) @ v


def test_flash_is_selected_on_tpu_only_and_only_when_the_kernel_imports():
    loads = []

    def load():
        loads.append(1)
        return reference_flash

    assert select_attention("CPU", load)[0] == "sdpa" and not loads  # the import is not even tried
    assert select_attention("GPU", load) == ("sdpa", sdpa_attention)
    name, fn = select_attention("TPU", load)
    assert name == "pallas_flash" and isinstance(fn, SegmentFlashAttention) and loads
    assert select_attention("TPU", lambda: None) == ("sdpa", sdpa_attention)  # torch_xla without Pallas


def test_flash_wrapper_equals_sdpa_with_key_padding():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 8, generator=g) for _ in range(3))
    valid_BT = torch.arange(50)[None, :] < torch.tensor([50, 31])[:, None]
    attend_B11T = valid_BT[:, None, None, :]
    expected = sdpa_attention(q, k, v, attend_B11T, 0.0)
    got = SegmentFlashAttention(reference_flash)(q, k, v, attend_B11T, 0.0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert [flash_length(n) for n in (50, 512, 513, 2250)] == [128, 512, 1024, 3072]


def test_cpu_backend_keeps_sdpa_and_checkpointing_keeps_the_gradients():
    torch.manual_seed(0)
    model = SoundStorm(SoundStormConfig.tiny())
    codes = torch.randint(0, 32, (2, 4, 12))
    semantic = torch.randint(0, 16, (2, 6))

    def grads():
        model.zero_grad()
        torch.manual_seed(1)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            loss, _ = model.loss(codes, semantic, torch.tensor([12, 9]))
        loss.backward()
        return [p.grad.clone() for p in model.parameters()], sum(saved)

    plain, saved_plain = grads()
    assert get_backend("cpu").configure_model(model, activation_checkpointing=True) == "sdpa"
    checkpointed, saved_checkpointed = grads()
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b)
    assert saved_checkpointed < saved_plain / 2, (saved_checkpointed, saved_plain)  # block activations recomputed
