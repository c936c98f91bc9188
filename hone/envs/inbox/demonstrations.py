"""Worked episodes for supervised warm-up: what a careful agent does on a training question.

The demonstrator knows the answer email (it runs on training inboxes only, where the ground truth
is ours), and plays the agent's own protocol through the same tools: search with the question's
words, read the answer email, reply with the value alone. When the first search misses the answer
email, it searches again with that email's subject, so the demonstrations also show a second try.
Questions whose answer email neither search finds, or that need more replies than the turn
budget, are skipped.

The conversation is built with the agent's `take_turn`, so tool results are byte-identical to what
the agent loop would send.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hone.envs.inbox.answers import first_value
from hone.envs.inbox.agent import AGENT_TOOLS, EpisodeState, initial_messages, take_turn
from hone.envs.inbox.data import Question, inbox_of
from hone.envs.inbox.db import inbox_db
from hone.envs.inbox.tools import STOPWORDS

# question words that say what is asked, not what about: searching them matches every email of the kind
_ASKING_WORDS = frozenset("time date day much number code tell remind give which whose what when".split())


def search_keywords(text: str) -> str:
    words = re.findall(r"[A-Za-z0-9][A-Za-z0-9'.-]*", text)
    kept = [w.strip(".'") for w in words if w.lower().strip(".'") not in STOPWORDS | _ASKING_WORDS]
    return " ".join(kept)


def _call(turn: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": f"call_{turn}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}],
    }


def reading_order(hits_text: str) -> list[str]:
    """The ids a careful reader opens, from search results as the agent sees them: newest first,
    forwarded mail ("Fwd:" subjects, someone else's) never."""
    hits = re.findall(r"^\[([^\]]+)\] (\d{4}-\d{2}-\d{2}), from [^:]*: (.*)$", hits_text, flags=re.M)
    kept = [(date, message_id) for message_id, date, subject in hits if not subject.lower().startswith("fwd:")]
    return [message_id for _, message_id in sorted(kept, key=lambda hit: hit[0], reverse=True)]


def demonstration(question: Question, max_turns: int = 6, careful: bool = False) -> dict[str, Any] | None:
    """{"messages", "tools", "tool_choice" (one per reply)} ending in the answer, or None when search cannot find it.

    `careful=False` reads the answer email straight away, an id chosen with knowledge the agent lacks.
    `careful=True` reads what the last search showed in `reading_order` until it reaches the answer
    email, so every read is one the agent could have chosen from what it saw; a question where that
    order opens another email stating a value first (the update was not among the hits) is skipped."""
    inbox = inbox_of(question)
    db = inbox_db(inbox)
    messages = initial_messages(inbox, question)
    state = EpisodeState(max_turns=max_turns, question=question.question)
    gold = question.answer_message_id
    for keywords in (search_keywords(question.question), search_keywords(inbox.email(gold).subject)):
        message = _call(state.turns, "search_inbox", {"keywords": keywords})
        messages += [message, *take_turn(db, state, message)]
        if gold in state.found_ids:
            break
    else:
        return None
    to_read = [gold]
    if careful:
        order = reading_order(messages[-1]["content"])
        if gold not in order:
            return None
        to_read = order[: order.index(gold) + 1]
        if any(first_value(inbox.email(m).body, question.answer_kind) for m in to_read[:-1]):
            return None  # an earlier read states a value: a careful reader would have answered with it
    for message_id in to_read:
        message = _call(state.turns, "read_email", {"message_id": message_id})
        messages += [message, *take_turn(db, state, message)]
    messages.append({"role": "assistant", "content": question.answer})
    replies = sum(m["role"] == "assistant" for m in messages)
    if replies > max_turns:  # the agent could not have done it in its turn budget
        return None
    # as the agent sends them: tools offered on every turn but the last one the budget allows
    tool_choice = ["none" if turn == max_turns - 1 else "auto" for turn in range(replies)]
    return {"messages": messages, "tools": AGENT_TOOLS, "tool_choice": tool_choice}
