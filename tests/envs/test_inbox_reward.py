"""The inbox reward ranks outcomes the way a user would, and `success` means a correct answer."""

from __future__ import annotations

import pytest

from hone.envs.inbox.answers import candidates, gold_value, is_correct
from hone.envs.inbox.reward import EpisodeOutcome, judge_answer, score_episode

GOLD = dict(gold_answer="4821", gold_message_id="m1-07", max_turns=6)


def outcome(**kw) -> EpisodeOutcome:
    return EpisodeOutcome(**{**GOLD, "answer": None, **kw})


CORRECT_CITED_FAST = outcome(answer="The code is 4821.", sources=("m1-07",), found_ids=frozenset({"m1-07"}),
                             read_ids=frozenset({"m1-07"}), turns=3, valid_tool_calls=3)
CORRECT_SLOW = outcome(answer="4821", found_ids=frozenset({"m1-07"}), turns=6, valid_tool_calls=6)
IDK = outcome(answer="I don't know.", turns=3, valid_tool_calls=3)
OUT_OF_TURNS = outcome(turns=6, valid_tool_calls=6, hit_turn_limit=True)
WRONG = outcome(answer="The code is 1234.", turns=3, valid_tool_calls=3)
MALFORMED_ONLY = outcome(turns=6, malformed_calls=6, hit_turn_limit=True)


def test_outcomes_are_ordered_correct_cited_fast_then_correct_then_idk_then_wrong_then_malformed():
    rewards = [score_episode(o).reward for o in [CORRECT_CITED_FAST, CORRECT_SLOW, IDK, WRONG, MALFORMED_ONLY]]
    assert rewards == sorted(rewards, reverse=True) and len(set(rewards)) == 5


def test_the_reward_scale_matches_the_documented_numbers():
    # correct: 1.0 + 0.1 source + 0.1 * (6 - 3) / (6 - 1) turns = 1.16
    assert score_episode(CORRECT_CITED_FAST).reward == pytest.approx(1.16)
    # correct, nothing cited, all 6 turns used: 1.0 + 0 + 0.1 * 0 = 1.0
    assert score_episode(CORRECT_SLOW).reward == pytest.approx(1.0)
    assert score_episode(IDK).reward == 0.0
    assert score_episode(OUT_OF_TURNS).reward == 0.0
    assert score_episode(WRONG).reward == -0.5
    assert score_episode(MALFORMED_ONLY).reward == -1.0


def test_running_out_of_turns_beats_a_wrong_answer():
    assert score_episode(OUT_OF_TURNS).reward > score_episode(WRONG).reward


def test_finding_and_reading_the_answer_email_earns_partial_credit():
    seen = frozenset({"m1-07"})
    wrong_but_read = outcome(answer="1234", found_ids=seen, read_ids=seen, turns=3, valid_tool_calls=3)
    idk_but_found = outcome(answer="I don't know", found_ids=seen, turns=3, valid_tool_calls=3)
    # wrong: -0.5 + 0.1 found + 0.1 read = -0.3
    assert score_episode(wrong_but_read).reward == pytest.approx(-0.3)
    # no answer: 0 + 0.1 found = 0.1
    assert score_episode(idk_but_found).reward == pytest.approx(0.1)
    assert score_episode(wrong_but_read).reward > score_episode(WRONG).reward
    assert score_episode(idk_but_found).reward > score_episode(IDK).reward


def test_partial_credit_never_lifts_a_wrong_answer_above_an_honest_i_dont_know():
    seen = frozenset({"m1-07"})
    best_wrong = outcome(answer="1234", found_ids=seen, read_ids=seen, turns=3, valid_tool_calls=3)
    worst_idk = outcome(answer="I don't know", turns=6, valid_tool_calls=2, malformed_calls=10)
    # -0.5 + 0.2 = -0.3  <  0 - 0.2 (malformed penalty cap) = -0.2
    assert score_episode(best_wrong).reward < score_episode(worst_idk).reward


def test_malformed_calls_cost_a_little_but_a_correct_answer_still_beats_any_non_answer():
    messy_correct = outcome(answer="4821", turns=6, valid_tool_calls=1, malformed_calls=9)
    # 1.0 + 0 + 0 - min(0.2, 0.05 * 9) = 0.8
    assert score_episode(messy_correct).reward == pytest.approx(0.8)
    assert score_episode(messy_correct).success


def test_a_wrong_text_reply_after_only_malformed_calls_scores_as_malformed():
    assert score_episode(outcome(answer="1234", turns=3, malformed_calls=2)).reward == -1.0


def test_citing_an_id_never_seen_earns_nothing():
    blind = outcome(answer="4821", sources=("m1-07",), turns=6, valid_tool_calls=1)
    assert not score_episode(blind).cited_source


def test_success_is_true_only_for_a_correct_answer():
    assert score_episode(CORRECT_CITED_FAST).success and score_episode(CORRECT_SLOW).success
    for o in [IDK, OUT_OF_TURNS, WRONG, MALFORMED_ONLY]:
        assert not score_episode(o).success


# --------------------------------------------------------------------------- the strict checker


@pytest.mark.parametrize(
    "reply, gold, kind",
    [
        ("BA2491", "BA 2491", "code"),
        ("flight BA 2491", "BA 2491", "code"),
        ("The door code is 4821.", "4821", "code"),
        ("12-5-33", "12-05-33", "code"),
        ("It's €1,240.00.", "€1,240.00", "money"),
        ("1240 EUR", "$1,240.00", "money"),
        ("at 09:30", "9:30 am", "time"),
        ("The shift starts at 9am.", "9:00 am", "time"),
        ("15:15", "3:15 pm", "time"),
        ("4 March", "Tuesday, March 4", "date"),
        ("2025-03-04", "March 4", "date"),
    ],
)
def test_the_fact_alone_is_correct_in_any_normal_spelling(reply, gold, kind):
    assert is_correct(reply, gold, kind)
    assert judge_answer(reply, gold, kind) == "correct"


@pytest.mark.parametrize(
    "reply, gold, kind",
    [
        ("14821", "4821", "code"),
        ("12-53-3", "12-5-33", "code"),
        ("$1,240.50", "$1,240.00", "money"),
        ("BA 249", "BA 2491", "code"),
        ("9:00 pm", "9:00 am", "time"),
        ("March 5", "March 4", "date"),
    ],
)
def test_near_misses_are_wrong(reply, gold, kind):
    assert judge_answer(reply, gold, kind) == "wrong"


def test_a_time_without_am_or_pm_names_no_time():
    assert candidates("3:15", "time") == set()
    assert not is_correct("3:15", "3:15 pm", "time")


@pytest.mark.parametrize(
    "reply",
    [
        "Either 1234, 98765 or 4821",  # a list of guesses
        "Dear customer " + "words " * 30 + "the code is 4821",  # a dump
        "[m1-07] 2024-05-02, from Facilities: Access to the Leeds office. The front door code is 4821.",  # a pasted hit
    ],
)
def test_the_right_value_among_others_or_in_a_long_reply_is_not_a_success(reply):
    assert judge_answer(reply, "4821", "code") == "verbose"
    assert not is_correct(reply, "4821", "code")


def test_the_right_fact_not_alone_ranks_between_i_dont_know_and_correct():
    def reward(answer):
        return score_episode(EpisodeOutcome(gold_answer="4821", gold_message_id="m1", answer=answer, max_turns=4, turns=2)).reward

    verbose = reward("Either 1234 or 4821")
    # verbose: 0.4 base, no partial credit; correct >= 0.8; I don't know: 0.0; wrong: -0.5
    assert reward("4821") > verbose == 0.4 > reward("I don't know") > reward("1234")


@pytest.mark.parametrize(
    "reply", ["I don't know", "I do not know.", "Sorry, I couldn't find that email.", "Unknown", "I'm not sure.", "", None]
)
def test_i_dont_know_and_empty_replies_are_no_answer(reply):
    assert judge_answer(reply, "4821", "code") == "no_answer"


@pytest.mark.parametrize("reply", ["Not sure, maybe 1234.", "I don't know, but it could be 9999", "You're not sure where to look: Istanbul"])
def test_a_hedged_guess_is_a_wrong_answer_not_an_i_dont_know(reply):
    assert judge_answer(reply, "4821", "code") == "wrong"


def test_a_gold_answer_must_name_exactly_one_value():
    with pytest.raises(ValueError, match="names 2 values"):
        gold_value("4821 or 1234", "code")
