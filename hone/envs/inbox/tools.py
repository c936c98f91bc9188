"""The agent's tools over one inbox, and their OpenAI schemas.

Tools never raise on what a model sends: bad arguments, unknown ids and unparseable search text
come back as short error strings the model can read and act on. `call_tool` is the single entry
point the agent loop uses; it also reports what the call revealed (ids seen in search results,
the id read) so the reward can give partial credit.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from hone.envs.inbox.db import InboxDB

MAX_RESULTS = 10
BODY_CHARS = 600  # read_email truncates bodies: the policy model has ~2k tokens of useful context
MAX_QUERY_TERMS = 12

STOPWORDS = frozenset(
    """a about after all also am an and any are as at be been before being but by can could did do does doing
    for from get got had has have how i i'd i'm i've if in into is it its it's just me my near need not of on or
    our please s should so some t than that the their them then there these they this those to up us was we were
    what when where which while who whom why will with would you your""".split()
)

TOOL_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "search_inbox",
            "description": "Find emails containing any of the keywords. Returns ids, subjects and snippets.",
            "parameters": {
                "type": "object",
                "properties": {
                    "keywords": {"type": "string", "description": "a few words from the question"},
                    "max_results": {"type": "integer", "description": "default 3"},
                },
                "required": ["keywords"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "read_email",
            "description": "Read one email by its message_id.",
            "parameters": {
                "type": "object",
                "properties": {"message_id": {"type": "string"}},
                "required": ["message_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "answer",
            "description": "Give the final answer and the message_ids it came from. Ends the task.",
            "parameters": {
                "type": "object",
                "properties": {
                    "text": {"type": "string", "description": "short answer"},
                    "sources": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["text"],
            },
        },
    },
]
TOOL_NAMES = frozenset(t["function"]["name"] for t in TOOL_SCHEMAS)


# --------------------------------------------------------------------------- search


def fts_query(keywords: Any) -> str | None:
    """An FTS5 MATCH expression ORing the words of `keywords`, or None when there are none.

    Only letters and digits survive, each term is double-quoted, so FTS syntax in the input
    (quotes, NEAR, AND, *, :, parentheses) is inert. Stopwords are dropped unless nothing else is left.
    """
    if isinstance(keywords, (list, tuple)):
        text = " ".join(str(k) for k in keywords)
    elif keywords is None:
        text = ""
    else:
        text = str(keywords)
    words = list(dict.fromkeys(w.lower() for w in re.findall(r"[^\W_]+", text)))
    content = [w for w in words if w not in STOPWORDS] or words
    terms = [f'"{w}"' for w in content[:MAX_QUERY_TERMS]]
    return " OR ".join(terms) if terms else None


def search_inbox(db: InboxDB, keywords: str | list[str], max_results: int = 3) -> list[dict[str, str]] | str:
    """Emails matching any keyword, best first (FTS5 bm25): [{message_id, subject, sender, date, snippet}].

    Returns [] when nothing matches and an error string when the input cannot be searched."""
    try:
        limit = max(1, min(MAX_RESULTS, int(max_results)))
    except (TypeError, ValueError, OverflowError):
        limit = 3
    query = fts_query(keywords)
    if query is None:
        return "Error: give some keywords to search for, e.g. 'invoice Northwind'."
    try:
        hits = db.search(query, limit)
    except sqlite3.Error as exc:  # should not happen after sanitising; the model still gets an answer
        return f"Error: search failed ({exc}). Try simpler keywords."
    return [
        {"message_id": h.message_id, "subject": h.subject, "sender": h.sender, "date": h.date[:10], "snippet": h.snippet}
        for h in hits
    ]


def format_results(results: list[dict[str, str]]) -> str:
    """Search hits as the model reads them: two short lines each, no JSON.

    A 135M model given JSON hits copies the JSON back as its answer; plain lines (id, date,
    sender's name, subject, then the snippet) are a third of the tokens and easier to quote from.
    """
    lines = []
    for hit in results:
        sender = hit["sender"].split("<")[0].strip() or hit["sender"]
        snippet = " ".join(hit["snippet"].split())  # the snippet's own line breaks would split the hit
        lines.append(f"[{hit['message_id']}] {hit['date']}, from {sender}: {hit['subject']}\n  {snippet}")
    return "\n".join(lines)


def format_email(email: dict[str, str]) -> str:
    """One email as the model reads it: headers as lines, then the body (plain text, as in search)."""
    headers = f"[{email['message_id']}] {email['date'][:10]}\nFrom: {email['sender']}\nTo: {email['recipients']}\nSubject: {email['subject']}"
    return f"{headers}\n\n{email['body']}"


# --------------------------------------------------------------------------- read, answer


def _clean_id(message_id: Any) -> str:
    return str(message_id).strip().strip("\"'<>[]() ").strip()


def read_email(db: InboxDB, message_id: str) -> dict[str, str] | str:
    """The email (body truncated to BODY_CHARS), or an error string when the id is unknown."""
    if not isinstance(message_id, (str, int)) or not str(message_id).strip():
        return "Error: read_email needs a message_id from search_inbox results."
    email = db.get(_clean_id(message_id))
    if email is None:
        return f"Error: no email with message_id '{str(message_id)[:40]}'. Use an id from search_inbox results."
    if len(email["body"]) > BODY_CHARS:
        email["body"] = email["body"][:BODY_CHARS] + "..."
    return email


def answer(text: str, sources: list[str] | None = None) -> dict[str, Any]:
    """The final answer; the agent loop ends the episode when it sees this."""
    if sources is None:
        sources = []
    elif not isinstance(sources, (list, tuple)):
        sources = [sources]
    return {"answer": "" if text is None else str(text), "sources": [_clean_id(s) for s in sources]}


# --------------------------------------------------------------------------- dispatch


@dataclass
class ToolResult:
    content: str  # what goes back to the model in the tool message
    ok: bool = True  # False when the call was rejected (bad arguments, unknown id, ...)
    found_ids: list[str] = field(default_factory=list)  # ids shown in search results
    read_id: str | None = None  # id of an email actually read
    final: dict[str, Any] | None = None  # set by `answer`: {"answer": str, "sources": [str]}


def _arguments(raw: Any) -> dict[str, Any] | str:
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError, RecursionError):
        return "Error: tool arguments must be a JSON object."
    return parsed if isinstance(parsed, dict) else "Error: tool arguments must be a JSON object."


def call_tool(db: InboxDB, name: str, raw_arguments: Any) -> ToolResult:
    """Run one tool call from the model. Never raises on model input."""
    args = _arguments(raw_arguments)
    if isinstance(args, str):
        return ToolResult(args, ok=False)
    if name == "search_inbox":
        keywords = args.get("keywords", args.get("query", args.get("keyword")))
        results = search_inbox(db, keywords, args.get("max_results", 3))
        if isinstance(results, str):
            return ToolResult(results, ok=False)
        if not results:
            return ToolResult("No emails found. Try other keywords.", found_ids=[])
        return ToolResult(format_results(results), found_ids=[r["message_id"] for r in results])
    if name == "read_email":
        email = read_email(db, args.get("message_id", args.get("id", "")))
        if isinstance(email, str):
            return ToolResult(email, ok=False)
        return ToolResult(format_email(email), read_id=email["message_id"])
    if name == "answer":
        text = args.get("text", args.get("answer"))
        if text is None or not str(text).strip():
            return ToolResult("Error: answer needs a non-empty 'text'.", ok=False)
        final = answer(text, args.get("sources"))
        return ToolResult("Answer recorded.", final=final)
    return ToolResult(f"Error: unknown tool '{str(name)[:40]}'. Use search_inbox, read_email or answer.", ok=False)
