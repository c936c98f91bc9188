"""Speculative decoding from the sequence's own n-grams: the same outputs, drawn in fewer steps."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from hone.engine import Engine
from hone.engine.grammar import GrammarMatchers
from hone.engine.speculation import DraftPolicy, NgramIndex, SpeculationConfig
from hone.types import SamplingParams

from .test_adapters import random_adapter
from .test_engine import gather
from .test_grammar import WEATHER, json_grammar

# text an agent copies from: an email it read, then the start of its answer
COPY_TEXT = (
    "Email 17 from alice@example.com, subject: Invoice 4471 for the March order. Body: The total for invoice "
    "4471 is $1,284.50, due on April 12. Please pay to account 88-1034-22.\n"
    "Question: What is the total for invoice 4471 and when is it due?\nAnswer: The total for invoice 4471 is"
)
LIST_TEXT = "Cities: Paris, Berlin, Madrid, Rome, Vienna.\nThe same cities in the same order: Paris, Berlin,"


@pytest.fixture(scope="module")
def copy_prompts(tokenizer):
    return [tokenizer.encode(COPY_TEXT), tokenizer.encode(LIST_TEXT)]


@pytest.fixture(scope="module")
def embedded32(embedded, tokenizer):
    """fp32 engines over the embedded model, speculating and not (exact comparisons)."""
    engines = {
        spec: Engine(embedded.model, eos_token_ids=[], decode=tokenizer.decode, dtype=torch.float32, speculation=spec)
        for spec in (SpeculationConfig(), None)
    }
    yield engines
    for engine in engines.values():
        engine.close()


def run_both(engines, calls):
    return [gather(engine, calls) for engine in engines.values()]


def test_greedy_outputs_and_logprobs_are_the_same_with_and_without_drafts(embedded32, copy_prompts):
    calls = [(copy_prompts[0], 1, SamplingParams(max_tokens=40, temperature=0.0)),
             (copy_prompts[1], 2, SamplingParams(max_tokens=23, temperature=0.0)),  # drafts run into max_tokens
             (copy_prompts[0][:30], 1, SamplingParams(max_tokens=17, temperature=0.0, stop=(" is",)))]
    before = dict(embedded32[SpeculationConfig()].stats)
    with_drafts, without = run_both(embedded32, calls)
    for got, expected in zip(with_drafts, without):
        for a, b in zip(got, expected):
            assert a.tokens == b.tokens and a.finish_reason == b.finish_reason
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
    stats = embedded32[SpeculationConfig()].stats
    accepted = stats["draft_tokens_accepted"] - before["draft_tokens_accepted"]
    assert accepted >= 20, stats  # the copies were drafted and kept, not merely allowed
    assert stats["decode_steps"] - before["decode_steps"] < sum(len(s.tokens) for r in with_drafts[:1] for s in r)
    assert len(with_drafts[1][0].tokens) == 23 and with_drafts[2][0].finish_reason == "stop"


def test_a_seed_gives_the_same_samples_with_and_without_drafts(embedded32, copy_prompts):
    """Each token is drawn with the row's next random number whether or not it was drafted."""
    params = SamplingParams(max_tokens=30, temperature=0.7, seed=11)
    with_drafts, without = run_both(embedded32, [(copy_prompts[0], 4, params)])
    assert [s.tokens for s in with_drafts[0]] == [s.tokens for s in without[0]]


def test_rows_of_an_adapter_and_of_the_base_verify_drafts_in_one_step(embedded32, embedded, copy_prompts):
    """The adapter's delta applies to its own rows of a verifying step, however many tokens each feeds."""
    adapter = random_adapter(embedded.model, rank=4, seed=3)
    for engine in embedded32.values():
        engine.set_adapter("tuned", adapter, scale=0.05)
    greedy = SamplingParams(max_tokens=30, temperature=0.0)
    calls = [(copy_prompts[0], 1, greedy, "tuned"), (copy_prompts[1], 1, greedy, None), (copy_prompts[1], 1, greedy, "tuned")]

    async def run(engine):
        return await asyncio.gather(*[engine.sample(p, n, params, adapter=a) for p, n, params, a in calls])

    engine = embedded32[SpeculationConfig()]
    before = engine.stats["draft_tokens_accepted"]
    with_drafts, without = (asyncio.run(run(e)) for e in embedded32.values())
    for got, expected in zip(with_drafts, without):
        assert got[0].tokens == expected[0].tokens
        assert torch.allclose(torch.tensor(got[0].logprobs), torch.tensor(expected[0].logprobs), atol=1e-4)
    base, tuned = with_drafts[1][0], with_drafts[2][0]  # one prompt: the adapter changed its rows' numbers
    assert base.tokens != tuned.tokens or max(abs(a - b) for a, b in zip(base.logprobs, tuned.logprobs)) > 1e-3
    assert engine.stats["draft_tokens_accepted"] > before
    for e in embedded32.values():
        e.remove_adapter("tuned")


def test_a_request_can_turn_drafting_off(embedded32, copy_prompts):
    engine = embedded32[SpeculationConfig()]
    before = engine.stats["draft_tokens"]
    engine.sample_sync(copy_prompts[1], 1, SamplingParams(max_tokens=12, temperature=0.0, speculate=False))
    assert engine.stats["draft_tokens"] == before


def test_streamed_tokens_equal_the_result_when_rows_advance_several_tokens_a_step(embedded32, copy_prompts):
    engine = embedded32[SpeculationConfig()]
    heard: list[int] = []
    future = engine._submit(copy_prompts[1], 1, SamplingParams(max_tokens=20, temperature=0.0), on_tokens=lambda d: heard.extend(d.tokens))
    [sample] = future.result()
    assert heard == sample.tokens


def test_constrained_rows_draft_the_tokens_their_grammar_forces(embedded, tokenizer, copy_prompts):
    grammars = GrammarMatchers(tokenizer, embedded.model.config.vocab_size, [tokenizer.eos_token_id])
    params = SamplingParams(max_tokens=60, temperature=0.0, grammar=json_grammar(WEATHER))
    samples = {}
    for spec in (SpeculationConfig(), None):
        with Engine(embedded.model, eos_token_ids=[tokenizer.eos_token_id], decode=tokenizer.decode, dtype=torch.float32,
                    grammars=grammars, speculation=spec) as engine:
            samples[spec] = engine.sample_sync(copy_prompts[0], 2, params)
            if spec is not None:
                stats = dict(engine.stats)
    assert [s.tokens for s in samples[SpeculationConfig()]] == [s.tokens for s in samples[None]]
    assert [s.forced for s in samples[SpeculationConfig()]] == [s.forced for s in samples[None]]
    json.loads(tokenizer.decode(samples[None][0].tokens[:-1]))
    assert stats["draft_tokens_accepted"] >= sum(samples[None][0].forced) // 2, stats


def chi_square_p(counts_a: list[int], counts_b: list[int]) -> float:
    """p-value of Pearson's test that two count vectors come from one distribution."""
    table = torch.tensor([counts_a, counts_b], dtype=torch.float64)
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    statistic = ((table - expected) ** 2 / expected).sum()
    dof = table.shape[1] - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64), statistic / 2))


def test_sampled_distribution_is_unchanged_at_temperature_one(embedded, tokenizer):
    """Drafts the model finds neither certain nor unlikely, so acceptance and the resampling after a
    rejection both happen often: the distribution of the next three tokens must not move."""
    prompt = tokenizer.encode("Pick a fruit: apple, pear, plum, fig.\nI pick: apple,")
    pairs = {}
    for spec in (SpeculationConfig(min_ngram=1, max_draft=2, max_batch=64, adaptive=False), None):
        with Engine(embedded.model, eos_token_ids=[], dtype=torch.float32, speculation=spec) as engine:
            # different seeds per arm: the test compares distributions, not random streams
            calls = [(prompt, 50, SamplingParams(max_tokens=3, temperature=1.0, seed=seed + (1000 if spec else 0))) for seed in range(24)]
            pairs[spec] = [tuple(s.tokens) for r in gather(engine, calls) for s in r]
            if spec is not None:  # both outcomes are common: accepted drafts and resampled rejections
                drafted, kept = engine.stats["draft_tokens"], engine.stats["draft_tokens_accepted"]
                assert drafted >= 600 and kept >= 120 and drafted - kept >= 30, engine.stats
    on, off = pairs[SpeculationConfig(min_ngram=1, max_draft=2, max_batch=64, adaptive=False)], pairs[None]
    for key in (lambda t: t[:2], lambda t: t):  # first two tokens; all three
        both = [key(t) for t in on + off]
        common = sorted(set(both), key=lambda k: -both.count(k))[:8]
        count = lambda arm: [sum(key(t) == k for t in arm) for k in common] + [sum(key(t) not in common for t in arm)]
        assert chi_square_p(count(on), count(off)) > 1e-3, (count(on), count(off))


def test_ngram_index_drafts_what_followed_the_latest_earlier_occurrence():
    index = NgramIndex(SpeculationConfig(min_ngram=2, max_ngram=3, max_draft=4), [1, 2, 3, 4, 5, 9, 2, 3, 6, 7])
    assert index.draft(4) == []  # "6 7" never occurred before
    index.extend([2, 3])  # "2 3" occurred twice; the later one was followed by 6 7
    assert index.draft(4) == [6, 7, 2, 3]
    index.extend([4])  # "2 3 4": the longer n-gram wins
    assert index.draft(2) == [5, 9]


def test_policy_drafts_less_where_rows_cost_more():
    policy = DraftPolicy(SpeculationConfig(max_draft=6))
    assert policy.draft_length(0.9, policy.row_cost(1)) == 6  # no measured cost yet: draft fully
    for _ in range(40):  # steps cost 10 ms plus 1 ms per row fed
        for rows in (8, 16, 32, 40):
            policy.record_step(rows, 0.010 + 0.001 * rows)
    # at batch 32 one more row costs 1 ms, a token of a plain step 42/32 ms: worth it above 76%
    assert policy.draft_length(0.9, policy.row_cost(32)) == 2  # 0.9, 0.81 pass; 0.73 does not
    assert policy.draft_length(0.5, policy.row_cost(32)) == 0
    assert policy.draft_length(0.5, policy.row_cost(1)) >= 3  # at batch 1 a row costs 1 of 11 ms
    policy.record_drafts(100, 10)
    assert policy.row_rate(0, 0) < 0.2 and policy.row_rate(50, 50) > 0.8


def test_policy_stops_drafting_at_batch_sizes_where_drafting_steps_produce_tokens_slower():
    policy = DraftPolicy(SpeculationConfig(max_batch=64))
    assert policy.should_draft(32)  # nothing measured yet
    for _ in range(20):
        policy.record_outcome(32, drafted=False, seconds=0.060, tokens=32)  # 1.9 ms a token
        policy.record_outcome(32, drafted=True, seconds=0.090, tokens=40)  # 2.25 ms a token: loses
        policy.record_outcome(1, drafted=False, seconds=0.024, tokens=1)
        policy.record_outcome(1, drafted=True, seconds=0.026, tokens=3)  # wins
    decisions = [policy.should_draft(30) for _ in range(64)]  # 30 rows: the bucket of 17..32
    assert sum(decisions) == 64 // DraftPolicy.EXPLORE  # only the exploring steps draft
    assert all(policy.should_draft(1) for _ in range(10))
    for _ in range(40):  # the workload changes: drafting steps become cheaper per token
        policy.record_outcome(32, drafted=True, seconds=0.070, tokens=48)
    assert policy.should_draft(32)


def test_steps_with_more_rows_than_max_batch_never_draft(embedded, copy_prompts):
    config = SpeculationConfig(max_batch=2)
    with Engine(embedded.model, eos_token_ids=[], dtype=torch.float32, speculation=config) as engine:
        gather(engine, [(copy_prompts[1], 3, SamplingParams(max_tokens=12, temperature=0.0))])
        assert engine.stats["draft_tokens"] == 0
        gather(engine, [(copy_prompts[1], 1, SamplingParams(max_tokens=12, temperature=0.0))])
        assert engine.stats["draft_tokens"] > 0
    assert Engine.__init__.__kwdefaults__["speculation"] is None  # opt-in until it pays in batches too
