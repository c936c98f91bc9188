"""Constrained sampling: grammars, logit biases and penalties shape the draw, never the reported logprob."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest
import torch
import torch.nn.functional as F

from hone.engine import Engine
from hone.engine.grammar import GrammarMatchers
from hone.errors import InvalidRequestError
from hone.types import SamplingParams

from .test_engine import gather

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "alerts": {"type": "boolean"},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}


def json_grammar(schema: dict) -> str:
    """JSON for `schema` with fixed separators: with free whitespace a random model writes mostly blanks."""
    layout = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    return "start: %json " + json.dumps({**schema, "x-guidance": layout})


@pytest.fixture(scope="module")
def constrained(lively, tokenizer):
    """An fp32 engine with grammar support over the lively tiny model; eos ends a finished grammar."""
    grammars = GrammarMatchers(tokenizer, lively.config.vocab_size, [tokenizer.eos_token_id])
    engine = Engine(lively, eos_token_ids=[tokenizer.eos_token_id], decode=tokenizer.decode, dtype=torch.float32, grammars=grammars)
    yield engine
    engine.close()


def model_logprobs(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """What a trainer computes: log_softmax of the full forward's fp32 logits at each sampled token."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0].float()
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return F.log_softmax(logits[positions], dim=-1).gather(1, torch.tensor(completion).unsqueeze(1)).squeeze(1)


def test_every_constrained_sample_parses_and_validates_even_from_a_random_model(constrained, tokenizer, prompts):
    params = SamplingParams(max_tokens=120, temperature=1.0, seed=3, grammar=json_grammar(WEATHER))
    samples = constrained.sample_sync(prompts[1], 16, params)
    for sample in samples:
        assert sample.finish_reason == "stop"
        jsonschema.validate(json.loads(tokenizer.decode(sample.tokens, skip_special_tokens=True)), WEATHER)
        assert len(sample.forced) == len(sample.tokens)
    # the opening brace and the first key are the only tokens the grammar allows at their place
    assert all(s.forced[0] for s in samples)
    assert 0 < sum(sum(s.forced) for s in samples) < sum(len(s.tokens) for s in samples)


def test_constrained_logprobs_are_the_models_own_so_the_trainer_recomputes_them(constrained, lively, prompts):
    params = SamplingParams(max_tokens=120, temperature=0.8, top_p=0.9, seed=5, grammar=json_grammar(WEATHER))
    for sample in constrained.sample_sync(prompts[2], 4, params):
        trainer = model_logprobs(lively, prompts[2], sample.tokens)
        ratio = (trainer - torch.tensor(sample.logprobs)).exp()
        assert (ratio - 1).abs().max() < 1e-3


def test_unconstrained_rows_sharing_a_batch_with_constrained_ones_are_unchanged(constrained, prompts):
    plain = SamplingParams(max_tokens=16, temperature=1.0, seed=11)
    [alone] = constrained.sample_sync(prompts[0], 1, plain)
    grammar = SamplingParams(max_tokens=60, temperature=1.0, seed=12, grammar=json_grammar(WEATHER))
    batched = gather(constrained, [(prompts[3], 3, grammar), (prompts[0], 1, plain), (prompts[1], 2, grammar)])
    assert batched[1][0].tokens == alone.tokens
    assert batched[1][0].forced is None
    assert batched[1][0].logprobs == pytest.approx(alone.logprobs, abs=1e-5)


def test_a_grammar_may_force_text_then_leave_a_choice(constrained, tokenizer, prompts):
    grammar = 'start: "<tool_call>" ("yes" | "no") "</tool_call>"'
    [sample] = constrained.sample_sync(prompts[0], 1, SamplingParams(max_tokens=30, temperature=1.0, seed=1, grammar=grammar))
    text = tokenizer.decode(sample.tokens, skip_special_tokens=True)
    assert text in ("<tool_call>yes</tool_call>", "<tool_call>no</tool_call>")
    opening = len(tokenizer.encode("<tool_call>", add_special_tokens=False))
    assert all(sample.forced[:opening])


def test_bad_grammars_are_refused_before_any_compute(constrained, prompts):
    before = constrained.stats["requests"]
    with pytest.raises(InvalidRequestError, match="grammar") as error:
        constrained.sample_sync(prompts[0], 1, SamplingParams(grammar="start: nosuchrule"))
    assert error.value.param == "grammar"
    with pytest.raises(InvalidRequestError, match="grammar"):
        constrained.sample_sync(prompts[0], 1, SamplingParams(grammar='start: %json {"type": "nosuchtype"}'))
    assert constrained.stats["requests"] == before


def test_an_engine_without_grammar_support_says_how_to_get_it(engine32, prompts):
    with pytest.raises(InvalidRequestError, match="grammars=GrammarMatchers"):
        engine32.sample_sync(prompts[0], 1, SamplingParams(grammar='start: "x"'))


# --------------------------------------------------------------------------- biases and penalties
def test_logit_bias_steers_the_draw_but_the_reported_logprob_stays_the_models(engine32, lively, prompts):
    target = 1234
    params = SamplingParams(max_tokens=6, temperature=0.0, logit_bias=((target, 100.0),))
    [sample] = engine32.sample_sync(prompts[1], 1, params)
    assert sample.tokens == [target] * 6
    trainer = model_logprobs(lively, prompts[1], sample.tokens)
    assert sample.logprobs == pytest.approx(trainer.tolist(), abs=1e-4)
    assert max(sample.logprobs) < -1.0  # the unbiased model would rarely pick it


def test_frequency_and_presence_penalties_discourage_repeats(engine32, lively, prompts):
    target = 1234  # a bias of 30 makes greedy repeat it; penalties growing with each repeat end that
    [plain] = engine32.sample_sync(prompts[0], 1, SamplingParams(max_tokens=24, temperature=0.0, logit_bias=((target, 30.0),)))
    assert plain.tokens.count(target) == 24
    penalised_params = SamplingParams(max_tokens=24, temperature=0.0, logit_bias=((target, 30.0),), frequency_penalty=2.0, presence_penalty=2.0)
    [penalised] = engine32.sample_sync(prompts[0], 1, penalised_params)
    assert 5 < penalised.tokens.count(target) < 16
    assert penalised.tokens[0] == target  # nothing sampled yet: no penalty on the first token
    trainer = model_logprobs(lively, prompts[0], penalised.tokens)
    assert penalised.logprobs == pytest.approx(trainer.tolist(), abs=1e-4)


@pytest.mark.parametrize(
    "params, param",
    [
        (SamplingParams(logit_bias=((10**9, 1.0),)), "logit_bias"),
        (SamplingParams(logit_bias=((5, 101.0),)), "logit_bias"),
        (SamplingParams(presence_penalty=2.5), "presence_penalty"),
        (SamplingParams(frequency_penalty=-3.0), "frequency_penalty"),
    ],
)
def test_out_of_range_biases_and_penalties_name_the_parameter(engine32, prompts, params, param):
    with pytest.raises(InvalidRequestError) as error:
        engine32.sample_sync(prompts[0], 1, params)
    assert error.value.param == param


# --------------------------------------------------------------------------- hearing tokens as they come
def test_on_tokens_hears_every_token_once_in_order_and_never_one_a_stop_string_takes_back(constrained, tokenizer, prompts):
    heard: dict[int, list[int]] = {0: [], 1: []}
    forced: dict[int, list[bool]] = {0: [], 1: []}

    def on_tokens(delta):
        heard[delta.index].extend(delta.tokens)
        forced[delta.index].extend(delta.forced)

    params = SamplingParams(max_tokens=80, temperature=1.0, seed=4, grammar=json_grammar(WEATHER), stop=('"unit"',))

    async def main():
        return await constrained.sample(prompts[1], 2, params, on_tokens=on_tokens)

    samples = asyncio.run(main())
    for index, sample in enumerate(samples):
        assert heard[index] == sample.tokens and forced[index] == sample.forced
        assert '"unit"' not in tokenizer.decode(sample.tokens)
