"""Tool calls in each template family's own format: what a family's template writes for an
assistant's calls is read back as the same calls, and a constrained reply of a model with that
template is a valid call in that format.

No hub tokenizers are reachable offline, so each family is SmolLM2's tokenizer with a small
template that renders tools and calls the way that family's templates do (Qwen2.5's `<tool_call>`
blocks, Llama 3.1's JSON with "parameters", Mistral's `[TOOL_CALLS]` list); for Mistral, the
marker is also made the special token it is in Mistral's own tokenizers.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hone.chat import parse_reply, render_prompt
from hone.chat.toolformats import HERMES, LLAMA3, MISTRAL, template_tool_format
from hone.engine import Engine
from hone.engine.grammar import GrammarMatchers
from hone.types import SamplingParams

from ..engine.conftest import make_lively

_TURNS = (
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n{{ m.content or '' }}CALLS<|im_end|>\n"
    "{%- elif m.role == 'tool' %}<|im_start|>tool\n{{ m.content }}<|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)
_TOOLS = "{%- if tools %}<|im_start|>system\nTools: {% for t in tools %}{{ t | tojson }}{% endfor %}<|im_end|>\n{%- endif %}"
TEMPLATES = {
    "hermes": _TOOLS + _TURNS.replace(
        "CALLS", '{%- for c in m.tool_calls %}<tool_call>\n{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}'
    ),
    "llama3": _TOOLS + _TURNS.replace(
        "CALLS", '{%- for c in m.tool_calls %}{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}{% endfor %}'
    ),
    "mistral": _TOOLS + _TURNS.replace(
        "CALLS", "[TOOL_CALLS][{%- for c in m.tool_calls %}{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}{{ ', ' if not loop.last }}{% endfor %}]"
    ),
}
FORMATS = {"hermes": HERMES, "llama3": LLAMA3, "mistral": MISTRAL}
WEATHER = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city", "days"]}},
}
TIME = {"type": "function", "function": {"name": "time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
# bounded strings: the lively random model otherwise writes a string until max_tokens
SHORT = {"type": "function", "function": {"name": "time", "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 6}}, "required": ["zone"]}}}
SHORT_WEATHER = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 6}, "days": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["city", "days"]}},
}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def family_tokenizer(tokenizer, family: str, special_marker: bool = False):
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = TEMPLATES[family]
    if special_marker:
        tokenizer.add_special_tokens({"additional_special_tokens": ["[TOOL_CALLS]"]})
    return tokenizer


def test_the_format_is_chosen_from_the_template(tokenizer):
    for family, fmt in FORMATS.items():
        assert template_tool_format(TEMPLATES[family]) is fmt
    assert template_tool_format(tokenizer.chat_template) is None  # SmolLM2's ChatML knows no tools: taught
    assert template_tool_format("{{ messages }} {{ tools }}") is HERMES  # tool-aware, of no known family


@pytest.mark.parametrize("family", FORMATS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arguments=st.dictionaries(st.text(min_size=1, max_size=8), JSON_VALUES, max_size=4), second=st.booleans())
def test_what_the_template_writes_for_calls_parses_back_to_the_same_calls(tokenizer, family, arguments, second):
    templated = family_tokenizer(tokenizer, family)
    calls = [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": json.dumps(arguments)}}]
    if second and family != "llama3":  # Llama 3 writes one call per turn
        calls.append({"id": "call_2", "type": "function", "function": {"name": "time", "arguments": json.dumps({"zone": "UTC"})}})
    messages = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": None, "tool_calls": calls}]
    rendered = render_prompt(templated, messages[:1], tools=[WEATHER, TIME])
    assert rendered.native_tools and rendered.tool_format is FORMATS[family]
    text = templated.apply_chat_template([{**m, "tool_calls": [{"type": "function", "function": {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}} for c in m.get("tool_calls", [])]} for m in messages], tokenize=False)
    reply = text.split("<|im_start|>assistant\n")[-1].split("<|im_end|>")[0]
    parsed = parse_reply(reply, {"weather", "time"}, rendered.tool_format)
    assert parsed.error is None, (reply, parsed.error)
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed.tool_calls] == [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls
    ]


@pytest.mark.parametrize(
    "fmt, text, calls, content",
    [
        (LLAMA3, '<|python_tag|>{"name": "time", "parameters": {"zone": "UTC"}}', [("time", {"zone": "UTC"})], ""),
        (LLAMA3, '{"name": "time", "parameters": {"zone": "UTC"}}; {"name": "weather", "parameters": {"city": "Oslo", "days": 1}}', [("time", {"zone": "UTC"}), ("weather", {"city": "Oslo", "days": 1})], ""),
        (LLAMA3, '{"answer": 42}', [], '{"answer": 42}'),  # JSON content, not a call
        (LLAMA3, "It is sunny.", [], "It is sunny."),
        (MISTRAL, 'Let me check. [TOOL_CALLS][{"name": "time", "arguments": {"zone": "UTC"}}]', [("time", {"zone": "UTC"})], "Let me check."),
        (MISTRAL, ' [{"name": "time", "arguments": {"zone": "UTC"}}]', [("time", {"zone": "UTC"})], ""),  # the marker was a skipped special token
        (MISTRAL, '[TOOL_CALLS]time[ARGS]{"zone": "UTC"}[TOOL_CALLS]weather[ARGS]{"city": "Oslo", "days": 2}', [("time", {"zone": "UTC"}), ("weather", {"city": "Oslo", "days": 2})], ""),
        (MISTRAL, "[1, 2] are numbers", [], "[1, 2] are numbers"),
    ],
)
def test_each_formats_variants_parse(fmt, text, calls, content):
    parsed = parse_reply(text, {"weather", "time"}, fmt)
    assert parsed.error is None
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed.tool_calls] == calls
    assert parsed.content == content


@pytest.mark.parametrize("fmt, text", [(LLAMA3, '{"name": "time", "parameters": {"zone": '), (MISTRAL, '[TOOL_CALLS][{"name": "nosuch", "arguments": {}}]'), (MISTRAL, "[TOOL_CALLS]time[ARGS]{oops")])
def test_a_broken_call_in_any_format_is_an_error_not_content_calls(fmt, text):
    parsed = parse_reply(text, {"weather", "time"}, fmt)
    assert parsed.error and not parsed.tool_calls and parsed.content == text.strip()


@pytest.mark.parametrize("family, special_marker", [("hermes", False), ("llama3", False), ("mistral", False), ("mistral", True)])
def test_a_required_call_is_sampled_valid_in_the_templates_format(tokenizer, tiny, family, special_marker):
    templated = family_tokenizer(tokenizer, family, special_marker)
    model = copy.deepcopy(tiny.model)
    model.resize_token_embeddings(len(templated))  # room for the added special token
    model = make_lively(model, seed=3)
    rendered = render_prompt(templated, [{"role": "user", "content": "Weather in Oslo?"}], tools=[SHORT_WEATHER, SHORT], tool_choice="required")
    if special_marker:
        assert f"<[{templated.convert_tokens_to_ids('[TOOL_CALLS]')}]>" in rendered.grammar  # the token itself, not its spelling
    grammars = GrammarMatchers(templated, model.config.vocab_size, [templated.eos_token_id])
    with Engine(model, eos_token_ids=[templated.eos_token_id], dtype=torch.float32, grammars=grammars) as engine:
        samples = engine.sample_sync(rendered.tokens, 3, SamplingParams(max_tokens=400, temperature=1.0, seed=0, grammar=rendered.grammar))
    for sample in samples:
        assert sample.finish_reason == "stop", templated.decode(sample.tokens)
        text = templated.decode(sample.tokens, skip_special_tokens=True)
        parsed = parse_reply(text, rendered.tool_names, rendered.tool_format)
        assert parsed.error is None and parsed.tool_calls, text
        for call in parsed.tool_calls:
            arguments = json.loads(call["function"]["arguments"])
            assert set(arguments) == ({"city", "days"} if call["function"]["name"] == "weather" else {"zone"})


@pytest.mark.parametrize("family, special_marker", [("hermes", False), ("mistral", False), ("mistral", True)])
def test_under_auto_a_call_may_follow_text_and_text_alone_is_fine(tokenizer, family, special_marker):
    """The grammar must accept what the template's model writes: text, then a call in its format."""
    templated = family_tokenizer(tokenizer, family, special_marker)
    rendered = render_prompt(templated, [{"role": "user", "content": "Time?"}], tools=[SHORT], tool_choice="auto")
    grammars = GrammarMatchers(templated, len(templated), [templated.eos_token_id])
    call = FORMATS[family].write("time", {"zone": "UTC"})
    for reply in ["It is late.", "Let me check. " + call]:
        matcher = grammars.compile(rendered.grammar)
        tokens = templated.encode(reply, add_special_tokens=False) + [templated.eos_token_id]
        assert all(matcher.consume_token(t) for t in tokens), (reply, matcher.get_error())
        parsed = parse_reply(templated.decode(tokens, skip_special_tokens=True), {"time"}, rendered.tool_format)
        assert parsed.error is None and len(parsed.tool_calls) == (reply != "It is late.")


DIGITS = "1" * 5000
ATTEMPTS = {  # calls each format's model might write that cannot be taken as calls
    "hermes": [HERMES.write("time", {"zone": "UTC"}).replace('"UTC"', DIGITS), "<tool_call>"],
    "llama3": [LLAMA3.write("time", {"zone": "UTC"}).replace('"UTC"', DIGITS)],
    "mistral": [MISTRAL.write("time", {"zone": "UTC"}).replace('"UTC"', DIGITS), f'[TOOL_CALLS]time[ARGS]{{"zone": {DIGITS}}}', "[TOOL_CALLS]", "[TOOL_CALLS][]"],
}


@pytest.mark.parametrize("fmt", [HERMES, LLAMA3, MISTRAL])
def test_no_model_output_makes_parsing_raise(fmt):
    """Python's json raises a plain ValueError past 4300 digits, and a looping model writes that;
    a broken attempt in the format's own form is an error, anything else is content."""
    for family, texts in ATTEMPTS.items():
        for text in texts:
            parsed = parse_reply(text, {"time"}, fmt)
            assert not parsed.tool_calls
            assert bool(parsed.error) == (family == fmt.name), (fmt.name, text[:40])
