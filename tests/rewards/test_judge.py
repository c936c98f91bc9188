"""Judging groups against a real HTTP judge (a stand-in server on 127.0.0.1)."""

import asyncio
import dataclasses
import socket

import pytest

from hone.errors import TooManyFailuresError
from hone.rewards import Judge, JudgeError, judge_group, judge_groups
from hone.rl.gather import GatherConfig
from hone.rl.trajectory import TrajectoryGroup
from hone.types import FailureRecord

from .conftest import attempt_ids

GOOD = '{"scores": [{"id": "1", "explanation": "reached the goal", "score": 0.9}, {"id": "2", "explanation": "gave up", "score": 0.1}]}'


def two_attempts(attempt, task="Archive the spam."):
    return TrajectoryGroup(trajectories=[attempt(task, "Archived.", reward=1.0), attempt(task, "I give up.", reward=0.0)])


def test_each_trajectory_gets_its_score_and_explanation_and_by_default_its_reward(stand_in, config, attempt):
    stand_in.answers.append(GOOD)
    group = two_attempts(attempt)
    result = asyncio.run(judge_group(group, config))
    assert result.scores == [0.9, 0.1] and result.calls == 1 and result.retries == 0 and not result.cache_hit
    assert [t.metrics["judge_score"] for t in group.trajectories] == [0.9, 0.1]
    assert [t.metadata["judge_explanation"] for t in group.trajectories] == ["reached the goal", "gave up"]
    assert group.rewards == [0.9, 0.1]
    assert [t.metadata["code_reward"] for t in group.trajectories] == [1.0, 0.0]  # kept for combine_rewards
    # the stand-in answers usage 100 prompt + 10 completion tokens per call
    assert (result.prompt_tokens, result.completion_tokens) == (100, 10)
    assert group.metadata["judge"]["calls"] == 1


def test_set_reward_false_leaves_the_code_reward_in_place(stand_in, config, attempt):
    stand_in.answers.append(GOOD)
    group = two_attempts(attempt)
    asyncio.run(judge_group(group, config, set_reward=False))
    assert group.rewards == [1.0, 0.0] and group.trajectories[0].metrics["judge_score"] == 0.9


def test_the_request_names_the_model_asks_for_json_and_sends_the_key_from_the_environment(stand_in, config, attempt, monkeypatch):
    monkeypatch.setenv("HONE_JUDGE_API_KEY", "judge-secret")
    asyncio.run(judge_group(two_attempts(attempt), config))
    [request] = stand_in.requests
    assert request["model"] == "stand-in-judge" and request["temperature"] == 0.0
    schema = request["response_format"]["json_schema"]["schema"]
    assert request["response_format"]["type"] == "json_schema"
    entries = schema["properties"]["scores"]["prefixItems"]  # each attempt once, in order
    assert [e["properties"]["id"]["const"] for e in entries] == attempt_ids(request)
    assert stand_in.headers[0]["authorization"] == "Bearer judge-secret"


def test_the_api_key_falls_back_to_openai_api_key_then_to_a_dummy(config, monkeypatch):
    monkeypatch.delenv("HONE_JUDGE_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "openai-secret")
    assert config.api_key() == "openai-secret"
    monkeypatch.delenv("OPENAI_API_KEY")
    assert config.api_key() == "hone-local"


@pytest.mark.parametrize(
    "bad",
    [
        "Attempt 1 is better.",  # no JSON
        '{"scores": [{"id": "1", "score": 0.9}]}',  # missing id: wrong count
        '{"scores": [{"id": "1", "score": 0.9}, {"id": "2", "score": 0.1}, {"id": "7", "score": 0.1}]}',  # extra id
        '{"scores": [{"id": "1", "score": 9}, {"id": "2", "score": 0.1}]}',  # out of range
    ],
)
def test_an_unusable_answer_is_sent_back_with_its_problem_and_the_retry_succeeds(stand_in, config, attempt, bad):
    stand_in.answers += [bad, GOOD]
    result = asyncio.run(judge_group(two_attempts(attempt), config))
    assert result.scores == [0.9, 0.1] and result.calls == 2 and result.retries == 1
    first, second = stand_in.requests
    assert second["messages"][:2] == first["messages"]
    assert second["messages"][2] == {"role": "assistant", "content": bad}
    assert second["messages"][3]["content"].startswith("That answer cannot be used:")
    # tokens of both calls: 2 x (100 + 10)
    assert (result.prompt_tokens, result.completion_tokens) == (200, 20)


def test_a_server_error_is_retried_like_a_malformed_answer(stand_in, config, attempt):
    stand_in.answers += [503, GOOD]
    result = asyncio.run(judge_group(two_attempts(attempt), config))
    assert result.scores == [0.9, 0.1] and result.calls == 2


def test_exhausted_retries_raise_a_judge_error_naming_the_last_problem(stand_in, config, attempt):
    stand_in.answers += ["no", "still no", '{"scores": []}']
    group = two_attempts(attempt)
    with pytest.raises(JudgeError, match=r"no usable scores in 3 calls; the last problem: .*ids 1, 2 have none"):
        asyncio.run(judge_group(group, config))
    assert len(stand_in.requests) == 3  # 1 + max_retries=2
    assert group.rewards == [1.0, 0.0]  # nothing was written


def test_a_client_error_like_a_wrong_model_is_not_retried(stand_in, config, attempt):
    stand_in.answers += [404, GOOD]
    with pytest.raises(JudgeError, match="HTTP 404"):
        asyncio.run(judge_group(two_attempts(attempt), config))
    assert len(stand_in.requests) == 1


def test_an_unreachable_judge_is_a_judge_error_not_a_crash(config, attempt):
    with socket.socket() as s:  # a port nobody listens on once this block ends
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = dataclasses.replace(config, base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(JudgeError, match="in 2 calls; the last problem: the request failed: Connection error"):
        asyncio.run(judge_group(two_attempts(attempt), unreachable))


def test_identical_attempts_are_judged_once_and_share_a_score(stand_in, config, attempt):
    done, stuck = attempt("t", "Archived."), attempt("t", "Stuck.")
    group = TrajectoryGroup(trajectories=[done, stuck, done.model_copy(deep=True), stuck.model_copy(deep=True)])
    result = asyncio.run(judge_group(group, config))
    [request] = stand_in.requests
    assert request["messages"][1]["content"].count("<attempt id=") == 2  # the judge saw 2 attempts, not 4
    # the stand-in scores id "1" 1.0 and id "2" 0.5
    assert result.unique_attempts == 2 and group.rewards == [1.0, 0.5, 1.0, 0.5]


def test_a_repeated_group_is_served_from_the_disk_cache_without_a_request(stand_in, config, attempt):
    asyncio.run(judge_group(two_attempts(attempt), config))
    again = two_attempts(attempt)
    result = asyncio.run(judge_group(again, config))
    assert len(stand_in.requests) == 1
    assert result.cache_hit and result.calls == 0 and result.prompt_tokens == 0
    assert again.rewards == [1.0, 0.5]
    # another rubric is another prompt: a miss
    asyncio.run(judge_group(two_attempts(attempt), config, rubric="Politeness is all that matters."))
    assert len(stand_in.requests) == 2


def test_the_cache_can_be_turned_off(stand_in, config, attempt):
    uncached = dataclasses.replace(config, cache=False)
    asyncio.run(judge_group(two_attempts(attempt), uncached))
    asyncio.run(judge_group(two_attempts(attempt), uncached))
    assert len(stand_in.requests) == 2


# --------------------------------------------------------------------------- failures and the gather budget
def garbage_for(word, stand_in):
    """A judge answer function: garbage for prompts that mention `word`, good scores otherwise."""

    def answer(request):
        return "no idea" if word in request["messages"][1]["content"] else stand_in.score_every_attempt(request)

    return answer


def test_a_group_whose_judging_fails_becomes_failures_within_the_gather_budget(stand_in, config, attempt):
    stand_in.answers += [garbage_for("POISON", stand_in)] * 4  # 1 good call + 3 failing ones
    good, poisoned = two_attempts(attempt, "Archive the spam."), two_attempts(attempt, "POISON task")
    metrics = asyncio.run(
        judge_groups([good, poisoned], config, gather_config=GatherConfig(group_size=2, max_exceptions=2), concurrency=1)
    )
    assert good.rewards == [1.0, 0.5]
    assert poisoned.trajectories == []  # dropped from training
    # one failure record per lost rollout: 2 of 4 rollouts, within the budget of 2
    assert [f.type for f in poisoned.exceptions] == ["JudgeError", "JudgeError"]
    assert "POISON" not in poisoned.exceptions[0].message and "no usable scores" in poisoned.exceptions[0].message
    assert metrics["judge/groups_failed"] == 1.0
    # calls: 1 for the good group + 3 for the poisoned one (1 + max_retries); 2 retries; 4 x 100 prompt tokens
    assert (metrics["judge/calls"], metrics["judge/retries"], metrics["judge/prompt_tokens"]) == (4.0, 2.0, 400.0)
    assert metrics["time/judge"] > 0


def test_judge_failures_and_rollout_failures_together_beyond_the_budget_stop_the_step(stand_in, config, attempt):
    stand_in.answers += [garbage_for("POISON", stand_in)] * 4
    good, poisoned = two_attempts(attempt, "Archive the spam."), two_attempts(attempt, "POISON task")
    good.exceptions.append(FailureRecord(type="RuntimeError", message="tool timed out"))  # a rollout failure from gather
    # 5 rollouts started, 1 failed in gather + 2 lost to the judge = 3 > budget int(0.5 * 5) = 2
    with pytest.raises(TooManyFailuresError, match=r"3 of 5 rollouts failed or could not be judged, more than the budget of 2.*JudgeError"):
        asyncio.run(judge_groups([good, poisoned], config, gather_config=GatherConfig(max_exceptions=0.5), concurrency=1))


def test_one_judge_serves_many_groups_and_the_group_order_is_kept(stand_in, config, attempt):
    groups = [two_attempts(attempt, f"task {i}") for i in range(5)]
    judge = Judge(config)

    async def run():
        async with judge:
            return await judge_groups(groups, judge)

    metrics = asyncio.run(run())
    assert all(g.rewards == [1.0, 0.5] for g in groups)
    assert metrics["judge/calls"] == 5.0 and metrics["judge/cache_hits"] == 0.0
