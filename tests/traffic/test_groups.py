"""Logged traffic into training groups: feedback becomes rewards, stale data and lone tasks are
dropped and counted, malformed replies are penalised whatever the feedback said."""

from __future__ import annotations

import itertools

from hone.traffic import Feedback, LoggedCompletion, ServedChoice
from hone.traffic.groups import TrafficDataConfig, groups_from_traffic

_ids = itertools.count()


def completion(step: int = 0, task: str | None = "t", prompt=(1, 2, 3), replies=("fine",), rollout: str | None = None, error: str | None = None) -> LoggedCompletion:
    number = next(_ids)
    choices = [ServedChoice([10 + number, 11], [-0.5, -0.25], None, {"role": "assistant", "content": text}, "stop", error) for text in replies]
    return LoggedCompletion(
        f"c{number}", "m", f"m@{step}", step, rollout, task, "h" + "".join(map(str, prompt)), "chat.completions", float(number),
        {"messages": [{"role": "user", "content": "q"}]}, list(prompt), choices,
    )  # fmt: skip


def reward(target: LoggedCompletion | str, value: float, choice: int = 0, at: float = 0.0) -> Feedback:
    if isinstance(target, str):
        return Feedback(f"f{next(_ids)}", "m", None, target, 0, value, None, at)
    return Feedback(f"f{next(_ids)}", "m", target.id, None, choice, value, None, at)


def rewards(batch) -> dict[str, list[float]]:
    return {g.metadata["task_key"]: sorted(t.reward for t in g.trajectories) for g in batch.groups}


def test_feedback_becomes_rewards_of_groups_that_share_a_task_and_the_served_tokens_are_kept():
    a, b, c = completion(), completion(), completion(task=None)
    batch = groups_from_traffic([a, b, c], [reward(a, 1.0), reward(b, 0.0), reward(b, 0.5, at=9.0), reward(c, 1.0)], current_step=0)
    assert rewards(batch) == {"task:t": [0.5, 1.0]}  # the newest feedback on b wins
    turn = batch.groups[0].trajectories[0].turns[0]
    assert (turn.prompt_tokens, turn.completion_tokens, turn.completion_logprobs) == ([1, 2, 3], a.choices[0].token_ids, [-0.5, -0.25])
    assert batch.counts["singletons_dropped"] == 1  # c: a task seen once has no baseline


def test_without_a_task_key_the_same_prompt_is_the_same_task_and_each_choice_is_an_attempt():
    two = completion(task=None, replies=("a", "b"))
    other_prompt = completion(task=None, prompt=(9,))
    batch = groups_from_traffic([two, other_prompt], [reward(two, 1.0, 0), reward(two, 0.0, 1), reward(other_prompt, 1.0)], current_step=0)
    assert rewards(batch) == {"prompt:h123": [0.0, 1.0]}


def test_stale_data_is_dropped_and_counted_either_side_of_the_current_step():
    old, recent, rolled_back = completion(step=0), completion(step=5), completion(step=9)
    feedback = [reward(old, 1.0), reward(recent, 0.0), reward(rolled_back, 1.0)]
    batch = groups_from_traffic([old, recent, rolled_back], feedback, current_step=6, config=TrafficDataConfig(max_staleness=2))
    assert batch.counts["stale_dropped"] == 2 and batch.groups == []


def test_a_malformed_reply_is_penalised_even_when_its_feedback_liked_it():
    broken, empty, good = completion(error="no tool named 'serch'"), completion(replies=("  ",)), completion()
    feedback = [reward(broken, 1.0), reward(good, 1.0)]  # `empty` has no feedback: penalised all the same
    batch = groups_from_traffic([broken, empty, good], feedback, current_step=0, config=TrafficDataConfig(malformed_reward=-2.0))
    assert rewards(batch) == {"task:t": [-2.0, -2.0, 1.0]}
    assert batch.counts["malformed_penalised"] == 2


def test_unscored_replies_are_left_out_but_kept_for_a_judge():
    a, b = completion(), completion()
    batch = groups_from_traffic([a, b], [], current_step=0)
    assert batch.groups == [] and batch.counts["unscored"] == 2
    assert [t.metadata["completion_id"] for t in batch.unscored["task:t"]] == [a.id, b.id]


def test_a_rollout_with_its_own_feedback_trains_as_one_multi_turn_trajectory():
    first, second = completion(rollout="r1"), completion(rollout="r1")
    lone = completion()
    batch = groups_from_traffic([second, first, lone], [reward("r1", 1.0), reward(lone, 0.0)], current_step=0)
    trajectory = next(t for t in batch.groups[0].trajectories if t.metadata.get("rollout_id") == "r1")
    assert [t.completion_tokens for t in trajectory.turns] == [first.choices[0].token_ids, second.choices[0].token_ids]
    assert rewards(batch) == {"task:t": [0.0, 1.0]} and batch.counts["rollouts_scored"] == 1


def test_only_the_newest_fresh_completions_are_used():
    old, newer, newest = completion(), completion(), completion()
    feedback = [reward(old, 1.0), reward(newer, 0.0), reward(newest, 1.0)]
    batch = groups_from_traffic([newest, old, newer], feedback, current_step=0, config=TrafficDataConfig(max_completions=2))
    assert rewards(batch) == {"task:t": [0.0, 1.0]} and batch.counts["older_left_out"] == 1
    assert {t.metadata["completion_id"] for t in batch.groups[0].trajectories} == {newer.id, newest.id}
