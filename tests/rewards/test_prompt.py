"""The judge's prompt and the reading of its answers: pure text, no server."""

import pytest

from hone.rewards import DEFAULT_RUBRIC, build_judge_prompt, parse_scores
from hone.rewards.prompt import JudgeAnswerError
from hone.rl.trajectory import Trajectory


def user_text(prompt) -> str:
    return prompt.messages[1]["content"]


def test_the_shared_task_and_tool_schemas_are_written_once_and_each_attempt_under_its_own_id(attempt):
    prompt = build_judge_prompt([attempt("Archive the spam.", "Archived."), attempt("Archive the spam.", "I refuse.")])
    text = user_text(prompt)
    assert text.count("Archive the spam.") == 1 and text.count("You manage an inbox") == 1
    assert text.count("archive(email_id: string): Archive one email") == 1  # tools once, compactly
    assert '<attempt id="1">\n[assistant] Archived.\n</attempt>' in text
    assert '<attempt id="2">\n[assistant] I refuse.\n</attempt>' in text
    assert prompt.ids == ["1", "2"] and prompt.attempt_of == [0, 1]


def test_the_default_rubric_and_the_json_answer_format_are_in_the_system_message(attempt):
    prompt = build_judge_prompt([attempt("t", "a")])
    system = prompt.messages[0]["content"]
    assert DEFAULT_RUBRIC in system and '{"scores": [{"id"' in system
    custom = build_judge_prompt([attempt("t", "a")], rubric="Shorter is better.")
    assert "Shorter is better." in custom.messages[0]["content"] and DEFAULT_RUBRIC not in custom.messages[0]["content"]


def test_the_shared_prefix_stops_before_the_first_assistant_message_even_when_attempts_agree(attempt):
    prompt = build_judge_prompt([attempt("t", "Looking.", "Found it."), attempt("t", "Looking.", "Gave up.")])
    text = user_text(prompt)
    assert text.count("[assistant] Looking.") == 2  # each attempt shows everything the agent did


def test_identical_attempts_share_one_id(attempt):
    same, other = attempt("t", "Archived."), attempt("t", "No.")
    prompt = build_judge_prompt([same, other, same.model_copy(deep=True), other])
    assert prompt.ids == ["1", "2"] and prompt.attempt_of == [0, 1, 0, 1]
    assert user_text(prompt).count("<attempt id=") == 2


def test_long_tool_outputs_are_clipped_but_assistant_messages_are_kept_whole(attempt):
    trajectory = attempt("t")
    call = {"id": "c1", "type": "function", "function": {"name": "archive", "arguments": '{"email_id": "7"}'}}
    trajectory.messages += [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "x" * 5000},
        {"role": "assistant", "content": "y" * 3000},
    ]
    text = user_text(build_judge_prompt([trajectory], max_tool_chars=100))
    assert '[assistant calls] archive({"email_id": "7"})' in text
    assert "x" * 100 + " ...[4900 more characters cut]" in text and "x" * 101 not in text
    assert "y" * 3000 in text


def test_attempts_with_different_tools_show_their_tools_inside_the_attempt(attempt):
    first, second = attempt("t", "a"), attempt("t", "b")
    second.tools = [{"type": "function", "function": {"name": "delete", "parameters": {"type": "object", "properties": {}}}}]
    text = user_text(build_judge_prompt([first, second]))
    assert text.index("- delete()") > text.index('<attempt id="2">')
    assert text.index("- archive(") > text.index('<attempt id="1">')


def test_a_group_without_tools_has_no_tools_section():
    bare = Trajectory(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    assert "<tools>" not in user_text(build_judge_prompt([bare]))


# --------------------------------------------------------------------------- reading answers
def test_scores_are_read_from_json_wrapped_in_prose_and_code_fences_with_numeric_ids():
    text = 'Here you go:\n```json\n{"scores": [{"id": 1, "explanation": "done", "score": 0.9}, {"id": "2", "score": "0.25"}]}\n```'
    assert parse_scores(text, ["1", "2"]) == {"1": (0.9, "done"), "2": (0.25, "")}


@pytest.mark.parametrize(
    "text",
    [
        '[{"id": "1", "score": 1}, {"id": "2", "score": 0}]',  # a bare list
        '{"results": [{"id": "1", "score": 1}, {"id": "2", "score": 0}]}',  # another name for the list
        '{"1": 1, "2": {"score": 0}}',  # an id -> score mapping
        '{"scores": {"1": 1.0, "2": 0.0}}',
        'not json {oops} then {"scores": [{"id": "1", "score": 1}, {"id": "2", "score": 0}]}',  # first *valid* JSON
        '{"id": "1", "score": 1} {"id": "2", "score": 0}',  # one object per attempt, as small judges write
        '[user] <tool_call>{"name": "search_inbox"}</tool_call> {"scores": [{"id": "1", "score": 1}, {"id": "2", "score": 0}]}',  # an echo first
    ],
)
def test_other_json_shapes_of_the_same_scores_are_accepted(text):
    assert {k: s for k, (s, _) in parse_scores(text, ["1", "2"]).items()} == {"1": 1.0, "2": 0.0}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("I think attempt 1 is best.", "no JSON object"),
        ('{"scores": [{"id": "1", "score": 0.5}]}', "ids 2 have none"),  # missing id, wrong count
        ('{"scores": [{"id": "1", "score": 0.5}, {"id": "2", "score": 0.1}, {"id": "3", "score": 0.1}]}', "id '3', which does not exist"),
        ('{"scores": [{"id": "1", "score": 0.5}, {"id": "1", "score": 0.1}]}', "id '1' twice"),
        ('{"scores": [{"id": "1", "score": 1.5}, {"id": "2", "score": 0.1}]}', "outside [0, 1]"),
        ('{"scores": [{"id": "1", "score": -0.1}, {"id": "2", "score": 0.1}]}', "outside [0, 1]"),
        ('{"scores": [{"id": "1", "score": "high"}, {"id": "2", "score": 0.1}]}', "not a number"),
        ('{"scores": [{"id": "1", "score": true}, {"id": "2", "score": 0.1}]}', "not a number"),
        ('{"scores": [{"score": 0.5}, {"id": "2", "score": 0.1}]}', "has no id"),
        ('{"verdict": "fine"}', "is not"),
    ],
)
def test_unusable_answers_are_rejected_with_a_reason_the_judge_can_act_on(text, problem):
    with pytest.raises(JudgeAnswerError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        parse_scores(text, ["1", "2"])


def test_the_prompt_ends_with_the_answer_skeleton_listing_every_attempt_id(attempt):
    prompt = build_judge_prompt([attempt("t", "a"), attempt("t", "b"), attempt("t", "c")])
    last_line = user_text(prompt).splitlines()[-1]
    assert parse_scores(last_line, ["1", "2", "3"]) == {i: (0.0, "...") for i in ("1", "2", "3")}
