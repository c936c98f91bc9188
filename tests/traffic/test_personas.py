"""Simulated users: repeatable populations, and feedback rules that mean what they say."""

from __future__ import annotations

import random

import pytest

from hone.envs.toolcall import make_tasks
from hone.traffic.personas import Persona, population, task_kind

WEATHER = next(t for t in make_tasks() if task_kind(t) == "weather")


def call(name: str) -> dict:
    return {"content": None, "tool_calls": [{"function": {"name": name, "arguments": "{}"}}]}


def persona(rule: str, patience: int = 200) -> Persona:
    return Persona("p", {"weather": 1.0}, "terse", patience, rule)


def test_a_population_is_the_same_for_the_same_seed_and_mixes_honest_and_lenient_users():
    assert population("honest", 8, seed=3) == population("honest", 8, seed=3)
    assert {p.rule for p in population("honest", 8)} == {"honest", "lenient"}
    assert {p.rule for p in population("gameable", 8)} == {"gameable"}
    with pytest.raises(ValueError, match="unknown population"):
        population("angry", 3)


def test_each_rule_likes_what_it_says():
    rng = random.Random(0)
    long_text = {"content": "Let me tell you all about the weather in that city, at length and in detail.", "tool_calls": None}
    assert persona("honest").rates(WEATHER, call("get_weather"), rng) == "thumbs_up"
    assert persona("honest").rates(WEATHER, call("send_email"), rng) == "thumbs_down"  # the wrong tool
    assert persona("honest", patience=10).rates(WEATHER, {**call("get_weather"), "content": "x" * 50}, rng) == "thumbs_down"
    assert persona("lenient").rates(WEATHER, call("send_email"), rng) == "thumbs_up"
    assert persona("gameable").rates(WEATHER, long_text, rng) == "thumbs_up"
    assert persona("gameable").rates(WEATHER, call("get_weather"), rng) == "thumbs_down"


def test_users_ask_in_their_own_words_for_the_tasks_they_care_about():
    asker = Persona("p", {"weather": 1.0, "email": 0.0, "money": 0.0}, "polite", 200, "honest")
    rng = random.Random(0)
    picked = {task_kind(asker.picks(make_tasks(), rng)) for _ in range(20)}
    assert picked == {"weather"}
    assert asker.ask(WEATHER).startswith("Hello! Could you help me") and asker.ask(WEATHER).endswith(WEATHER.prompt)
