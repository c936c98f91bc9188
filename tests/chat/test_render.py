import json

import pytest

from hone.chat import render_prompt
from hone.errors import InvalidRequestError

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def text(tokenizer, rendered):
    return tokenizer.decode(rendered.tokens)


def test_plain_chat_uses_the_models_own_template(tokenizer):
    messages = [{"role": "user", "content": "Hi there"}]
    rendered = render_prompt(tokenizer, messages)
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert rendered.tokens == list(expected)
    assert rendered.tool_names is None and rendered.grammar is None


def test_tools_are_described_in_the_system_prompt_when_the_template_has_no_tool_support(tokenizer):
    rendered = render_prompt(tokenizer, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Paris?"}], [WEATHER])
    prompt = text(tokenizer, rendered)
    assert prompt.startswith("<|im_start|>system\nBe brief.")
    assert "- get_weather(city: string): Weather in a city" in prompt  # a signature line, not a JSON schema
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "..."}}</tool_call>' in prompt
    assert rendered.tool_names == {"get_weather"}
    assert prompt.endswith("<|im_start|>assistant\n")


def test_tool_choice_none_hides_the_tools(tokenizer):
    rendered = render_prompt(tokenizer, [{"role": "user", "content": "Paris?"}], [WEATHER], "none")
    assert "get_weather" not in text(tokenizer, rendered)
    assert rendered.tool_names is None


def test_tool_choice_is_kept_by_a_grammar_not_by_text_in_the_prompt(tokenizer):
    auto = render_prompt(tokenizer, [{"role": "user", "content": "Paris?"}], [WEATHER])
    required = render_prompt(tokenizer, [{"role": "user", "content": "Paris?"}], [WEATHER], "required")
    named = render_prompt(tokenizer, [{"role": "user", "content": "Paris?"}], [WEATHER], {"type": "function", "function": {"name": "get_weather"}})
    for rendered in (auto, required, named):
        assert text(tokenizer, rendered).endswith("<|im_start|>assistant\n")  # the reply starts free; the grammar steers it
        assert rendered.grammar is not None and '"const": "get_weather"' in rendered.grammar
    assert len({auto.grammar, required.grammar, named.grammar}) == 3


def test_assistant_tool_calls_and_tool_results_round_trip_into_the_prompt(tokenizer):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21C"},
    ]
    prompt = text(tokenizer, render_prompt(tokenizer, messages, [WEATHER]))
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in prompt
    assert "<tool_response>\nsunny, 21C\n</tool_response>" in prompt


def test_content_parts_are_joined(tokenizer):
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}]
    assert "Hello world" in text(tokenizer, render_prompt(tokenizer, [{"role": "user", "content": parts}]))


@pytest.mark.parametrize(
    "messages, tools, tool_choice, fragment",
    [
        ([], None, "auto", "at least one message"),
        ([{"role": "wizard", "content": "x"}], None, "auto", "role must be one of"),
        ([{"role": "user", "content": 5}], None, "auto", "must be a string"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], None, "auto", "text parts"),
        ([{"role": "user", "content": "x"}], None, "required", "needs 'tools'"),
        ([{"role": "user", "content": "x"}], [WEATHER], {"type": "function", "function": {"name": "nope"}}, "not in 'tools'"),
        ([{"role": "user", "content": "x"}], [{"type": "function", "function": {}}], "auto", "function.name"),
        ([{"role": "user", "content": "x"}], None, "sometimes", "tool_choice must be"),
    ],
)
def test_bad_requests_get_one_clear_sentence(tokenizer, messages, tools, tool_choice, fragment):
    with pytest.raises(InvalidRequestError, match=fragment):
        render_prompt(tokenizer, messages, tools, tool_choice)
