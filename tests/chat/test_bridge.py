"""The bridge: a later turn's prompt is the earlier prompt, the sampled completion verbatim, then the
template's text for what came after the reply (hone.chat.bridge). Built on the embedded model's
tokenizer with "sampled" completions made by tokenizing text, so no model runs."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hone.chat import parse_reply, render_prompt
from hone.chat.bridge import SampledCall, bridged_tokens, extends
from hone.chat.render import RenderedPrompt
from hone.models import load_tokenizer

CALC = {
    "type": "function",
    "function": {"name": "calc", "parameters": {"type": "object", "properties": {"e": {"type": "string"}}, "required": ["e"]}},
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
}
QUESTION = {"role": "user", "content": "What is 2+2?"}

# ChatML with tools written by the template itself (as Qwen's does), to exercise the native path
NATIVE_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n# Tools\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content or '' }}"
    "{% for c in m.tool_calls or [] %}<tool_call>\n{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}\n</tool_call>{% endfor %}"
    "<|im_end|>\n"
    "{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def native():
    tokenizer = load_tokenizer()  # a fresh copy: the session's tokenizer keeps its own template
    tokenizer.chat_template = NATIVE_TEMPLATE
    return tokenizer


def im_end(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<|im_end|>")


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def sampled(tokenizer, messages, reply_text, reply=None, tools=None, eos=True, prompt=None) -> SampledCall:
    """An earlier call: its prompt rendered from `messages`, `reply_text` as what the model sampled
    (closed by <|im_end|> unless `eos` is False), `reply` (default: that text) as the client got it."""
    prompt = prompt or render_prompt(tokenizer, messages, tools)
    tokens = encode(tokenizer, reply_text) + ([im_end(tokenizer)] if eos else [])
    finish = "stop" if eos else "length"
    return SampledCall(prompt, reply if reply is not None else {"role": "assistant", "content": reply_text}, tokens, finish)


def continued(prompt: RenderedPrompt, tokens: list[int]) -> RenderedPrompt:
    """The later prompt as a rollout keeps it: rendered, with the bridged tokens (PendingCall)."""
    return RenderedPrompt(**{**prompt.__dict__, "tokens": tokens})


# --------------------------------------------------------------------------- plain text
def test_a_plain_text_turn_bridges_to_exactly_the_fresh_rendering(tokenizer):
    earlier = sampled(tokenizer, [QUESTION], "It is 4.")
    history = [QUESTION, {"role": "assistant", "content": "It is 4."}, {"role": "user", "content": "And 3+3?"}]
    later = render_prompt(tokenizer, history)
    assert extends(later, earlier)
    bridged = bridged_tokens(tokenizer, later, earlier)
    assert bridged == later.tokens
    assert bridged[: len(earlier.prompt.tokens) + len(earlier.completion_tokens)] == earlier.prompt.tokens + earlier.completion_tokens


def test_bridges_chain_over_three_turns_with_a_system_prompt(tokenizer):
    first = [{"role": "system", "content": "Be brief."}, QUESTION]
    call = sampled(tokenizer, first, "4")
    history = [*first, {"role": "assistant", "content": "4"}, {"role": "user", "content": "Times 3?"}]
    second = render_prompt(tokenizer, history)
    tokens = bridged_tokens(tokenizer, second, call)
    assert tokens == second.tokens
    call = sampled(tokenizer, None, "12", prompt=continued(second, tokens))
    history = [*history, {"role": "assistant", "content": "12"}, {"role": "user", "content": "Thanks."}]
    third = render_prompt(tokenizer, history)
    assert bridged_tokens(tokenizer, third, call) == third.tokens


def test_an_empty_reply_bridges_too(tokenizer):
    earlier = sampled(tokenizer, [QUESTION], "")  # the model sampled <|im_end|> at once
    later = render_prompt(tokenizer, [QUESTION, {"role": "assistant", "content": ""}, {"role": "user", "content": "Well?"}])
    assert bridged_tokens(tokenizer, later, earlier) == later.tokens


# --------------------------------------------------------------------------- tool calls
def tool_call_turn(tokenizer, reply_content, echo_content, tools=(CALC,)):
    """A sampled tool call with compact JSON; the client was sent the parsed call (arguments
    re-dumped, content `reply_content`) and echoes it with other spacing, another id and
    `echo_content`, then a tool result."""
    sampled_text = '<tool_call>{"name":"calc","arguments":{"e":"2+2"}}</tool_call>'
    parsed = parse_reply(sampled_text, {"calc"})
    assert parsed.error is None and parsed.tool_calls[0]["function"]["arguments"] == '{"e": "2+2"}'
    reply = {"role": "assistant", "content": reply_content, "tool_calls": parsed.tool_calls}
    earlier = sampled(tokenizer, [QUESTION], sampled_text, reply=reply, tools=list(tools))
    echo = {
        "role": "assistant",
        "content": echo_content,
        "tool_calls": [{"id": "call_renamed_by_client", "type": "function", "function": {"name": "calc", "arguments": '{"e":"2+2"}'}}],
    }
    history = [QUESTION, echo, {"role": "tool", "tool_call_id": "call_renamed_by_client", "content": "4"}]
    return earlier, render_prompt(tokenizer, history, list(tools))


@pytest.mark.parametrize("reply_content, echo_content", [(None, ""), ("", None), (None, None)])
def test_a_tool_call_continues_with_the_sampled_tokens_not_the_rerendered_ones(tokenizer, reply_content, echo_content):
    earlier, later = tool_call_turn(tokenizer, reply_content, echo_content)
    bridged = bridged_tokens(tokenizer, later, earlier)
    assert bridged is not None
    head = earlier.prompt.tokens + earlier.completion_tokens
    assert bridged[: len(head)] == head  # the sampled compact JSON, verbatim
    assert bridged != later.tokens  # the re-rendering writes `{"name": "calc", ...}`: not what was sampled
    assert '{"name": "calc", "arguments": {"e": "2+2"}}' in tokenizer.decode(later.tokens)
    tail = tokenizer.decode(bridged[len(head) :])
    assert tail == "\n<|im_start|>user\n<tool_response>\n4\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    # the rendered prompt and the bridged one agree on everything but the reply itself
    rendered_tail = tokenizer.decode(later.tokens)
    assert rendered_tail.endswith(tail)


def test_a_tool_call_with_the_templates_own_tools_bridges_with_the_sampled_tokens(native):
    earlier, later = tool_call_turn(native, None, "")
    assert later.native_tools and later.tools is not None
    bridged = bridged_tokens(native, later, earlier)
    assert bridged is not None
    head = earlier.prompt.tokens + earlier.completion_tokens
    assert bridged[: len(head)] == head
    assert native.decode(bridged[len(head) :]) == "\n<|im_start|>user\n<tool_response>\n4\n</tool_response><|im_end|>\n<|im_start|>assistant\n"


def test_new_tools_in_the_later_request_do_not_extend_the_earlier_prompt(tokenizer, native):
    for tok in (tokenizer, native):  # the tools in the system prompt, or the template's own
        earlier, _ = tool_call_turn(tok, None, "")
        _, later = tool_call_turn(tok, None, "", tools=(CALC, WEATHER))
        assert not extends(later, earlier)
        assert bridged_tokens(tok, later, earlier) is None


# --------------------------------------------------------------------------- cut completions
@pytest.mark.parametrize("reply_text", ["It is 4", "It is 4 and"])
def test_a_completion_cut_without_eos_is_closed_by_the_bridge(tokenizer, reply_text):
    earlier = sampled(tokenizer, [QUESTION], reply_text, eos=False)  # a stop string or the length limit
    history = [QUESTION, {"role": "assistant", "content": reply_text}, {"role": "user", "content": "Go on."}]
    later = render_prompt(tokenizer, history)
    bridged = bridged_tokens(tokenizer, later, earlier)
    assert bridged == later.tokens
    after = bridged[len(earlier.prompt.tokens) + len(earlier.completion_tokens) :]
    assert after[0] == im_end(tokenizer)  # the turn is closed once, right after the sampled tokens
    next_turn = after.index(tokenizer.convert_tokens_to_ids("<|im_start|>"))
    assert after[:next_turn].count(im_end(tokenizer)) == 1


def test_a_sampled_eos_is_not_closed_twice(tokenizer):
    earlier = sampled(tokenizer, [QUESTION], "4")
    later = render_prompt(tokenizer, [QUESTION, {"role": "assistant", "content": "4"}, {"role": "user", "content": "Ok"}])
    bridged = bridged_tokens(tokenizer, later, earlier)
    after = bridged[len(earlier.prompt.tokens) + len(earlier.completion_tokens) :]
    assert after[0] != im_end(tokenizer)
    assert bridged.count(im_end(tokenizer)) == later.tokens.count(im_end(tokenizer))


@pytest.mark.parametrize("last", ["<|im_start|>", "<|endoftext|>"])
def test_a_completion_cut_by_length_right_after_another_special_token_is_closed_by_the_bridge(tokenizer, last):
    earlier = sampled(tokenizer, [QUESTION], "It is", eos=False)
    earlier = SampledCall(earlier.prompt, {"role": "assistant", "content": "It is"}, [*earlier.completion_tokens, tokenizer.convert_tokens_to_ids(last)], "length")
    later = render_prompt(tokenizer, [QUESTION, {"role": "assistant", "content": "It is"}, {"role": "user", "content": "Go on."}])
    bridged = bridged_tokens(tokenizer, later, earlier)
    assert bridged is not None
    head = earlier.prompt.tokens + earlier.completion_tokens
    assert bridged[: len(head)] == head and bridged[len(head)] == im_end(tokenizer)


# --------------------------------------------------------------------------- no bridge
def test_an_edited_reply_is_not_bridged(tokenizer):
    earlier = sampled(tokenizer, [QUESTION], "It is 4.")
    later = render_prompt(tokenizer, [QUESTION, {"role": "assistant", "content": "It is four."}, {"role": "user", "content": "Sure?"}])
    assert extends(later, earlier)  # the same conversation, but not the sampled reply
    assert bridged_tokens(tokenizer, later, earlier) is None


def test_an_edited_tool_call_is_not_bridged(tokenizer):
    earlier, _ = tool_call_turn(tokenizer, None, "")
    edited = {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "calc", "arguments": '{"e": "2+3"}'}}]}
    later = render_prompt(tokenizer, [QUESTION, edited, {"role": "tool", "tool_call_id": "c", "content": "5"}], [CALC])
    assert extends(later, earlier)
    assert bridged_tokens(tokenizer, later, earlier) is None


@pytest.mark.parametrize("eos", [True, False])
def test_a_request_ending_with_the_reply_asks_for_another_turn_after_it(tokenizer, eos):
    # an agent that calls again straight after a reply (say one cut by its length): the reply is
    # closed and a new assistant turn opened, exactly as the template renders that history
    earlier = sampled(tokenizer, [QUESTION], "It is 4.", eos=eos)
    later = render_prompt(tokenizer, [QUESTION, {"role": "assistant", "content": "It is 4."}])
    assert bridged_tokens(tokenizer, later, earlier) == later.tokens


def test_a_different_conversation_does_not_extend(tokenizer):
    earlier = sampled(tokenizer, [QUESTION], "It is 4.")
    same = render_prompt(tokenizer, [QUESTION])  # a retry of the same prompt: nothing more
    other = render_prompt(tokenizer, [{"role": "user", "content": "What is 3+3?"}, {"role": "assistant", "content": "It is 4."}, QUESTION])
    with_system = render_prompt(tokenizer, [{"role": "system", "content": "Be brief."}, QUESTION, {"role": "assistant", "content": "It is 4."}, QUESTION])
    for later in (same, other, with_system):
        assert not extends(later, earlier)
        assert bridged_tokens(tokenizer, later, earlier) is None


# --------------------------------------------------------------------------- property
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from(" \n\t"), max_size=24).filter(lambda t: "<|" not in t)


def stable(tokenizer, text: str) -> bool:
    """Whether `text` tokenizes the same alone as after the assistant header the template writes."""
    header = encode(tokenizer, "assistant\n")
    return encode(tokenizer, "assistant\n" + text) == header + encode(tokenizer, text)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(system=st.none() | TEXT, turns=st.lists(st.tuples(TEXT, TEXT, st.booleans()), min_size=1, max_size=3), last=TEXT)
def test_property_a_stable_sampled_reply_bridges_to_the_fresh_rendering(tokenizer, system, turns, last):
    """Whenever the sampled tokens are the reply's own tokenization (closed by <|im_end|>, or cut
    before it) and re-tokenise the same in place, the bridged prompt is the rendered one, turn
    after turn."""
    assume(all(stable(tokenizer, reply) for _, reply, _ in turns))
    history = [{"role": "system", "content": system}] if system is not None else []
    call = None
    for user, reply, eos in turns:
        history.append({"role": "user", "content": user})
        rendered = render_prompt(tokenizer, history)
        if call is not None:
            tokens = bridged_tokens(tokenizer, rendered, call)
            assert tokens == rendered.tokens
            rendered = continued(rendered, tokens)
        call = sampled(tokenizer, None, reply, eos=eos, prompt=rendered)
        history.append({"role": "assistant", "content": reply})
    history.append({"role": "user", "content": last})
    final = render_prompt(tokenizer, history)
    assert bridged_tokens(tokenizer, final, call) == final.tokens


def test_the_property_sees_texts_that_would_not_tokenize_the_same_in_place(tokenizer):
    """The stability filter is not vacuous, and what it filters out is exactly why the bridge keeps
    the sampled tokens: rendering such a reply afresh gives other tokens than were sampled."""
    examples = ["It is 4.", " leading space", "x", "\n\nnewlines", "  two", "ok\n"]
    assert stable(tokenizer, "It is 4.")
    unstable = [t for t in examples if not stable(tokenizer, t)]
    assert unstable
    for text in unstable:
        earlier = sampled(tokenizer, [QUESTION], text)
        later = render_prompt(tokenizer, [QUESTION, {"role": "assistant", "content": text}, {"role": "user", "content": "?"}])
        bridged = bridged_tokens(tokenizer, later, earlier)
        assert bridged is not None and bridged != later.tokens
        assert tokenizer.decode(bridged) == tokenizer.decode(later.tokens)  # the same text, other tokens
