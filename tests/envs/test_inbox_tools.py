"""The agent's tools and one agent turn, over a real generated inbox in real SQLite."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from hone.envs.inbox.agent import LAST_TURN_NOTE, EpisodeState, take_turn
from hone.envs.inbox.data import load_inbox
from hone.envs.inbox.db import InboxDB, db_for
from hone.envs.inbox.tools import TOOL_NAMES, TOOL_SCHEMAS, call_tool, fts_query, read_email, search_inbox

INBOX = load_inbox(0)
DB = db_for(0)
QUESTION = INBOX.questions[0]


def tool_call(name: str, arguments: dict | str, call_id: str = "call_1") -> dict:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": raw}}


# --------------------------------------------------------------------------- search


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(st.text(), max_size=5)), st.one_of(st.integers(), st.text(), st.none()))
def test_search_never_raises_on_arbitrary_text(keywords, max_results):
    result = search_inbox(DB, keywords, max_results)
    assert isinstance(result, list) or result.startswith("Error: give some keywords")  # never "search failed"


def test_fts_operators_quotes_and_punctuation_are_searched_as_plain_words():
    for text in ['"door', "door AND code", "NEAR(door code)", "code*", "subject:door", "(((code)", "-code", "^code", 'a"b"c']:
        assert isinstance(search_inbox(DB, text), list), text


def test_empty_keywords_return_an_error_the_model_can_read():
    assert search_inbox(DB, "").startswith("Error")
    assert search_inbox(DB, "  ?!  ").startswith("Error")
    assert search_inbox(DB, "(((").startswith("Error")
    assert search_inbox(DB, []).startswith("Error")


def test_keywords_are_ored_so_a_partly_matching_query_still_finds_the_email():
    results = search_inbox(DB, QUESTION.question + " zebra quantum xylophone")
    assert QUESTION.answer_message_id in [r["message_id"] for r in results]


def test_a_keyword_list_works_like_a_keyword_string():
    words = ["invoice", "tracking", "code"]
    assert search_inbox(DB, words) == search_inbox(DB, " ".join(words))


def test_stopwords_are_dropped_unless_nothing_else_is_left():
    assert fts_query("what is the door code") == '"door" OR "code"'
    assert fts_query("the") == '"the"'


def test_max_results_is_clamped_between_1_and_10():
    assert len(search_inbox(DB, "the you your", max_results=0)) == 1
    assert len(search_inbox(DB, "the you your", max_results=1000)) <= 10
    assert len(search_inbox(DB, "the you your", max_results="3")) == 3


def test_search_results_carry_id_subject_sender_date_and_a_short_snippet():
    [hit, *_] = search_inbox(DB, QUESTION.question)
    assert set(hit) == {"message_id", "subject", "sender", "date", "snippet"}
    assert len(hit["date"]) == 10 and len(hit["snippet"]) < 200


def test_a_file_database_works_like_the_in_memory_one(tmp_path):
    db = InboxDB(INBOX.emails, str(tmp_path / "inbox.sqlite"))
    assert search_inbox(db, QUESTION.question) == search_inbox(DB, QUESTION.question)
    db.close()


# --------------------------------------------------------------------------- read and answer


def test_reading_an_unknown_id_returns_an_error_string_not_an_exception():
    for bad in ["m999-99", "", "   ", None, 42, ["m0-01"], "'; DROP TABLE emails; --"]:
        assert read_email(DB, bad).startswith("Error"), bad
    assert DB.get(INBOX.emails[0].message_id) is not None  # the table survived


def test_reading_a_known_id_returns_the_email_with_a_truncated_body():
    email = INBOX.email(QUESTION.answer_message_id)
    got = read_email(DB, f" <{email.message_id}> ")  # stray quoting from a model is forgiven
    assert got["subject"] == email.subject and got["sender"] == email.sender
    assert len(got["body"]) <= 600 + len("...")


def test_call_tool_turns_bad_arguments_into_error_text():
    assert not call_tool(DB, "search_inbox", "{not json").ok
    assert not call_tool(DB, "search_inbox", "[1, 2]").ok
    assert not call_tool(DB, "read_email", {}).ok
    assert not call_tool(DB, "answer", {"text": "  "}).ok
    assert not call_tool(DB, "delete_everything", {}).ok


def test_answer_tool_returns_the_final_answer_and_cleaned_sources():
    result = call_tool(DB, "answer", {"text": "4821", "sources": ["<m0-03>", 7]})
    assert result.final == {"answer": "4821", "sources": ["m0-03", "7"]}


def test_tool_schemas_are_openai_function_tools_matching_the_dispatcher():
    assert {t["type"] for t in TOOL_SCHEMAS} == {"function"}
    assert TOOL_NAMES == {"search_inbox", "read_email", "answer"}
    for t in TOOL_SCHEMAS:
        assert t["function"]["parameters"]["type"] == "object"


# --------------------------------------------------------------------------- one agent turn


def test_a_search_then_read_then_answer_episode_records_what_was_found_and_read():
    state = EpisodeState(max_turns=6)
    gold = QUESTION.answer_message_id

    replies = take_turn(DB, state, {"role": "assistant", "content": "", "tool_calls": [tool_call("search_inbox", {"keywords": QUESTION.question})]})
    assert [r["role"] for r in replies] == ["tool"] and replies[0]["tool_call_id"] == "call_1"
    assert gold in state.found_ids and not state.done

    take_turn(DB, state, {"role": "assistant", "content": "", "tool_calls": [tool_call("read_email", {"message_id": gold})]})
    assert state.read_ids == {gold}

    take_turn(DB, state, {"role": "assistant", "tool_calls": [tool_call("answer", {"text": QUESTION.answer, "sources": [gold]})]})
    outcome = state.outcome(QUESTION)
    assert state.done and outcome.answer == QUESTION.answer and outcome.sources == (gold,)
    assert outcome.turns == 3 and outcome.valid_tool_calls == 3 and not outcome.hit_turn_limit


def test_answer_ends_the_turn_even_with_calls_after_it():
    state = EpisodeState()
    calls = [tool_call("answer", {"text": "x"}, "c1"), tool_call("search_inbox", {"keywords": "code"}, "c2")]
    replies = take_turn(DB, state, {"role": "assistant", "tool_calls": calls})
    assert state.done and len(replies) == 1 and state.found_ids == set()


def test_a_malformed_call_is_counted_and_the_model_is_told_in_a_user_message():
    state = EpisodeState()
    replies = take_turn(DB, state, {"role": "assistant", "content": "<tool_call>{bad"}, tool_call_error="tool call is not valid JSON")
    assert state.malformed_calls == 1 and not state.done and state.answer is None
    assert replies[0]["role"] == "user" and "not valid JSON" in replies[0]["content"]


def test_plain_text_without_a_tool_call_is_the_final_answer():
    state = EpisodeState()
    assert take_turn(DB, state, {"role": "assistant", "content": "It is 4821."}) == []
    assert state.done and state.answer == "It is 4821."


def test_the_second_to_last_turn_tells_the_model_to_answer_next():
    state = EpisodeState(max_turns=2, question=QUESTION.question)
    replies = take_turn(DB, state, {"role": "assistant", "tool_calls": [tool_call("search_inbox", {"keywords": "code"})]})
    assert replies[-1] == {"role": "user", "content": LAST_TURN_NOTE.format(question=QUESTION.question)}


def test_running_out_of_turns_without_answering_is_marked_as_hitting_the_limit():
    state = EpisodeState(max_turns=2)
    for _ in range(2):
        take_turn(DB, state, {"role": "assistant", "tool_calls": [tool_call("search_inbox", {"keywords": "code"})]})
    outcome = state.outcome(QUESTION)
    assert outcome.hit_turn_limit and outcome.answer is None and outcome.turns == 2
