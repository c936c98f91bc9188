"""SFT on demonstrations: each assistant reply is trained as the exact tokens the sampler would
produce for it, and a few steps on the tiny model make greedy sampling reproduce a demonstration."""

from __future__ import annotations

import asyncio
import copy
import gc
import json

import pytest

from hone.backends import LocalBackend
from hone.chat import parse_reply
from hone.chat.render import render_prompt
from hone.engine.sampling import find_stop_cut, stop_window
from hone.rl.sft import Demonstration, demonstration_datums, supervised_warm_start
from hone.types import Datum

FIND = {
    "type": "function",
    "function": {"name": "find", "description": "Search mail", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}},
}
STOP = ["</tool_call>"]  # what the inbox agent sends: one call per reply


def call(name: str, arguments: dict, call_id: str = "c1") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def search_then_answer(answer: str = "Bergen") -> list[dict]:
    return [
        {"role": "system", "content": "Answer from mail."},
        {"role": "user", "content": "Where is the meeting?"},
        {"role": "assistant", "content": "", "tool_calls": [call("find", {"q": "meeting"})]},
        {"role": "tool", "tool_call_id": "c1", "content": "The meeting is in Bergen."},
        {"role": "assistant", "content": answer},
    ]


def sequence(datum: Datum) -> list[int]:
    return [*datum.input_tokens, datum.target_tokens[-1]]


def trained_spans(datum: Datum) -> list[tuple[int, int]]:
    """[start, end) of each run of weighted tokens, as positions in `sequence(datum)`."""
    spans: list[tuple[int, int]] = []
    for position, weight in enumerate(datum.weights, start=1):  # weights[t] belongs to token t + 1
        assert weight in (0.0, 1.0)
        if weight and spans and spans[-1][1] == position:
            spans[-1] = (spans[-1][0], position + 1)
        elif weight:
            spans.append((position, position + 1))
    return spans


# --------------------------------------------------------------------------- what is trained
def test_each_reply_is_trained_as_its_text_and_end_and_the_turns_form_one_sequence(tokenizer):
    messages = search_then_answer()
    [datum] = demonstration_datums(tokenizer, Demonstration(messages=messages, tools=[FIND], stop=STOP))
    tokens = sequence(datum)
    (call_start, call_end), (answer_start, answer_end) = trained_spans(datum)
    # the tool call up to and including the stop text (the sampler stops there: no end-of-turn token)
    assert tokenizer.decode(tokens[call_start:call_end]) == '<tool_call>{"name": "find", "arguments": {"q": "meeting"}}</tool_call>'
    # the answer and the end-of-turn token the sampler stops on (not the template's newline after it)
    assert tokenizer.decode(tokens[answer_start:answer_end]) == "Bergen<|im_end|>"
    assert tokens[answer_end - 1] == tokenizer.eos_token_id and answer_end == len(tokens)
    # what comes before each reply is the server's prompt for it, token for token, and weight 0
    first = render_prompt(tokenizer, messages[:2], tools=[FIND]).tokens
    second = render_prompt(tokenizer, messages[:4], tools=[FIND]).tokens
    assert tokens[:call_start] == first
    assert tokens[:answer_start] == second
    assert second[:call_end] == tokens[:call_end]  # the second prompt continues the first turn verbatim
    assert tokenizer.decode(second[call_end:]).startswith("<|im_end|>\n<|im_start|>user\n<tool_response>")
    assert sum(datum.weights) == (call_end - call_start) + (answer_end - answer_start)


def test_without_a_stop_string_a_tool_call_ends_with_the_end_of_turn_token(tokenizer):
    [datum] = demonstration_datums(tokenizer, Demonstration(messages=search_then_answer(), tools=[FIND]))
    (start, end), _ = trained_spans(datum)
    assert tokenizer.decode(sequence(datum)[start:end]) == '<tool_call>{"name": "find", "arguments": {"q": "meeting"}}</tool_call><|im_end|>'


def test_the_sampler_would_stop_exactly_where_each_trained_reply_ends(tokenizer):
    """Replay each trained reply through the engine's stop rules (end-of-sequence ids, then stop
    strings): it stops at the reply's last token, and what it returns parses as the demonstrated reply."""
    [datum] = demonstration_datums(tokenizer, Demonstration(messages=search_then_answer(), tools=[FIND], stop=STOP))
    tokens = sequence(datum)

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)  # the engine's decode (LocalBackend)

    returned = []
    for start, end in trained_spans(datum):
        reply = tokens[start:end]
        for n in range(1, len(reply) + 1):
            stops_here = reply[n - 1] == tokenizer.eos_token_id or find_stop_cut(decode, reply[:n], tuple(STOP), stop_window(tuple(STOP))) is not None
            assert stops_here == (n == len(reply))
        cut = find_stop_cut(decode, reply, tuple(STOP), stop_window(tuple(STOP)))
        returned.append(reply if cut is None else reply[:cut])
    parsed = parse_reply(decode(returned[0]), {"find"})
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed.tool_calls] == [("find", {"q": "meeting"})]
    assert decode(returned[1]) == "Bergen"


def test_a_turn_rendered_without_tools_trains_as_its_own_sequence(tokenizer):
    """tool_choice "none" renders no tool prompt, so that turn's prompt does not continue the first."""
    messages = search_then_answer()
    demo = Demonstration(messages=messages, tools=[FIND], tool_choice=["auto", "none"], stop=STOP)
    first, second = demonstration_datums(tokenizer, demo)
    assert sequence(second)[: trained_spans(second)[0][0]] == render_prompt(tokenizer, messages[:4], tools=[FIND], tool_choice="none").tokens
    assert [len(trained_spans(d)) for d in (first, second)] == [1, 1]


# --------------------------------------------------------------------------- what is refused
def test_a_reply_that_goes_on_after_a_stop_string_is_refused(tokenizer):
    messages = search_then_answer()
    messages[2]["tool_calls"].append(call("find", {"q": "Bergen"}, "c2"))
    with pytest.raises(ValueError, match="stop string"):
        demonstration_datums(tokenizer, Demonstration(messages=messages, tools=[FIND], stop=STOP))


def test_a_template_that_is_not_prefix_stable_is_refused(tokenizer):
    # like Qwen3's: the generation prompt opens a thinking block that the rendered reply does not have
    thinking = copy.deepcopy(tokenizer)
    thinking.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
    )
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    with pytest.raises(ValueError, match="prefix-stable"):
        demonstration_datums(thinking, Demonstration(messages=messages))


def test_a_demonstration_must_end_with_a_reply_and_give_one_tool_choice_per_reply():
    with pytest.raises(ValueError, match="end with an assistant message"):
        Demonstration(messages=search_then_answer()[:4])
    with pytest.raises(ValueError, match="3 choices for 2 assistant messages"):
        Demonstration(messages=search_then_answer(), tool_choice=["auto", "auto", "none"])


# --------------------------------------------------------------------------- training
class RecordingBackend:
    """Just the calls supervised_warm_start makes, recording each step's batch."""

    def __init__(self, tokenizer):
        self._tokenizer, self.batches = tokenizer, []

    def tokenizer(self, name):
        return self._tokenizer

    async def forward_backward_optim_step(self, name, datums, loss, loss_config, adam):
        assert (name, loss, adam.learning_rate) == ("m", "cross_entropy", 0.5)
        self.batches.append([sequence(d) for d in datums])
        return {"loss": 1.0, "tokens": float(sum(sum(d.weights) for d in datums))}, {"lr": adam.learning_rate}


def test_every_epoch_shows_each_demonstration_once_in_a_seeded_order(tokenizer):
    demos = [Demonstration(messages=search_then_answer(f"Room {i}")) for i in range(5)]
    by_sequence = {tuple(sequence(demonstration_datums(tokenizer, d)[0])): i for i, d in enumerate(demos)}

    def orders(seed: int) -> list[list[int]]:
        backend = RecordingBackend(tokenizer)
        history = asyncio.run(supervised_warm_start(backend, "m", None, demos, epochs=3, learning_rate=0.5, batch_size=2, seed=seed))
        assert [h["epoch"] for h in history] == [0, 0, 0, 1, 1, 1, 2, 2, 2] and [h["demonstrations"] for h in history[:3]] == [2, 2, 1]
        assert all(h["tokens"] > 0 and h["optim/lr"] == 0.5 for h in history)
        shown = [by_sequence[tuple(s)] for batch in backend.batches for s in batch]
        return [shown[:5], shown[5:10], shown[10:]]

    epochs = orders(seed=1)
    assert all(sorted(epoch) == list(range(5)) for epoch in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled every epoch
    assert orders(seed=1) == epochs and orders(seed=2) != epochs


@pytest.fixture(scope="module")
def tiny_backend():
    backend = LocalBackend()
    backend.add_model("sft", "tiny", lora_rank=0)
    # every forward_backward runs a full gc.collect (hone.memory), ~0.3 s in a process
    # holding torch and transformers; freezing what exists now keeps this test's steps fast
    gc.freeze()
    yield backend
    gc.unfreeze()
    backend.close()


def test_a_few_steps_make_greedy_sampling_reproduce_the_demonstration(tiny_backend):
    messages = search_then_answer()
    demo = Demonstration(messages=messages, tools=[FIND], stop=STOP)
    history = asyncio.run(supervised_warm_start(tiny_backend, "sft", None, [demo], epochs=80, learning_rate=1e-2, batch_size=1, seed=0))
    assert history[0]["tokens"] == history[-1]["tokens"] == sum(demonstration_datums(tiny_backend.tokenizer("sft"), demo)[0].weights)
    assert history[0]["loss"] > 8.0 and history[-1]["loss"] < 0.1  # from a random model's ~ln(49152) to near memorised

    async def reply(upto: int):
        client = tiny_backend.openai_client()
        return await client.chat.completions.create(model="sft", messages=messages[:upto], tools=[FIND], stop=STOP, temperature=0, max_tokens=40)

    [datum] = demonstration_datums(tiny_backend.tokenizer("sft"), demo)
    tokens = sequence(datum)
    (call_start, call_end), (answer_start, answer_end) = trained_spans(datum)
    searched = asyncio.run(reply(2))
    [tool_call] = searched.choices[0].message.tool_calls
    assert (tool_call.function.name, json.loads(tool_call.function.arguments)) == ("find", {"q": "meeting"})
    # the server returns the trained tokens less the stop text it cut
    assert searched.model_extra["prompt_token_ids"] == tokens[:call_start]
    sampled = searched.choices[0].model_extra["token_ids"]
    assert sampled == tokens[call_start : call_start + len(sampled)]
    assert tiny_backend.tokenizer("sft").decode(tokens[call_start + len(sampled) : call_end]) == "</tool_call>"
    answered = asyncio.run(reply(4))
    assert answered.choices[0].message.content == "Bergen" and answered.choices[0].finish_reason == "stop"
    assert answered.choices[0].model_extra["token_ids"] == tokens[answer_start:answer_end]
