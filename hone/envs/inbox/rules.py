"""No-learning baselines: cheap rules a trained agent has to beat on the same questions.

Each rule turns a question into a final reply using the agent's own tools (or no inbox at all),
and is scored by the same strict checker as the agent. The rules are told the answer's type (time,
date, money, code), which the agent has to infer from the question: that makes them stronger, so
beating them means more.

    snippet_echo        search with the question's words; reply with the top hit's snippet
    snippet_value       search; reply with the first value of the answer's type in the hits' snippets
    read_top_value      search; read the top hit; reply with the first value of the type in it
    newest_value        search (5 hits); read them; reply with the first value of the type in the
                        newest email that has one (the rule that knows updates supersede)
    careful_value       search (3 hits); drop forwarded mail (a subject starting "Fwd:"); read the
                        rest; the first value in the newest one that has one: the rule that knows
                        every trap of the generator, and the strongest found
    common_answer       no inbox: the answer seen most often in training for this kind of fact
    candidate_list      no inbox: every training answer of the type, listed (the strict checker
                        rejects lists; here to show it does)
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

from hone.envs.inbox.answers import first_value, is_correct
from hone.envs.inbox.data import Question, inbox_of
from hone.envs.inbox.db import inbox_db
from hone.envs.inbox.tools import read_email, search_inbox

Rule = Callable[[Question], str]


def _hits(question: Question, n: int = 3) -> list[dict[str, str]]:
    results = search_inbox(inbox_db(inbox_of(question)), question.question, n)
    return results if isinstance(results, list) else []


def _body(question: Question, message_id: str) -> str:
    email = read_email(inbox_db(inbox_of(question)), message_id)
    return email["body"] if isinstance(email, dict) else ""


def snippet_echo(question: Question) -> str:
    hits = _hits(question)
    return " ".join(hits[0]["snippet"].split()) if hits else ""


def snippet_value(question: Question) -> str:
    for hit in _hits(question):
        value = first_value(hit["snippet"], question.answer_kind)
        if value:
            return value
    return ""


def read_top_value(question: Question) -> str:
    hits = _hits(question)
    return (first_value(_body(question, hits[0]["message_id"]), question.answer_kind) or "") if hits else ""


def newest_value(question: Question) -> str:
    dated = []
    for hit in _hits(question, 5):
        value = first_value(_body(question, hit["message_id"]), question.answer_kind)
        if value:
            dated.append((inbox_of(question).email(hit["message_id"]).date, value))
    return max(dated)[1] if dated else ""


def careful_value(question: Question) -> str:
    newest = None
    for hit in _hits(question):
        if hit["subject"].lower().startswith("fwd:"):
            continue
        value = first_value(_body(question, hit["message_id"]), question.answer_kind)
        if value and (newest is None or hit["date"] > newest[0]):
            newest = (hit["date"], value)
    return newest[1] if newest else ""


def no_inbox_rules(train: Sequence[Question]) -> dict[str, Rule]:
    """The rules that look only at training answers, never at the question's inbox."""
    by_fact: dict[str, Counter] = {}
    by_kind: dict[str, list[str]] = {}
    for q in train:
        by_fact.setdefault(q.fact, Counter())[q.answer] += 1
        by_kind.setdefault(q.answer_kind, [])
        if q.answer not in by_kind[q.answer_kind]:
            by_kind[q.answer_kind].append(q.answer)
    overall = {kind: Counter(q.answer for q in train if q.answer_kind == kind) for kind in by_kind}

    def common_answer(question: Question) -> str:
        counts = by_fact.get(question.fact) or overall.get(question.answer_kind) or Counter()
        return counts.most_common(1)[0][0] if counts else ""

    def candidate_list(question: Question) -> str:
        return ", ".join(by_kind.get(question.answer_kind, [])[:20])

    return {"common_answer": common_answer, "candidate_list": candidate_list}


def all_rules(train: Sequence[Question]) -> dict[str, Rule]:
    return {
        "snippet_echo": snippet_echo,
        "snippet_value": snippet_value,
        "read_top_value": read_top_value,
        "newest_value": newest_value,
        "careful_value": careful_value,
        **no_inbox_rules(train),
    }


def rule_scores(questions: Sequence[Question], train: Sequence[Question]) -> dict[str, dict[str, object]]:
    """Each rule's strict success on `questions`, and its per-question outcomes (for paired tests)."""
    scores = {}
    for name, rule in all_rules(train).items():
        outcomes = [is_correct(rule(q), q.answer, q.answer_kind) for q in questions]
        scores[name] = {"success": sum(outcomes) / len(outcomes) if outcomes else 0.0, "outcomes": outcomes}
    return scores

