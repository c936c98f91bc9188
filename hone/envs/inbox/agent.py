"""The inbox agent loop: ask, search, read, answer — over any OpenAI-style async client.

One episode:
  1) system prompt (the steps and one worked example of the `<tool_call>` convention; the server
     adds the tool signatures itself when given `tools=`) and the user's question;
  2) each turn, one chat completion with `search_inbox` and `read_email` offered and the model
     free to call either or to reply in text; the assistant message is recorded token-exact with
     `Trajectory.add_response`, then `take_turn` runs its tool calls and returns the tool messages;
  3) the episode ends on a plain-text reply (the final answer — the reward treats "I don't
     know"-style text as no answer) or after `max_turns` model calls. Before the last turn the
     question is asked again and no tools are offered (`tool_choice="none"`), so the last reply is
     an answer: that is the only turn whose form is imposed;
  4) the outcome is scored with `reward.score_episode` (success = the strict checker).

A reply whose tool call could not be parsed (hone keeps the text as `content` and sets the
choice's `tool_call_error` extension field) counts as a malformed call; the model is told so in a
short user message and the episode continues. `force_first_search=True` (off by default, not
used by the demo) names search_inbox in the first request's `tool_choice`, so the server's
grammar makes that reply a valid call and the model chooses only the arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import openai

from hone.envs.inbox.data import Inbox, Question, inbox_of, make_splits
from hone.envs.inbox.db import InboxDB, inbox_db
from hone.envs.inbox.reward import EpisodeOutcome, EpisodeScore, score_episode
from hone.envs.inbox.tools import TOOL_SCHEMAS, call_tool
from hone.rl.trajectory import Trajectory

# Everything that is the same for every inbox comes first and the owner's name and date last, so
# all episodes share one long token prefix: the trainer runs a shared prefix once per batch.
SYSTEM_PROMPT = """You answer questions about the user's email inbox.
One step per reply:
1. search_inbox with the key words of the question.
2. read_email with the message_id of the email that answers it. A newer email replaces an older one; mail forwarded for someone else is not the user's.
3. Reply with only the answer, like "7:45 am", "March 4", "$120.00" or "K7QX2M".
Example. Question: What is the door code for the Bergen office?
Reply 1: <tool_call>{{"name": "search_inbox", "arguments": {{"keywords": "door code Bergen office"}}}}</tool_call>
Reply 2: <tool_call>{{"name": "read_email", "arguments": {{"message_id": "m99-012"}}}}</tool_call>
Reply 3: 4821
The user is {name}. Today is {today}."""

MALFORMED_NOTE = (
    "Your tool call could not be read ({error}). Write exactly one call, like: "
    '<tool_call>{{"name": "search_inbox", "arguments": {{"keywords": "door code Bergen"}}}}</tool_call>'
)  # a concrete example: the 135M model copies placeholders such as "..." literally
_SEARCH_FIRST = {"type": "function", "function": {"name": "search_inbox"}}
# Before the last reply the question is asked again, after the tool output: a 135M model answers
# what it read last, and otherwise continues the tool output instead of answering.
LAST_TURN_NOTE = "Question: {question}\nReply with only the answer."
AGENT_TOOLS = [t for t in TOOL_SCHEMAS if t["function"]["name"] in ("search_inbox", "read_email")]


def initial_messages(inbox: Inbox, question: Question) -> list[dict[str, Any]]:
    system = SYSTEM_PROMPT.format(name=inbox.persona.name, today=inbox.today)
    return [{"role": "system", "content": system}, {"role": "user", "content": question.question}]


# --------------------------------------------------------------------------- one turn


@dataclass
class EpisodeState:
    """What the episode has done so far; `take_turn` updates it."""

    max_turns: int = 6
    question: str = ""  # asked again before the last turn
    turns: int = 0  # model calls made
    answer: str | None = None
    sources: list[str] = field(default_factory=list)
    found_ids: set[str] = field(default_factory=set)
    read_ids: set[str] = field(default_factory=set)
    malformed_calls: int = 0
    valid_tool_calls: int = 0
    tool_errors: int = 0  # parsed calls the tool rejected (unknown id, empty keywords, ...)
    done: bool = False

    def outcome(self, question: Question) -> EpisodeOutcome:
        return EpisodeOutcome(
            gold_answer=question.answer,
            gold_message_id=question.answer_message_id,
            answer_kind=question.answer_kind,
            answer=self.answer,
            sources=tuple(self.sources),
            read_ids=frozenset(self.read_ids),
            found_ids=frozenset(self.found_ids),
            turns=self.turns,
            max_turns=self.max_turns,
            malformed_calls=self.malformed_calls,
            valid_tool_calls=self.valid_tool_calls,
            hit_turn_limit=not self.done and self.turns >= self.max_turns,
        )


def take_turn(db: InboxDB, state: EpisodeState, message: dict[str, Any], tool_call_error: str | None = None) -> list[dict[str, Any]]:
    """Apply one assistant message (OpenAI dict form) to `state`; return the messages to append after it."""
    state.turns += 1
    calls = message.get("tool_calls") or []
    replies: list[dict[str, Any]] = []

    # 1) tool calls: run them in order; `answer` ends the episode
    if calls:
        for call in calls:
            function = call.get("function") or {}
            result = call_tool(db, function.get("name", ""), function.get("arguments"))
            state.valid_tool_calls += 1
            state.tool_errors += not result.ok
            state.found_ids.update(result.found_ids)
            if result.read_id is not None:
                state.read_ids.add(result.read_id)
            replies.append({"role": "tool", "tool_call_id": call.get("id", ""), "content": result.content})
            if result.final is not None:
                state.answer, state.sources, state.done = result.final["answer"], result.final["sources"], True
                return replies
        if state.turns == state.max_turns - 1:
            replies.append({"role": "user", "content": LAST_TURN_NOTE.format(question=state.question)})
        return replies

    # 2) a tool call that did not parse: count it and say so
    if tool_call_error:
        state.malformed_calls += 1
        return [{"role": "user", "content": MALFORMED_NOTE.format(error=str(tool_call_error)[:120])}]

    # 3) plain text: the final answer (possibly "I don't know", which the reward recognises)
    state.answer = message.get("content") or ""
    state.done = True
    return replies


# --------------------------------------------------------------------------- the rollout


def _choice_extra(response: Any, key: str) -> Any:
    """An extension field of the first choice, from an `openai` response object or its dict."""
    if isinstance(response, dict):
        return response["choices"][0].get(key)
    return (response.choices[0].model_extra or {}).get(key)


def _wire(message: dict[str, Any]) -> dict[str, Any]:
    """A message as sent back to the server: only the fields chat templates read."""
    return {k: message[k] for k in ("role", "content", "tool_calls", "tool_call_id") if k in message}


async def rollout(
    client: openai.AsyncOpenAI,
    model: str,
    question: Question,
    *,
    max_turns: int = 6,
    temperature: float = 1.0,
    max_tokens: int = 64,
    seed: int | None = None,
    force_first_search: bool = False,
) -> Trajectory:
    """Play one episode on `question`; return its trajectory with reward, metrics and metadata set.

    `force_first_search` sends the first request with `tool_choice` naming search_inbox, so the
    server's grammar makes that reply a valid call to it: the call's fixed text is sampled as
    forced tokens (reported in `token_forced`, not trained on by default) and the model chooses
    the arguments. It helps a model that never calls tools.
    """
    inbox = inbox_of(question)
    db = inbox_db(inbox)
    tools = AGENT_TOOLS
    trajectory = Trajectory(messages=initial_messages(inbox, question), tools=tools)
    state = EpisodeState(max_turns=max_turns, question=question.question)

    while not state.done and state.turns < max_turns:
        forced = force_first_search and state.turns == 0
        last = state.turns == max_turns - 1 and max_turns > 1  # no tools offered: the reply is the answer
        response = await client.chat.completions.create(
            model=model,
            messages=[_wire(m) for m in trajectory.messages],
            tools=tools,
            logprobs=True,
            stop=["</tool_call>"],  # one call per reply; the model otherwise rambles on after it
            temperature=temperature,
            max_tokens=max_tokens,
            seed=None if seed is None else seed + state.turns,  # a fresh stream each turn, reproducible per episode
            **({"tool_choice": _SEARCH_FIRST} if forced else {"tool_choice": "none"} if last else {}),
        )
        message = trajectory.add_response(response)  # appends the assistant message to trajectory.messages
        trajectory.messages.extend(take_turn(db, state, message, _choice_extra(response, "tool_call_error")))

    score = score_episode(state.outcome(question))
    _record(trajectory, question, state, score)
    return trajectory


def _record(trajectory: Trajectory, question: Question, state: EpisodeState, score: EpisodeScore) -> None:
    trajectory.reward = score.reward
    trajectory.metrics.update(
        success=float(score.success),
        turns=float(state.turns),
        malformed_calls=float(state.malformed_calls),
        tool_calls=float(state.valid_tool_calls),
        valid_call_rate=state.valid_tool_calls / max(1, state.valid_tool_calls + state.malformed_calls),
        tool_errors=float(state.tool_errors),
        answered=float(score.verdict != "no_answer"),
        read_answer_email=float(score.read_answer_email),
        found_answer_email=float(score.found_answer_email),
        cited_source=float(score.cited_source),
        hit_turn_limit=float(not state.done),
    )
    trajectory.metadata.update(
        question_id=question.question_id,
        question=question.question,
        answer=question.answer,
        answer_message_id=question.answer_message_id,
        answer_kind=question.answer_kind,
        fact=question.fact,
        traps=list(question.traps),
        final_answer=state.answer,
        sources=list(state.sources),
        verdict=score.verdict,
        reward_components=dict(score.components),
    )


# --------------------------------------------------------------------------- environment


class InboxEnv:
    """The inbox task for `hone train` / `hone demo`: train on some inboxes, choose on validation
    ones, test on held-out ones (held-out templates and fact kinds; hone.envs.inbox.data)."""

    name = "inbox"

    def __init__(
        self,
        seed: int = 0,
        n_train_inboxes: int = 40,
        n_validation_inboxes: int = 6,
        n_test_inboxes: int = 12,
        max_turns: int = 6,
        max_tokens: int = 64,
        force_first_search: bool = False,
    ):
        self.max_turns = max_turns
        self.max_tokens = max_tokens
        self.force_first_search = force_first_search
        self.splits = make_splits(seed, n_train_inboxes, n_validation_inboxes, n_test_inboxes)

    def train_tasks(self) -> Sequence[Question]:
        return self.splits.train

    def validation_tasks(self) -> Sequence[Question]:
        return self.splits.validation

    def eval_tasks(self) -> Sequence[Question]:
        return self.splits.test

    async def rollout(
        self, client: openai.AsyncOpenAI, model: str, task: Question, *, seed: int | None, temperature: float
    ) -> Trajectory:
        return await rollout(
            client, model, task, max_turns=self.max_turns, temperature=temperature, max_tokens=self.max_tokens, seed=seed,
            force_first_search=self.force_first_search,
        )
