"""`/v1/responses`: a stateless subset of OpenAI's Responses API, served by hone's chat path.

A request is translated, not reimplemented: its `instructions` and `input` items become chat
messages (consecutive `function_call` items join one assistant message; a `function_call_output`
is a tool message), its function tools and `text.format` become chat tools and a response_format,
and `hone.chat.render_chat` gives the prompt tokens and the grammar that keeps `tool_choice` and
the format. One sample later the reply is parsed as a chat choice is (`parse_reply`) and written
back as Responses output items: a `message` with its `output_text`, then one `function_call` item
per call. A reply cut by its length is `status: "incomplete"` with reason `max_output_tokens`.

Token-exact extensions on the response, as on a chat completion: `prompt_token_ids`, `token_ids`,
`token_logprobs`, `token_forced` and `tool_call_error`. Extensions on the request: `seed`, `top_k`.

Stateless: nothing is stored, so `previous_response_id`, `conversation`, `store: true`,
`background: true` and stored `prompt`s are refused with a 400 naming the parameter, as are
OpenAI's built-in tools, reasoning settings, input items other than text messages and function
calls with their outputs (images, files, reasoning items, item references), and `include` values
other than `message.output_text.logprobs`.

`stream: true` answers with server-sent events in the Responses shape (`response.created`, ...,
`response.output_text.delta` as tokens are decoded, ..., `response.completed` carrying the whole
response with its extensions); see `_events`. As for chat, errors before the first token keep
their HTTP status, and after it they are an `error` event.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import time
import uuid
from dataclasses import replace
from typing import Annotated, Any, AsyncIterator, Callable, Literal, Union

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import Discriminator, Field, Tag, field_validator

from hone.chat import ChatInput, RenderedPrompt, parse_reply, render_chat
from hone.chat.schema import MAX_MESSAGES, MAX_TOOLS, JsonSchema, OpenModel, RenderedModel, checked_chat
from hone.errors import HoneError, InvalidRequestError
from hone.server.lifetime import ClientGone, while_client_waits
from hone.server.rollouts import Recorder
from hone.server.limits import MAX_TOKENS, MAX_TOP_K, MAX_TOP_LOGPROBS, SEED_LIMIT, refuse_unsupported
from hone.server.sampler import Sampler
from hone.server.streaming import ChoiceText, Started, logprob_entries, start_sampling, token_deltas
from hone.server.traffic import TrafficTap
from hone.types import SampledSequence, SamplingParams

LOGPROBS = "message.output_text.logprobs"  # the one `include` value hone serves
# Responses parameters hone does not implement (see hone.server.limits.refuse_unsupported)
REFUSED = {
    "previous_response_id": ((None,), "hone's Responses API is stateless and keeps no responses; send the whole conversation in 'input' instead"),
    "conversation": ((None,), "hone's Responses API is stateless and keeps no conversations; send the whole conversation in 'input' instead"),
    "store": ((None, False), "hone stores no responses; leave 'store' out or send false"),
    "background": ((None, False), "hone answers while the client waits; leave 'background' out or send false"),
    "prompt": ((None,), "hone keeps no stored prompts; send 'instructions' and 'input' instead"),
    "reasoning": ((None, {}, {"effort": "none"}), "hone's models do not reason before answering; leave 'reasoning' out"),
    "truncation": ((None, "disabled"), "hone never drops input to fit the context; leave 'truncation' out or send 'disabled'"),
    "max_tool_calls": ((None,), "'max_tool_calls' is not supported; leave it out (parallel_tool_calls false allows one call per reply)"),
    "context_management": ((None,), "hone does not compact the context; leave 'context_management' out"),
}
# chat parameter names in errors from the chat path -> the Responses parameters they came from
_PARAM_NAMES = [
    (re.compile(r"^messages\b.*"), "input"),  # messages and items do not line up one to one
    (re.compile(r"^tools\[(\d+)\]\.function\."), r"tools[\1]."),
    (re.compile(r"^response_format\.json_schema\."), "text.format."),
    (re.compile(r"^response_format"), "text.format"),
    (re.compile(r"^max_tokens$"), "max_output_tokens"),  # the engine's bound on prompt + reply
    (re.compile(r"^prompt_tokens$"), "input"),
]


# --------------------------------------------------------------------------- request
class TextContent(RenderedModel):
    type: str
    text: str

    @field_validator("type")
    @classmethod
    def _text_only(cls, value: str) -> str:
        if value not in ("input_text", "output_text"):
            raise ValueError(f"must be 'input_text' or 'output_text': hone's models read text only, not {value!r}")
        return value


def _text(content: str | list[TextContent]) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content)


class MessageItem(RenderedModel):
    type: Literal["message"] = "message"  # OpenAI lets a message leave its type out
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[TextContent]


class FunctionCallItem(RenderedModel):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class FunctionCallOutputItem(RenderedModel):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[TextContent]


class OtherItem(OpenModel):
    type: str

    @field_validator("type")
    @classmethod
    def _refused(cls, value: str) -> str:
        raise ValueError(
            f"must be 'message', 'function_call' or 'function_call_output': hone's Responses API is stateless and "
            f"text-only, so it takes no {value[:60]!r} items"
        )


def _type_of(value: Any, default: str | None = None) -> Any:
    return value.get("type", default) if isinstance(value, dict) else getattr(value, "type", default)


def _item_kind(value: Any) -> str:
    kind = _type_of(value, "message")  # a message may leave its type out
    return kind if kind in ("message", "function_call", "function_call_output") else "other"


def _tool_kind(value: Any) -> str:
    return "function" if _type_of(value) == "function" else "other"


InputItem = Annotated[
    Union[
        Annotated[MessageItem, Tag("message")],
        Annotated[FunctionCallItem, Tag("function_call")],
        Annotated[FunctionCallOutputItem, Tag("function_call_output")],
        Annotated[OtherItem, Tag("other")],
    ],
    Discriminator(_item_kind),
]


class FunctionTool(RenderedModel):
    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: JsonSchema | None = None
    strict: bool | None = None  # the schema is always enforced (hone.chat.grammar); strict changes nothing


class BuiltInTool(OpenModel):
    type: str

    @field_validator("type")
    @classmethod
    def _refused(cls, value: str) -> str:
        raise ValueError(f"must be 'function': hone has no built-in {value[:60]!r} tool; give the model a function tool that does the job")


ToolSpec = Annotated[
    Union[Annotated[FunctionTool, Tag("function")], Annotated[BuiltInTool, Tag("other")]],
    Discriminator(_tool_kind),
]


class NamedFunction(OpenModel):
    type: Literal["function"]
    name: str = Field(min_length=1)


class TextFormat(OpenModel):
    type: Literal["text", "json_object", "json_schema"]
    name: str = Field(default="response", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None  # the schema is always enforced; strict changes nothing


class TextConfig(OpenModel):
    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = None  # hone's models have no verbosity setting


class ResponsesRequest(OpenModel):
    """OpenAI's Responses request body, in the part hone serves (see the module docstring)."""

    model: str = Field(min_length=1, max_length=256)
    input: str | Annotated[list[InputItem], Field(min_length=1, max_length=MAX_MESSAGES)]
    instructions: str | None = None
    tools: list[ToolSpec] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int = Field(default=0, ge=0, le=MAX_TOP_K)  # extension; 0 = off
    seed: int | None = Field(default=None, ge=0, lt=SEED_LIMIT)  # extension
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    include: list[str] | None = None
    metadata: dict[str, str] | None = None  # echoed; the traffic log keeps only the messages
    task_key: str | None = Field(default=None, min_length=1, max_length=256)  # extension: the traffic log groups by it
    stream: bool = False

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _function_choices_only(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("type") != "function":
            raise ValueError(
                f"must be 'auto', 'none', 'required' or {{'type': 'function', 'name': ...}}; hone has no {str(value.get('type'))[:60]!r} tool"
            )
        return value

    @field_validator("include")
    @classmethod
    def _logprobs_only(cls, value: list[str] | None) -> list[str] | None:
        for kind in value or []:
            if kind != LOGPROBS:
                raise ValueError(f"may hold only {LOGPROBS!r}: hone keeps nothing else to include, not {kind[:80]!r}")
        return value

    @property
    def logprobs(self) -> bool:
        return LOGPROBS in (self.include or [])

    def sampling_params(self, default_max_tokens: int) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_output_tokens or default_max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k,
            seed=self.seed,
            top_logprobs=(self.top_logprobs or 0) if self.logprobs else 0,
        )


def chat_input(body: ResponsesRequest) -> ChatInput:
    """The chat request `body` stands for (InvalidRequestErrors name chat parameters; see `_renamed`)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": body.instructions}] if body.instructions else []
    items = [MessageItem(role="user", content=body.input)] if isinstance(body.input, str) else body.input
    for item in items:
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": _text(item.content)})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
            if messages and messages[-1]["role"] == "assistant":  # one reply: its text, then its calls
                messages[-1]["tool_calls"] = [*(messages[-1].get("tool_calls") or []), call]
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": _text(item.output)})
    tools = [
        {"type": "function", "function": tool.model_dump(include={"name", "description", "parameters"}, exclude_none=True)}
        for tool in body.tools or []
    ]
    tool_choice = {"type": "function", "function": {"name": body.tool_choice.name}} if isinstance(body.tool_choice, NamedFunction) else body.tool_choice
    document = {
        "messages": messages,
        "tools": tools or None,
        "tool_choice": tool_choice,
        "response_format": _response_format(body),
        "parallel_tool_calls": body.parallel_tool_calls,
    }
    return checked_chat(document)


def _response_format(body: ResponsesRequest) -> dict[str, Any] | None:
    fmt = body.text.format if body.text is not None else None
    if fmt is None or fmt.type != "json_schema":
        return None if fmt is None else {"type": fmt.type}
    if fmt.schema_ is None:
        raise InvalidRequestError("text.format.schema is required when text.format.type is 'json_schema'", param="text.format.schema")
    return {"type": "json_schema", "json_schema": {"name": fmt.name, "schema": fmt.schema_, "strict": fmt.strict}}


def _renamed(error: InvalidRequestError) -> InvalidRequestError:
    """`error` (of the same class, so of the same status) with its parameter named as the Responses
    request names it."""
    if not error.param:
        return error
    param = error.param
    for pattern, name in _PARAM_NAMES:
        param = pattern.sub(name, param)
    renamed = copy.copy(error)
    renamed.args = (str(error).replace(error.param, param),)
    renamed.param = param
    return renamed


# --------------------------------------------------------------------------- route
def build_responses_router(models_for: Callable[[Request], Sampler], default_max_tokens: int) -> APIRouter:
    """`POST /v1/responses` over `models_for(request)` (the app's sampler, or a tenant's view)."""
    router = APIRouter()

    @router.post("/v1/responses")
    async def create_response(body: ResponsesRequest, request: Request) -> Any:
        return await answer_responses(request, models_for(request), body, default_max_tokens)

    return router


async def answer_responses(request: Request, models: Sampler, body: ResponsesRequest, default_max_tokens: int, recorder: Recorder | None = None) -> Any:
    """The response (or its event stream) for `body`; with `recorder`, through a rollout."""
    tokenizer = models.tokenizer(body.model)  # raises ModelNotFoundError -> 404
    refuse_unsupported(body.model_extra or {}, REFUSED)
    try:  # the chat path's errors name chat parameters: renamed to the request's own
        return await _answer(request, models, body, tokenizer, body.sampling_params(default_max_tokens), recorder)
    except InvalidRequestError as exc:
        raise _renamed(exc) from exc


async def _answer(request: Request, models: Sampler, body: ResponsesRequest, tokenizer: Any, params: SamplingParams, recorder: Recorder | None) -> Any:
    chat = chat_input(body)
    prompt = render_chat(tokenizer, chat)
    pending = recorder(tokenizer, "responses", chat, prompt, body.model, 1) if recorder is not None else None
    if pending is not None:
        prompt = pending.prompt
    if prompt.grammar is not None:
        params = replace(params, grammar=prompt.grammar)
    answer = Answer(body, tokenizer, prompt, on_reply=pending.record if pending is not None else None)
    answer.tap = TrafficTap(models, request, "responses", answer.id, body.model, chat, prompt.tokens, pending.rollout if pending else None, body.task_key)
    if body.stream:
        started = await start_sampling(request, lambda on_tokens: models.sample(body.model, prompt.tokens, 1, params, on_tokens))
        return StreamingResponse(_events(started, answer), media_type="text/event-stream")
    samples = await while_client_waits(request, models.sample(body.model, prompt.tokens, 1, params))
    response = answer.response(samples[0])
    await answer.tap.flush()  # logged before the client sees it
    return response


# --------------------------------------------------------------------------- response
class Answer:
    """The response to one request, in progress and finished; its ids are fixed at the start, so
    a stream's events and its final response name the same items."""

    def __init__(self, body: ResponsesRequest, tokenizer: Any, prompt: RenderedPrompt, on_reply: Callable[[SampledSequence, dict[str, Any]], None] | None = None):
        self.body, self.tokenizer, self.prompt = body, tokenizer, prompt
        self.on_reply = on_reply  # hears each finished sample and its reply as a chat message (a rollout records it)
        self.tap: TrafficTap | None = None  # the traffic log's, set by the route
        self.key = uuid.uuid4().hex
        self.id, self.message_id = "resp_" + self.key, "msg_" + self.key
        self.created_at = int(time.time())

    def in_progress(self) -> dict[str, Any]:
        """The response before any output: what `response.created` carries."""
        body = self.body
        fmt = body.text.format if body.text is not None and body.text.format is not None else TextFormat(type="text")
        text_format = fmt.model_dump(by_alias=True, exclude_none=True) if fmt.type == "json_schema" else {"type": fmt.type}
        tool_choice = body.tool_choice.model_dump() if isinstance(body.tool_choice, NamedFunction) else body.tool_choice or "auto"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": "in_progress",
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "model": body.model,
            "output": [],
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": None,
            "reasoning": None,
            "temperature": 1.0 if body.temperature is None else body.temperature,
            "text": {"format": text_format},
            "tool_choice": tool_choice,
            "tools": [{**tool.model_dump(exclude_none=True), "strict": tool.strict is not False} for tool in body.tools or []],
            "top_logprobs": body.top_logprobs,
            "top_p": 1.0 if body.top_p is None else body.top_p,
            "truncation": "disabled",
            "usage": None,
            "metadata": body.metadata or {},
        }

    def response(self, sample: SampledSequence) -> dict[str, Any]:
        """The finished response, parsed as a chat choice is (`_choice` in openai_api.py)."""
        text = self.tokenizer.decode(sample.tokens, skip_special_tokens=True)
        if self.prompt.tool_names is not None:
            parsed = parse_reply(text, self.prompt.tool_names, self.prompt.tool_format)
            content, tool_calls, error = parsed.content, parsed.tool_calls, parsed.error
        else:
            content, tool_calls, error = text.strip(), [], None
        complete = sample.finish_reason != "length"
        status = "completed" if complete else "incomplete"
        output: list[dict[str, Any]] = []
        if content or not tool_calls:
            logprobs = logprob_entries(self.tokenizer, sample.tokens, sample.logprobs, sample.top_logprobs) if self.body.logprobs else []
            part = {"type": "output_text", "text": content, "annotations": [], "logprobs": logprobs}
            output.append({"type": "message", "id": self.message_id, "role": "assistant", "status": status, "content": [part]})
        for k, call in enumerate(tool_calls):
            function = call["function"]
            output.append(
                {
                    "type": "function_call",
                    "id": f"fc_{self.key}_{k}",
                    "call_id": call["id"],
                    "name": function["name"],
                    "arguments": function["arguments"],
                    "status": status,
                }
            )
        message = {"role": "assistant", "content": content or (None if tool_calls else ""), "tool_calls": tool_calls or None}
        if self.on_reply is not None:
            self.on_reply(sample, message)
        if self.tap is not None:
            self.tap.add(sample, message, error)
        prompt_tokens, output_tokens = len(self.prompt.tokens), len(sample.tokens)
        return {
            **self.in_progress(),
            "status": status,
            "incomplete_details": None if complete else {"reason": "max_output_tokens"},
            "output": output,
            "usage": {
                "input_tokens": prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt_tokens + output_tokens,
            },
            "prompt_token_ids": self.prompt.tokens,
            "token_ids": sample.tokens,
            "token_logprobs": sample.logprobs,
            "token_forced": sample.forced,
            "tool_call_error": error,
        }


# --------------------------------------------------------------------------- streaming
async def _events(started: Started, answer: Answer) -> AsyncIterator[str]:
    """The Responses event stream of one sample:
    1. `response.created` and `response.in_progress`;
    2. while decoding, the message item opened (`output_item.added`, `content_part.added`) at its
       first visible text and `output_text.delta`s of text that can no longer change (ChoiceText);
    3. at the end, the rest of the message and its `.done` events, then each function call whole
       (`output_item.added`, one `function_call_arguments.delta`, `.done`, `output_item.done`);
    4. `response.completed` (or `response.incomplete`) with the whole response and hone's extensions."""
    numbers = itertools.count()

    def event(kind: str, **fields: Any) -> str:
        data = {"type": kind, "sequence_number": next(numbers), **fields}
        return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

    at = {"item_id": answer.message_id, "output_index": 0}
    opening = [
        ("response.output_item.added", {"output_index": 0, "item": {"type": "message", "id": answer.message_id, "role": "assistant", "status": "in_progress", "content": []}}),
        ("response.content_part.added", {**at, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
    ]
    text = ChoiceText(answer.tokenizer, watch_tool_calls=answer.prompt.tool_format.markers if answer.prompt.tool_names is not None else ())
    opened = False
    try:
        yield event("response.created", response=answer.in_progress())
        yield event("response.in_progress", response=answer.in_progress())
        async for delta in token_deltas(started):
            piece = text.feed(delta)
            if piece is None:
                continue
            if not opened:
                opened = True
                for kind, fields in opening:
                    yield event(kind, **fields)
            logprobs = text.content_choice(0, piece, True)["logprobs"]["content"] if answer.body.logprobs else []
            yield event("response.output_text.delta", **at, content_index=0, delta=piece, logprobs=logprobs)
        response = answer.response(started.task.result()[0])
        if answer.tap is not None:
            await answer.tap.flush()  # logged before the client sees it
        for index, item in enumerate(response["output"]):
            if item["type"] == "message":
                part = item["content"][0]
                if not opened:
                    for kind, fields in opening:
                        yield event(kind, **fields)
                if part["text"].startswith(text.sent) and len(part["text"]) > len(text.sent):
                    rest = part["logprobs"][text.covered :] if answer.body.logprobs else []
                    yield event("response.output_text.delta", **at, content_index=0, delta=part["text"][len(text.sent) :], logprobs=rest)
                yield event("response.output_text.done", **at, content_index=0, text=part["text"], logprobs=part["logprobs"])
                yield event("response.content_part.done", **at, content_index=0, part=part)
            else:
                call_at = {"item_id": item["id"], "output_index": index}
                yield event("response.output_item.added", output_index=index, item={**item, "arguments": "", "status": "in_progress"})
                yield event("response.function_call_arguments.delta", **call_at, delta=item["arguments"])
                yield event("response.function_call_arguments.done", **call_at, name=item["name"], arguments=item["arguments"])
            yield event("response.output_item.done", output_index=index, item=item)
        yield event("response.completed" if response["status"] == "completed" else "response.incomplete", response=response)
    except ClientGone:
        return
    except HoneError as exc:  # the status has been sent: the error goes in the stream
        exc = _renamed(exc) if isinstance(exc, InvalidRequestError) else exc
        yield event("error", code=exc.code, message=str(exc), param=getattr(exc, "param", None))
    finally:
        started.task.cancel()
