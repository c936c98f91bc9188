"""Synthetic inboxes: deterministic, split by inbox, and every question answerable by keyword search."""

from __future__ import annotations

import re
import time

import pytest

from hone.envs.inbox.data import generate_inbox, load_inbox, make_splits
from hone.envs.inbox.db import db_for
from hone.envs.inbox.reward import answer_tokens
from hone.envs.inbox.tools import search_inbox

TRAIN, HELD_OUT = make_splits(seed=0)
ALL_QUESTIONS = TRAIN + HELD_OUT

# the test's own stopword list (deliberately not the tool's), to pick "keywords from the question"
_TEST_STOPWORDS = set(
    "what which when where who whose how is are was do does did i my me the a an for of to in on at from by with "
    "it its it's what's i'm need just and can you find name day time".split()
)


def question_keywords(question: str) -> list[str]:
    words = re.findall(r"[A-Za-z0-9][A-Za-z0-9'.-]*", question)
    return [w.strip(".'") for w in words if w.lower().strip(".'") not in _TEST_STOPWORDS]


# --------------------------------------------------------------------------- determinism and splits


def test_the_same_seed_gives_the_identical_inbox():
    assert generate_inbox(7, seed=3) == generate_inbox(7, seed=3)


def test_a_different_seed_gives_a_different_inbox():
    a, b = generate_inbox(7, seed=3), generate_inbox(7, seed=4)
    assert a.persona != b.persona
    assert [e.body for e in a.emails] != [e.body for e in b.emails]


def test_train_and_held_out_share_no_inbox_and_no_persona():
    train_inboxes = {q.inbox_id for q in TRAIN}
    held_inboxes = {q.inbox_id for q in HELD_OUT}
    assert train_inboxes.isdisjoint(held_inboxes)
    train_people = {load_inbox(i).persona.name for i in train_inboxes}
    held_people = {load_inbox(i).persona.name for i in held_inboxes}
    assert train_people.isdisjoint(held_people)
    assert len(train_people | held_people) == len(train_inboxes | held_inboxes)  # one persona per inbox


def test_held_out_split_has_at_least_100_questions_and_train_several_hundred():
    assert len(HELD_OUT) >= 100
    assert len(TRAIN) >= 300


def test_generating_all_splits_takes_under_a_second():
    started = time.perf_counter()
    make_splits(seed=123)  # a seed nothing else uses, so the cache does not help
    assert time.perf_counter() - started < 1.0


def test_every_inbox_holds_30_to_50_emails_with_unique_ids():
    for inbox_id in {q.inbox_id for q in ALL_QUESTIONS}:
        inbox = load_inbox(inbox_id)
        ids = [e.message_id for e in inbox.emails]
        assert 30 <= len(ids) <= 50
        assert len(set(ids)) == len(ids)


def test_questions_have_unique_ids_and_unique_wording_within_an_inbox():
    assert len({q.question_id for q in ALL_QUESTIONS}) == len(ALL_QUESTIONS)
    for inbox_id in {q.inbox_id for q in ALL_QUESTIONS}:
        texts = [q.question for q in load_inbox(inbox_id).questions]
        assert len(set(texts)) == len(texts)


def test_questions_are_varied_across_the_dataset():
    templates = {re.sub(r"[A-Z][\w.'-]*", "X", q.question) for q in ALL_QUESTIONS}
    assert len(templates) >= 40  # many phrasings, not one per kind


# --------------------------------------------------------------------------- answers


def test_every_answer_is_written_in_its_answer_email():
    for q in ALL_QUESTIONS:
        email = load_inbox(q.inbox_id).email(q.answer_message_id)
        text = answer_tokens(" ".join([email.sender, email.subject, email.body]))
        gold = answer_tokens(q.answer)
        assert any(text[i : i + len(gold)] == gold for i in range(len(text))), (q, email.body)


def test_codes_and_amounts_that_answer_a_question_appear_in_no_other_email():
    # identifiers (door codes, references, tracking numbers, amounts: answers with 4+ digits) are unique
    # in their inbox, so the answer email is the only place to find them; times and dates may repeat
    for q in ALL_QUESTIONS:
        gold = answer_tokens(q.answer)
        if sum(c.isdigit() for c in "".join(gold)) < 4 or ":" in q.answer:
            continue
        for email in load_inbox(q.inbox_id).emails:
            if email.message_id != q.answer_message_id:
                text = answer_tokens(" ".join([email.subject, email.body]))
                assert not any(text[i : i + len(gold)] == gold for i in range(len(text))), (q, email)


# --------------------------------------------------------------------------- findable by search


@pytest.mark.parametrize("split", ["train", "held_out"])
def test_every_answer_email_is_in_the_top_5_when_searching_the_question_keywords(split):
    missed = []
    for q in TRAIN if split == "train" else HELD_OUT:
        results = search_inbox(db_for(q.inbox_id, q.seed), question_keywords(q.question), max_results=5)
        if q.answer_message_id not in [r["message_id"] for r in results]:
            missed.append(q.question)
    assert missed == []


def test_every_answer_email_is_in_the_top_5_when_searching_the_raw_question():
    missed = []
    for q in ALL_QUESTIONS:
        results = search_inbox(db_for(q.inbox_id, q.seed), q.question, max_results=5)
        if q.answer_message_id not in [r["message_id"] for r in results]:
            missed.append(q.question)
    assert missed == []
