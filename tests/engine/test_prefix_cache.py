"""The prefix cache: a prompt that continues an earlier sequence reuses its keys and values, and
samples exactly what an engine without the cache samples, with the same logprobs."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from hone.engine import Engine
from hone.engine.prefix_cache import MIN_REUSE, shared_starts
from hone.types import SamplingParams

from tests.engine.test_adapters import random_adapter

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def engines(lively, tokenizer):
    cached = Engine(lively, eos_token_ids=[], decode=tokenizer.decode, dtype=torch.float32)
    plain = Engine(lively, eos_token_ids=[], decode=tokenizer.decode, dtype=torch.float32, prefix_cache_bytes=0)
    yield cached, plain
    cached.close()
    plain.close()


def conversation(tokenizer, engine, turns: int = 3, adapter: str | None = None, params: SamplingParams = GREEDY) -> list[tuple[list[int], list[float]]]:
    """An agent-like exchange: each prompt is the previous prompt, its completion and a new 'tool result'."""
    prompt = tokenizer.encode("You are a careful assistant. " * 8 + "Question: when does the train to Bergen leave?")
    out = []
    for turn in range(turns):
        [seq] = engine.sample_sync(prompt, 1, params, adapter)
        out.append((seq.tokens, seq.logprobs))
        prompt = prompt + seq.tokens + tokenizer.encode(f" Result {turn}: the 7:45 am train, platform {turn + 2}.")
    return out


def assert_same(a, b):
    for (tokens_a, logprobs_a), (tokens_b, logprobs_b) in zip(a, b, strict=True):
        assert tokens_a == tokens_b
        assert torch.allclose(torch.tensor(logprobs_a), torch.tensor(logprobs_b), atol=1e-4)


def test_a_continued_conversation_reuses_its_prefix_and_samples_what_a_full_prefill_samples(engines, tokenizer):
    cached, plain = engines
    before = dict(cached.stats)
    assert_same(conversation(tokenizer, cached), conversation(tokenizer, plain))
    hits = cached.stats["prefix_hits"] - before["prefix_hits"]
    reused = cached.stats["prefix_tokens_reused"] - before["prefix_tokens_reused"]
    assert hits >= 2 and reused >= 2 * MIN_REUSE
    assert plain.stats["prefix_hits"] == 0
    # the cached engine ran fewer prompt positions for the same three turns
    assert cached.stats["prefill_tokens"] - before["prefill_tokens"] < plain.stats["prefill_tokens"] - reused // 2


@pytest.mark.parametrize("params", [
    SamplingParams(max_tokens=1, temperature=0.0),  # rows that finish as they are admitted
    SamplingParams(max_tokens=16, temperature=0.0, stop=[" the", "a"]),  # rows cut back by a stop string
], ids=["one-token", "stop-string"])
def test_rows_that_finish_at_admission_or_are_cut_by_a_stop_string_leave_a_reusable_prefix(engines, tokenizer, params):
    cached, plain = engines
    hits = cached.stats["prefix_hits"]
    assert_same(conversation(tokenizer, cached, params=params), conversation(tokenizer, plain, params=params))
    assert cached.stats["prefix_hits"] > hits


def test_many_samples_of_a_cached_prefix_and_concurrent_requests_match_the_plain_engine(engines, tokenizer):
    cached, plain = engines
    base = tokenizer.encode("Shared system prompt for every request. " * 6)
    cached.sample_sync(base + tokenizer.encode(" warm"), 1, GREEDY)  # leaves the shared part cached
    prompts = [base + tokenizer.encode(f" Case {i}: what happens next?") for i in range(4)]
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=3)
    prompts.append(base + tokenizer.encode(" A much longer case, so the batch continuing the prefix is padded: " * 3))

    async def together(engine):  # admitted in one batch: their rests are prefilled side by side
        return await asyncio.gather(*(engine.sample(p, 3, params) for p in prompts))

    hits = cached.stats["prefix_hits"]
    for a, b in zip(asyncio.run(together(cached)), [plain.sample_sync(p, 3, params) for p in prompts], strict=True):
        assert [s.tokens for s in a] == [s.tokens for s in b]
        assert torch.allclose(torch.tensor([s.logprobs for s in a]), torch.tensor([s.logprobs for s in b]), atol=1e-4)
    assert cached.stats["prefix_hits"] - hits == len(prompts)


def test_an_adapter_never_reuses_what_the_base_or_its_previous_weights_computed(lively, tokenizer):
    cached = Engine(lively, eos_token_ids=[], decode=tokenizer.decode, dtype=torch.float32)
    plain = Engine(lively, eos_token_ids=[], decode=tokenizer.decode, dtype=torch.float32, prefix_cache_bytes=0)
    try:
        conversation(tokenizer, cached)  # the base's entries
        for engine in (cached, plain):
            engine.set_adapter("a", random_adapter(lively, 4, seed=1), scale=1.0)
        assert_same(conversation(tokenizer, cached, adapter="a"), conversation(tokenizer, plain, adapter="a"))
        for engine in (cached, plain):  # new weights under the same name
            engine.set_adapter("a", random_adapter(lively, 4, seed=2), scale=1.0)
        assert_same(conversation(tokenizer, cached, adapter="a"), conversation(tokenizer, plain, adapter="a"))
        # new base weights: nothing computed before may be reused
        state = {k: v * 1.1 for k, v in lively.state_dict().items() if k.endswith("mlp.down_proj.weight")}
        for engine in (cached, plain):
            engine.load_weights(state)
        assert len(cached.prefix_cache) == 0
        assert_same(conversation(tokenizer, cached), conversation(tokenizer, plain))
    finally:
        cached.close()
        plain.close()


def test_the_cache_stays_within_its_memory_bound(lively, tokenizer):
    config = lively.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_position = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4  # keys and values, fp32
    bound = 150 * per_position  # two or three of these sequences
    engine = Engine(lively, eos_token_ids=[], decode=tokenizer.decode, dtype=torch.float32, prefix_cache_bytes=bound)
    try:
        for i in range(6):
            engine.sample_sync(tokenizer.encode(f"Document {i}: " + "words and more words " * 10), 1, GREEDY)
        assert 0 < engine.prefix_cache.nbytes <= bound
        assert 0 < len(engine.prefix_cache) < 6  # the oldest went
    finally:
        engine.close()


def test_rows_still_running_on_a_replaced_adapter_store_nothing(lively, tokenizer):
    engine = Engine(lively, eos_token_ids=[], decode=tokenizer.decode, dtype=torch.float32)
    try:
        engine.set_adapter("a", random_adapter(lively, 4, seed=1), scale=1.0)
        old = engine._adapters["a"]
        running = threading.Thread(target=engine.sample_sync, args=(tokenizer.encode("A long answer " * 10), 1,
                                                                     SamplingParams(max_tokens=300, temperature=0.0), "a"))
        running.start()
        while engine.active_rows == 0:
            time.sleep(0.001)
        engine.set_adapter("a", random_adapter(lively, 4, seed=2), scale=1.0)
        running.join()
        assert not any(entry.lora is old for entry in engine.prefix_cache._entries.values())
    finally:
        engine.close()


def test_prompts_arriving_together_prefill_their_shared_start_once_and_sample_what_the_plain_engine_samples(engines, tokenizer):
    """An evaluation's first turns: one system prompt, many questions, nothing cached yet."""
    cached, plain = engines
    cached.prefix_cache.clear()
    system = tokenizer.encode("You answer questions about the inbox. Tools: search, read, answer. " * 4)
    prompts = [system + tokenizer.encode(f" Question {i}: who sent the invoice in week {i}?") for i in range(5)]
    prompts.append(tokenizer.encode("An unrelated prompt that shares nothing with the others, " * 3))
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=5)

    async def together(engine):
        return await asyncio.gather(*(engine.sample(p, 2, params) for p in prompts))

    before = dict(cached.stats)
    for a, b in zip(asyncio.run(together(cached)), asyncio.run(together(plain)), strict=True):
        assert [s.tokens for s in a] == [s.tokens for s in b]
        assert torch.allclose(torch.tensor([s.logprobs for s in a]), torch.tensor([s.logprobs for s in b]), atol=1e-4)
    computed = cached.stats["prefill_tokens"] - before["prefill_tokens"]
    assert cached.stats["prefix_hits"] - before["prefix_hits"] == 5  # the questions; the unrelated prompt ran whole
    assert cached.stats["prefix_tokens_reused"] - before["prefix_tokens_reused"] >= 5 * len(system)
    assert computed < sum(len(p) for p in prompts) - 3 * len(system)  # the system prompt ran once, not five times


def test_shared_starts_are_found_per_run_of_alike_prompts():
    system, other = tuple(range(100, 140)), tuple(range(500, 540))
    prompts = [system + (1, 2), system + (3,), other + (7, 8, 9), other + (7, 8, 10), (9,) * 50]
    assert sorted(shared_starts(prompts)) == sorted([system, other + (7, 8)])
    assert shared_starts([system + (1,)]) == []  # alone: nothing to share
    assert shared_starts([system[:20] + (1,), system[:20] + (2,)]) == []  # shorter than MIN_REUSE
    assert shared_starts([system, system + (5,)]) == [system[:-1]]  # one token short of the shortest prompt
    # two prompts sharing 100 tokens keep them, though a third shares 40 of them (it continues the entry later)
    long = tuple(range(1000, 1100))
    assert shared_starts([long + (1,), long + (2,), long[:40] + (3,)]) == [long]
    # ... but six more prompts sharing 40 are worth more than two sharing 50
    many = [long[:40] + (i,) * 20 for i in range(3, 9)]
    assert shared_starts([long[:50] + (1,), long[:50] + (2,), *many]) == [long[:40]]
