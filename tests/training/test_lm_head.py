"""The chunked fp32 head against plain log_softmax with autograd."""

from __future__ import annotations

import pytest
import torch

from hone.training import head
from hone.training.head import head_logprobs


def _naive(hidden, weight, bias, targets):
    logits = torch.nn.functional.linear(hidden.float(), weight.float(), None if bias is None else bias.float())
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(1, targets[:, None]).squeeze(1), entropy


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(head, "_CHUNK_ELEMENTS", 3 * 50)  # 3 rows per chunk for V=50: several chunks


@pytest.mark.parametrize("head_trained", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_head_matches_log_softmax_in_value_entropy_and_gradients(small_chunks, head_trained, with_bias):
    torch.manual_seed(0)
    M, H, V = 10, 8, 50
    hidden = torch.randn(M, H, requires_grad=True)
    weight = torch.randn(V, H, requires_grad=head_trained)
    bias = torch.randn(V, requires_grad=head_trained) if with_bias else None
    targets = torch.randint(0, V, (M,))
    upstream = torch.randn(M)  # an arbitrary d loss / d lp

    lp, entropy = head_logprobs(hidden, weight, bias, targets)
    (lp * upstream).sum().backward()
    got = [hidden.grad] + ([weight.grad] + ([bias.grad] if with_bias else []) if head_trained else [])
    leaves = [hidden] + ([weight] + ([bias] if with_bias else []) if head_trained else [])
    for leaf in leaves:
        leaf.grad = None

    lp_ref, entropy_ref = _naive(hidden, weight, bias, targets)
    (lp_ref * upstream).sum().backward()
    want = [leaf.grad for leaf in leaves]

    torch.testing.assert_close(lp, lp_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, entropy_ref.detach(), atol=1e-5, rtol=1e-5)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_head_in_no_grad_mode_returns_values_without_a_graph():
    hidden = torch.randn(4, 8, requires_grad=True)
    with torch.no_grad():
        lp, entropy = head_logprobs(hidden, torch.randn(20, 8), None, torch.tensor([0, 1, 2, 3]))
    assert not lp.requires_grad and not entropy.requires_grad
    assert lp.dtype == torch.float32
