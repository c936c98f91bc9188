"""LoRA adapters on one engine (base weights once, each adapter unmerged on top) against the obvious
slow path: an engine of its own with the adapter merged into its weights (W + scale · B @ A)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from hone.engine import Engine
from hone.errors import InvalidRequestError
from hone.types import SamplingParams

GREEDY = SamplingParams(max_tokens=10, temperature=0.0)
TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def random_adapter(model, rank: int, seed: int, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """A PEFT-named adapter state with B off zero, so each adapter visibly changes the outputs."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for i, layer in enumerate(model.model.layers):
        for target in TARGETS:
            if target in skip:
                continue
            linear = layer.get_submodule(target)
            prefix = f"base_model.model.model.layers.{i}.{target}"
            state[prefix + ".lora_A.weight"] = torch.randn(rank, linear.in_features, generator=generator) * 0.1
            state[prefix + ".lora_B.weight"] = torch.randn(linear.out_features, rank, generator=generator) * 0.1
    return state


def merged(model, adapter: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """The slow obvious weights: W + scale · B @ A for every adapted linear layer, in fp32."""
    base = model.state_dict()
    out = {}
    for key, A in adapter.items():
        if key.endswith(".lora_A.weight"):
            module = key[len("base_model.model.") : -len(".lora_A.weight")]
            B = adapter[key.replace("lora_A", "lora_B")]
            out[module + ".weight"] = base[module + ".weight"] + scale * (B @ A)
    return out


def gather(engine: Engine, calls):
    async def main():
        return await asyncio.gather(*[engine.sample(p, n, params, adapter=a) for p, n, params, a in calls])

    return asyncio.run(main())


@pytest.fixture(scope="module")
def adapters(lively):
    # two full adapters of different ranks, and one without q/k/v (a fused projection partly adapted)
    return {
        "a": (random_adapter(lively, 4, seed=1), 2.0),
        "b": (random_adapter(lively, 8, seed=2), 0.5),
        "c": (random_adapter(lively, 4, seed=3, skip=TARGETS[:2]), 1.0),
    }


@pytest.fixture(scope="module")
def shared(lively, adapters):
    engine = Engine(lively, eos_token_ids=[], dtype=torch.float32)
    for name, (state, scale) in adapters.items():
        engine.set_adapter(name, state, scale)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def merged_engines(lively, adapters):
    engines = {}
    for name, (state, scale) in adapters.items():
        engines[name] = Engine(lively, eos_token_ids=[], dtype=torch.float32)
        engines[name].load_weights(merged(lively, state, scale))
    engines[None] = Engine(lively, eos_token_ids=[], dtype=torch.float32)
    yield engines
    for engine in engines.values():
        engine.close()


def test_each_adapter_alone_samples_the_tokens_of_an_engine_with_its_weights_merged(shared, merged_engines, prompts):
    for name, reference in merged_engines.items():
        for prompt in prompts[:3]:
            [got] = shared.sample_sync(prompt, 1, GREEDY, adapter=name)
            [want] = reference.sample_sync(prompt, 1, GREEDY)
            assert got.tokens == want.tokens, name
            assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4), name  # fp32: only summation order differs


def test_concurrent_requests_of_different_adapters_each_get_their_own_adapters_samples(shared, merged_engines, prompts):
    names = [None, "a", "b", "c"]
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=5)
    calls = [(p, 2, params, names[k % 4]) for k, p in enumerate(prompts)]
    batches_before = shared.stats["batches"]
    results = gather(shared, calls)
    assert shared.stats["batches"] - batches_before < len(calls)  # admitted together, decoded in one batch
    for (prompt, n, params, name), seqs in zip(calls, results):
        reference = merged_engines[name].sample_sync(prompt, n, params)
        for got, want in zip(seqs, reference):
            assert got.tokens == want.tokens, name  # same seed: same draws from the same distribution
            assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4), name


def test_an_empty_adapter_samples_the_base_exactly_and_a_replaced_adapter_serves_its_new_weights(lively, adapters, merged_engines, prompts):
    with Engine(lively, eos_token_ids=[], dtype=torch.float32) as engine:
        engine.set_adapter("m", {}, 1.0)
        [base] = merged_engines[None].sample_sync(prompts[0], 1, GREEDY)
        [got] = engine.sample_sync(prompts[0], 1, GREEDY, adapter="m")
        assert got.tokens == base.tokens and got.logprobs == base.logprobs
        state, scale = adapters["a"]
        engine.set_adapter("m", state, scale)
        [got] = engine.sample_sync(prompts[0], 1, GREEDY, adapter="m")
        assert got.tokens == merged_engines["a"].sample_sync(prompts[0], 1, GREEDY)[0].tokens


def test_an_unknown_or_removed_adapter_and_a_foreign_adapter_key_are_refused_with_one_sentence(lively, adapters):
    with Engine(lively, eos_token_ids=[], dtype=torch.float32) as engine:
        state, scale = adapters["a"]
        engine.set_adapter("m", state, scale)
        engine.remove_adapter("m")
        with pytest.raises(InvalidRequestError, match="no adapter named 'm'"):
            engine.sample_sync([1, 2, 3], 1, GREEDY, adapter="m")
        with pytest.raises(InvalidRequestError, match="not a LoRA matrix"):
            engine.set_adapter("x", {"base_model.model.lm_head.lora_A.weight": torch.zeros(4, 8)}, 1.0)
