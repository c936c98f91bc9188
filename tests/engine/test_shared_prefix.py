"""Samples of one prompt read its cached keys and values from one slot: the same outputs, bit for bit,
as each reading its own copy, while the samples finish and leave in any order."""

from __future__ import annotations

import pytest
import torch

from hone.engine import Engine
from hone.engine.kernels import NO_SHARING, load_kernels
from hone.types import SamplingParams

from .test_engine import gather
from .test_kernels import random_step

kernels = load_kernels()
needs_kernel = pytest.mark.skipif(kernels is None, reason="the C++ attention kernel could not be built here")


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# SmolLM2's heads and the tiny model's (the group's queries attend the shared positions together,
# 2 and 4 samples a pass); a head size with no compiled specialisation (each sample alone)
@pytest.mark.parametrize("H, K, E", [(9, 3, 64), (4, 2, 16), (10, 2, 24)])
def test_a_slot_reads_its_shared_prefix_from_the_owner_slot(dtype, H, K, E):
    S, P = 96, 37  # the prefix ends inside a tile of positions
    # slots 0-4 share the first P positions (slot 1 reads them from 0, and so on); slot 5 does not
    positions = torch.tensor([70, 70, 41, 50, 37, 60])
    qkv, cos, sin, k_cache, v_cache, _ = random_step(dtype, 6, H, K, E, S, slots=6, positions=[0])
    for b in (1, 2, 3, 4):  # copies of slot 0's prefix, as the engine makes them
        k_cache[b, ..., :P] = k_cache[0, ..., :P]
        v_cache[b, :, :P] = v_cache[0, :, :P]
    own_k, own_v = k_cache.clone(), v_cache.clone()
    expected = kernels.decode_attention(qkv, cos, sin, own_k, own_v, positions, H, K, E**-0.5, *NO_SHARING)
    # with sharing, slots 1-4 never read their own copy: spoil it
    k_cache[1:5, ..., :P] = 1e4
    v_cache[1:5, :, :P] = float("nan")
    owners, shared = torch.tensor([0, 0, 0, 0, 0, 5]), torch.tensor([0, P, P, P, P, 0])
    got = kernels.decode_attention(qkv, cos, sin, k_cache, v_cache, positions, H, K, E**-0.5, owners, shared)
    assert torch.equal(got, expected)
    rows = torch.arange(6)
    assert torch.equal(k_cache[rows, ..., positions], own_k[rows, ..., positions])  # each new key in its own slot
    assert torch.equal(v_cache[rows, :, positions], own_v[rows, :, positions])


@needs_kernel
def test_the_kernel_refuses_a_shared_prefix_past_the_rows_position():
    qkv, cos, sin, k_cache, v_cache, positions = random_step(torch.float32, 2, 4, 2, 16, 40, slots=2, positions=[5, 5])
    with pytest.raises(RuntimeError, match="shared prefix must end"):
        kernels.decode_attention(qkv, cos, sin, k_cache, v_cache, positions, 4, 2, 0.25, torch.tensor([0, 0]), torch.tensor([0, 9]))


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_samples_of_one_prompt_sample_the_same_reading_one_copy_while_they_finish_at_different_times(lively, tokenizer, dtype):
    """Two requests for one prompt (admitted together, so one prefill), at T = 1 with seeds: the
    first request's samples (the first slots, the owner's among them) finish early and the second's
    are moved into their slots; outputs and logprobs equal an engine whose samples read their own copies."""
    prompt = tokenizer.encode("You are a careful assistant. " * 6 + "Which platform does the train to Bergen leave from?")
    calls = [(prompt, 3, SamplingParams(max_tokens=3, temperature=1.0, seed=1)), (prompt, 3, SamplingParams(max_tokens=16, temperature=1.0, seed=2))]
    outputs = []
    for shares in (True, False):
        with Engine(lively, eos_token_ids=[], decode=tokenizer.decode, dtype=dtype, prefix_cache_bytes=0) as engine:
            engine._runner.shares_prefixes = shares
            results = gather(engine, calls)
            outputs.append(([[s.tokens for s in r] for r in results], [[s.logprobs for s in r] for r in results]))
            read_shared = engine.stats["shared_prefix_rows"]
        assert (read_shared > 0) == shares
    (tokens, logprobs), (tokens_own, logprobs_own) = outputs
    assert tokens == tokens_own and logprobs == logprobs_own
    assert [len(s) for s in tokens[0]] == [3, 3, 3] and [len(s) for s in tokens[1]] == [16, 16, 16]
