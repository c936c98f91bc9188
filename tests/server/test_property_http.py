"""Property: whatever tools, tool_choice, messages and sampling settings a client sends, a real
server answers below 500, every 4xx in OpenAI's error shape, and on the same keep-alive
connection (`live.post` asserts it); afterwards a valid request is still served.

Half the requests are valid OpenAI (JSON Schema with nullable types, anyOf, boolean schemas,
enums; tool calls and tool results; text parts), so the renderer and sampler are reached; the
other half are salted with JSON of the wrong shape anywhere, lone surrogates, NaN and numbers
past every bound, so the checks are."""

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hone.chat.schema import JSON_TYPES, ROLES

HELLO = [{"role": "user", "content": "Say hello."}]
NAMES = ["f", "get_weather", "g"]

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6)
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=5)
odd_text = st.sampled_from(["\ud800", "a\udfffb", "\x00", "<tool_call>", "{{ x }}", "é🙂", "\n" * 3])


def chat_requests(salted: bool) -> st.SearchStrategy:
    """Chat bodies; with `salted`, any place may hold junk instead of what belongs there."""

    def maybe(strategy, weight=6):
        return st.one_of(*[strategy] * weight, junk) if salted else strategy

    text = st.text(max_size=24) | (odd_text if salted else st.sampled_from(["é🙂", "<tool_call>", "{{ x }}"]))
    json_type = maybe(st.sampled_from(JSON_TYPES) | st.lists(st.sampled_from(JSON_TYPES), min_size=1, max_size=3, unique=True))
    leaf = st.fixed_dictionaries({}, optional={"type": json_type, "enum": maybe(st.lists(scalars, min_size=1, max_size=3)), "description": maybe(text)})
    schema = st.recursive(
        maybe(leaf | st.booleans()),
        lambda inner: st.fixed_dictionaries(
            {"type": json_type},
            optional={
                "items": inner,
                "properties": maybe(st.dictionaries(st.sampled_from(["a", "b", "city"]) | text, inner, max_size=3)),
                "required": maybe(st.lists(st.sampled_from(["a", "b", "city"]), max_size=3)),
                "anyOf": maybe(st.lists(inner, min_size=1, max_size=3)),
            },
        ),
        max_leaves=6,
    )
    keys = st.sampled_from(["a", "b", "city"])
    parameters = st.fixed_dictionaries(
        {"type": st.just("object"), "properties": maybe(st.dictionaries(keys, schema, max_size=3))},
        optional={"required": maybe(st.lists(keys, max_size=3))},
    )
    function = st.fixed_dictionaries(
        {"name": maybe(st.sampled_from(NAMES))},
        optional={"description": maybe(text), "parameters": maybe(parameters) | (schema if salted else st.nothing()), "strict": st.booleans()},
    )
    tool = maybe(st.fixed_dictionaries({"type": maybe(st.just("function")), "function": maybe(function)}))
    tools = st.lists(tool, min_size=1, max_size=3, unique_by=lambda t: str(t))
    named = st.fixed_dictionaries({"type": maybe(st.just("function")), "function": maybe(st.fixed_dictionaries({"name": maybe(st.sampled_from(NAMES))}))})
    tool_choice = st.sampled_from(["auto", "none", "required"]) | named | (junk if salted else st.nothing())

    part = maybe(st.fixed_dictionaries({"type": maybe(st.just("text")), "text": maybe(text)}))
    content = text | st.lists(part, min_size=1, max_size=3) | (junk if salted else st.nothing())
    arguments = maybe(st.just('{"a": 1}') | st.just({"city": "Oslo"}) | text)
    called_function = st.fixed_dictionaries({"name": maybe(st.sampled_from(NAMES))}, optional={"arguments": arguments})
    call = maybe(st.fixed_dictionaries({"type": st.just("function"), "function": maybe(called_function)}, optional={"id": text}))
    said = st.fixed_dictionaries({"role": maybe(st.sampled_from(["system", "developer", "user", "tool"] if not salted else ROLES)), "content": content})
    called = st.fixed_dictionaries({"role": maybe(st.just("assistant")), "content": st.none() | content, "tool_calls": maybe(st.lists(call, max_size=2))})
    messages = maybe(st.lists(maybe(said | called), min_size=1, max_size=4))

    bounds = {
        "n": st.integers(1, 3),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0.01, 1),
        "top_k": st.integers(0, 50),
        "seed": st.integers(0, 2**63 - 1),
        "stop": st.none() | text.filter(bool) | st.lists(text, max_size=16),
        "logprobs": st.booleans(),
        "top_logprobs": st.integers(0, 20),
        "stream": st.booleans(),
        "user": st.text(max_size=8),  # an OpenAI field hone ignores
    }
    if salted:  # and past every bound
        bounds |= {
            "n": bounds["n"] | st.integers(-1, 0) | st.just(10**6),
            "temperature": bounds["temperature"] | st.just(float("nan")) | st.floats(-1, 3),
            "top_k": bounds["top_k"] | st.just(2**80),
            "seed": bounds["seed"] | st.integers(-5, -1) | st.just(2**64),
            "stop": bounds["stop"] | st.lists(text, min_size=17, max_size=20) | junk,
            "user": junk,
        }
    sampling = st.fixed_dictionaries({"max_tokens": st.integers(1, 4)}, optional=bounds)
    return st.builds(
        lambda model, messages, tools, choice, params: {"model": model, "messages": messages, **tools, **choice, **params},
        model=st.just("tiny") if not salted else st.sampled_from(["tiny", "tiny", "tiny", "nope"]) | junk,
        messages=messages,
        tools=st.just({}) | st.builds(lambda t: {"tools": t}, tools),
        choice=st.just({}) | st.builds(lambda c: {"tool_choice": c}, tool_choice),
        params=sampling,
    )


def assert_openai_error(response):
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["type"] == "invalid_request_error", error


def test_random_tools_and_messages_never_get_a_5xx_nor_drop_the_connection(live):
    started = time.monotonic()
    statuses = []

    @settings(max_examples=200, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(body=chat_requests(salted=False) | chat_requests(salted=True))
    def answer_below_500(body):
        response = live.post(body)
        statuses.append(response.status_code)
        assert response.status_code < 500, (body, response.text[:300])
        if response.status_code >= 400:
            assert_openai_error(response)

    answer_below_500()
    valid = live.post({"model": "tiny", "messages": HELLO, "max_tokens": 2})
    assert valid.status_code == 200, valid.text
    assert statuses.count(200) >= 20 and statuses.count(400) >= 20  # both the sampler and the checks were reached
    assert time.monotonic() - started < 60
