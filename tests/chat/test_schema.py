"""Request shapes checked up front (hone.chat.schema): valid JSON Schema renders, anything else is
one InvalidRequestError sentence naming the parameter, as OpenAI names it."""

import copy

import pytest

from hone.chat import render_prompt
from hone.errors import InvalidRequestError

ASK = [{"role": "user", "content": "Paris?"}]


def tool(parameters):
    return {"type": "function", "function": {"name": "f", "description": "Do it", "parameters": parameters}}


def prompt(tokenizer, *args):
    return tokenizer.decode(render_prompt(tokenizer, *args).tokens)


def refusal(messages, tools=None, tool_choice="auto"):
    with pytest.raises(InvalidRequestError) as caught:
        render_prompt(None, messages, tools, tool_choice)  # refused before the tokenizer is touched
    return caught.value


def test_nullable_union_and_boolean_schemas_render_in_the_signature(tokenizer):
    parameters = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": ["string", "null"], "enum": ["C", "F", None]},
            "days": {"type": ["integer", "null"]},
            "when": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "extra": True,
        },
        "required": ["city", "days"],
    }
    text = prompt(tokenizer, ASK, [tool(parameters)])
    assert '- f(city: string, unit?: "C" | "F" | null, days: integer|null, when?: string|null, tags?: list of string, extra?: any): Do it' in text
    # the example call's placeholders follow the first non-null type: an integer 0, not "..."
    assert '<tool_call>{"name": "f", "arguments": {"city": "...", "days": 0}}</tool_call>' in text


def test_the_signature_of_a_plain_schema_is_unchanged(tokenizer):
    # the inbox agent was trained on these lines; they must not move by a byte
    properties = {"keywords": {"type": "string"}, "max_results": {"type": "integer"}, "sources": {"type": "array", "items": {"type": "string"}}}
    parameters = {"type": "object", "properties": properties, "required": ["keywords"]}
    assert "- f(keywords: string, max_results?: integer, sources?: list of string): Do it" in prompt(tokenizer, ASK, [tool(parameters)])


@pytest.mark.parametrize(
    "tools, tool_choice, param",
    [
        ([tool("x")], "auto", "tools[0].function.parameters"),
        ([tool({"properties": ["a"]})], "auto", "tools[0].function.parameters.properties"),
        ([tool({"properties": {"a": {"type": "array", "items": 5}}})], "auto", "tools[0].function.parameters.properties.a.items"),
        ([tool({"properties": {"a": {"anyOf": {"type": "string"}}}})], "auto", "tools[0].function.parameters.properties.a.anyOf"),
        ([tool(None), {"function": {"name": "f", "parameters": {"required": "a"}}}], "auto", "tools[1].function.parameters.required"),
        ([tool(None)], {"type": "function"}, "tool_choice.function"),
        ([tool(None)], {"type": "function", "function": {"name": "g"}}, "tool_choice"),
    ],
)
def test_a_malformed_tool_is_refused_naming_the_parameter(tools, tool_choice, param):
    error = refusal(ASK, tools, tool_choice)
    assert error.param == param and str(error).startswith(param)


def test_a_union_members_type_name_never_shows_in_the_parameter():
    # pydantic locates errors inside `str | list[...]` as `content.str`; the sentence must not
    error = refusal([{"role": "user", "content": {"text": "hi"}}])
    assert error.param == "messages[0].content"
    assert str(error) == "messages[0].content must be a string or an array"


def test_a_schema_nested_past_pydantics_depth_is_refused_not_crashed():
    schema: dict = {"type": "string"}
    for _ in range(400):
        schema = {"type": "array", "items": schema}
    error = refusal(ASK, [tool({"properties": {"a": schema}})])
    assert "nested too deeply" in str(error) and len(error.param) < 220


def test_a_template_that_knows_tools_gets_the_schemas_as_sent(tokenizer):
    native = copy.deepcopy(tokenizer)
    native.chat_template = (
        "{% for t in tools %}{{ t.function.name }} {{ t.function.parameters | tojson }}\n{% endfor %}"
        "{% for m in messages %}{{ m.role }}: {{ m.content }}{% if m.tool_calls %} {{ m.tool_calls | tojson }}{% endif %}\n{% endfor %}"
    )
    parameters = {"type": "object", "properties": {"unit": {"type": ["string", "null"], "x-extra": 1}}}
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"unit": null}'}}
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "tool", "content": "ok"}]
    text = prompt(native, messages, [tool(parameters)])
    assert '"unit": {"type": ["string", "null"], "x-extra": 1}' in text  # unknown keywords pass through
    assert '"arguments": {"unit": null}' in text and "tool: ok" in text


def test_a_template_that_refuses_the_conversation_is_a_400(tokenizer):
    strict = copy.deepcopy(tokenizer)
    strict.chat_template = "{{ raise_exception('Conversation roles must alternate') }}"
    with pytest.raises(InvalidRequestError, match="must alternate") as caught:
        render_prompt(strict, ASK)
    assert caught.value.param == "messages"
