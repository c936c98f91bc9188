"""The C++ decode-attention kernel against the same computation in torch ops."""

from __future__ import annotations

import pytest
import torch

from hone.engine import Engine
from hone.engine.kernels import decode_attention_reference, load_kernels
from hone.types import SamplingParams

from .test_engine import GREEDY, gather, naive_greedy

kernels = load_kernels()
needs_kernel = pytest.mark.skipif(kernels is None, reason="the C++ kernel could not be built here")


def random_step(dtype, B, H, K, E, S, slots, positions, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, (H + 2 * K) * E, generator=g).to(dtype)
    angles = torch.randn(B, E // 2, generator=g)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(dtype)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1).to(dtype)
    k_cache = torch.randn(slots, K, E, S, generator=g).to(dtype)
    v_cache = torch.randn(slots, K, S, E, generator=g).to(dtype)
    return qkv, cos, sin, k_cache, v_cache, torch.tensor(positions)


@needs_kernel
@pytest.mark.parametrize(
    "H, K, E, S",
    [
        (9, 3, 64, 96),  # SmolLM2's heads, a capacity that is a whole number of 16-position blocks
        (4, 2, 16, 40),  # the tiny test model, a capacity that is not
        (10, 2, 24, 33),  # a head size with no compiled specialisation: the generic loop
        (18, 2, 32, 64),  # 9 queries per kv head: the generic loop too
    ],
)
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.bfloat16, 0.05)])
def test_kernel_matches_torch_reference_and_writes_the_same_cache(H, K, E, S, dtype, atol):
    positions = [0, 5, S - 1, S // 2, 17 % S]
    inputs = random_step(dtype, len(positions), H, K, E, S, slots=len(positions) + 2, positions=positions)
    fast_k, fast_v = inputs[3].clone(), inputs[4].clone()
    slow_k, slow_v = inputs[3].clone(), inputs[4].clone()
    fast = kernels.decode_attention(*inputs[:3], fast_k, fast_v, inputs[5], H, K, E**-0.5)
    slow = decode_attention_reference(*inputs[:3], slow_k, slow_v, inputs[5], H, K, E**-0.5)
    # bf16: the kernel rotates in fp32 and rounds once, torch rounds after each op (a bf16 ulp or two)
    assert torch.allclose(fast.float(), slow.float(), atol=atol), (fast.float() - slow.float()).abs().max()
    assert torch.allclose(fast_k.float(), slow_k.float(), atol=atol)
    assert torch.equal(fast_v, slow_v)


@needs_kernel
def test_kernel_without_rotation_matches_reference():
    inputs = random_step(torch.float32, 3, 4, 2, 16, 20, slots=3, positions=[0, 7, 19])
    empty = torch.empty(0)
    k1, v1, k2, v2 = inputs[3].clone(), inputs[4].clone(), inputs[3].clone(), inputs[4].clone()
    fast = kernels.decode_attention(inputs[0], empty, empty, k1, v1, inputs[5], 4, 2, 0.25)
    slow = decode_attention_reference(inputs[0], empty, empty, k2, v2, inputs[5], 4, 2, 0.25)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_engine_on_the_torch_attention_path_equals_naive_full_forward(lively, prompts):
    with Engine(lively, eos_token_ids=[], dtype=torch.float32) as engine:
        engine._runner._attend = decode_attention_reference  # as when the kernel cannot be built
        results = gather(engine, [(p, 1, GREEDY) for p in prompts])
    for prompt, [seq] in zip(prompts, results):
        assert seq.tokens == naive_greedy(lively, prompt, GREEDY.max_tokens)


def test_engine_reports_which_attention_it_uses(engine32):
    assert engine32._runner.attention_impl == ("cpp" if kernels is not None else "torch")
    assert engine32.sample_sync([1, 2, 3], 1, SamplingParams(max_tokens=2)) is not None
