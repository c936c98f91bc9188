import json

from hypothesis import given, settings
from hypothesis import strategies as st

from hone.chat import parse_reply

NAMES = {"get_weather", "send_email"}


def test_a_well_formed_call_becomes_an_openai_tool_call():
    reply = parse_reply('Checking.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>', NAMES)
    assert reply.error is None
    assert reply.content == "Checking."
    [call] = reply.tool_calls
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}


def test_a_call_cut_off_before_its_closing_tag_still_parses():
    reply = parse_reply('<tool_call>{"name": "send_email", "arguments": {"to": "a@b.c"}}', NAMES)
    assert reply.error is None and reply.tool_calls[0]["function"]["name"] == "send_email"


def test_several_calls_are_all_returned_in_order():
    text = "".join(f'<tool_call>{{"name": "{n}", "arguments": {{}}}}</tool_call>' for n in ["send_email", "get_weather"])
    assert [c["function"]["name"] for c in parse_reply(text, NAMES).tool_calls] == ["send_email", "get_weather"]


def test_arguments_given_as_a_json_string_are_accepted():
    reply = parse_reply('<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}</tool_call>', NAMES)
    assert json.loads(reply.tool_calls[0]["function"]["arguments"]) == {"city": "Rome"}


def test_malformed_calls_keep_the_text_and_are_flagged():
    cases = {
        '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>': "not valid JSON",
        "<tool_call>[1, 2]</tool_call>": "JSON object",
        '<tool_call>{"arguments": {}}</tool_call>': "no 'name'",
        '<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>': "unknown tool",
        '<tool_call>{"name": "get_weather", "arguments": [1]}</tool_call>': "not a JSON object",
    }
    for text, fragment in cases.items():
        reply = parse_reply(text, NAMES)
        assert reply.tool_calls == []
        assert reply.content == text.strip()
        assert fragment in reply.error


def test_one_bad_call_among_good_ones_rejects_the_whole_reply():
    text = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call><tool_call>nope</tool_call>'
    reply = parse_reply(text, NAMES)
    assert reply.tool_calls == [] and reply.error


def test_plain_text_is_content_with_no_error():
    reply = parse_reply("  The answer is 4.  ", NAMES)
    assert reply.content == "The answer is 4." and reply.tool_calls == [] and reply.error is None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_never_raises(text):
    reply = parse_reply(text, NAMES)
    assert isinstance(reply.content, str)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('<tool_call>{}"name:arguments[],/ \\0123'))))
def test_arbitrary_near_miss_tool_syntax_never_raises(text):
    reply = parse_reply("<tool_call>" + text, NAMES)
    assert (reply.error is None) == bool(reply.tool_calls) or reply.tool_calls == []
