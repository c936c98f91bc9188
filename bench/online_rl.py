"""Learning from production, end to end: rounds of serve -> feedback -> train -> promote.

A real `hone serve --home` (127.0.0.1, the embedded model, LoRA) serves the toolcall agent as
`agent`, its traffic log on. Each round:
1. simulated users (hone.traffic.personas) each pick a task, phrase it their way and send it to
   `agent` through the `openai` client (task_key = the task, so attempts at one task group);
2. each rates the reply by its own rule (POST /v1/hone/feedback, a label);
3. one training step on the logged traffic (hone.traffic.train: clipped IS over the served
   logprobs, stale data dropped, malformed replies penalised);
4. the gate (hone.traffic.promotion): the new weights and what `agent` serves are validated
   greedily on the toolcall environment's validation split (success: a call to the tool the task
   needs); promoted if no worse than `--tolerance`, else kept as a checkpoint, the reason
   recorded, the live weights reset;
5. the health monitor reads the round (hone.traffic.rounds.TrafficLearner): `feedback_gaming`
   starts when training on the feedback keeps lowering validation.

Success of what `agent` serves is also measured on a held-out test split (32 tasks with names
found in neither the training nor the validation tasks) that nothing chooses on, beside two
no-learning baselines on the same tasks: the untrained model with the call forced
(`tool_choice="required"`, constrained decoding) and a keyword router (no model).

`--population honest` (users who check the call) should raise success round by round;
`--population gameable` (users who like long replies) should be refused by the gate, and the
warning should fire. The rounds go to bench/results/online_rl_<population>.json and the curves to
online_rl.png (both populations once both have run).

    .venv/bin/python bench/online_rl.py --population honest
    .venv/bin/python bench/online_rl.py --population gameable
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from statistics import fmean

import openai

from hone.backends import RemoteBackend
from hone.envs.toolcall import TOOLS, ToolCallTask, make_tasks, make_validation_tasks, prompt_messages, reward_for
from hone.models import DEFAULT_MODEL
from hone.rl.evaluate import wilson_interval
from hone.rl.step import TrainConfig
from hone.traffic.groups import TrafficDataConfig
from hone.traffic import UNLOGGED_HEADERS
from hone.traffic.personas import KINDS, population, task_kind
from hone.traffic.rounds import TrafficLearner
from hone.traffic.train import TrafficTrainConfig

from common import create_key, machine, start_server

RESULTS = Path(__file__).parent / "results"
MAX_TOKENS = 48


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", choices=("honest", "gameable"), default="honest")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--users", type=int, default=32, help="requests per round, one per simulated user")
    parser.add_argument("--tasks", type=int, default=8, help="distinct tasks per round: users share them, so attempts group")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="2e-4 barely moved validation in 6 rounds; 1e-3 moves it, and the gate refuses its bad steps")
    parser.add_argument("--steps-per-round", type=int, default=2, help="optimizer steps on the traffic before each gate (the clipped IS loss corrects the reuse)")
    parser.add_argument("--tolerance", type=float, default=0.0, help="how far below what is served a candidate may validate and still be promoted")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", default="", help="written to online_rl_<population>_<label>.json instead, e.g. for a settings variant")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="hone-online-"))
    server, port = start_server(home, args.model)
    started = time.perf_counter()
    try:
        backend = RemoteBackend(f"http://127.0.0.1:{port}", create_key(home))
        outcome = asyncio.run(run(backend, args))
        backend.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
    result = {
        "machine": machine(),
        "settings": vars(args),
        **outcome,
        "served_validation": [r["served_validation"] for r in outcome["rounds"]],
        "served_test": [r["served_test"] for r in outcome["rounds"]],
        "served_test_any_call": [r["served_test_any_call"] for r in outcome["rounds"]],
        "promoted": [r["promoted"] for r in outcome["rounds"][1:]],
        "warnings": {r["round"]: [w["code"] for w in r["warnings"]] for r in outcome["rounds"] if r["warnings"]},
        "wall_s": round(time.perf_counter() - started, 1),
        "what_the_agent_is_given": "one worked example in the prompt, three tools, no forced calls, no constrained decoding, one turn",
    }
    RESULTS.mkdir(exist_ok=True)
    suffix = f"_{args.label}" if args.label else ""
    (RESULTS / f"online_rl_{args.population}{suffix}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("served_validation", "served_test", "served_test_any_call", "baselines_on_test", "promoted", "warnings", "wall_s")}))
    plot()


def make_test_tasks() -> list[ToolCallTask]:
    """Held out: names in neither the training nor the validation tasks; reported, never chosen on."""
    cities = ["Nairobi", "Lisbon", "Seoul", "Havana", "Tbilisi", "Quebec", "Manila", "Tallinn", "Recife", "Hobart", "Malmo", "Nantes"]
    people = ["ivy@example.com", "omar@example.com", "zoe@example.com", "ben@example.com"]
    topics = ["the audit", "Tuesday's demo", "the travel policy", "the team survey"]
    amounts = [(80, "CHF", "USD"), (5000, "INR", "EUR"), (18, "USD", "MXN"), (640, "SEK", "NOK")]
    return make_tasks(cities, people, topics, amounts)


def solved(task: ToolCallTask, reply: dict) -> float:
    """1.0 for a call to the tool the task needs (stricter than any call: the honest users' check)."""
    return float(any(c["function"]["name"] == KINDS[task_kind(task)] for c in reply.get("tool_calls") or []))


def keyword_router(task: ToolCallTask) -> dict:
    """The best no-learning rule we know for this task: route on the request's first words."""
    return {"tool_calls": [{"function": {"name": KINDS[task_kind(task)], "arguments": "{}"}}]}


async def success(client: openai.AsyncOpenAI, served: str, tasks: list[ToolCallTask], **extra) -> float:
    return (await both_successes(client, served, tasks, **extra))[0]


async def both_successes(client: openai.AsyncOpenAI, served: str, tasks: list[ToolCallTask], **extra) -> tuple[float, float]:
    """Greedy: the share of tasks answered by a call to the right tool, and by any call (the environment's own reward)."""
    replies = await asyncio.gather(*[ask(client, served, prompt_messages(t), temperature=0.0, seed=0, **extra) for t in tasks])
    return fmean(solved(t, r) for t, r in zip(tasks, replies)), fmean(reward_for(r) for r in replies)


async def run(backend: RemoteBackend, args: argparse.Namespace) -> dict:
    backend.add_model("agent", args.model, lora_rank=16, seed=args.seed)
    backend.configure_traffic("agent")
    client = backend.openai_client()  # the users'
    checker = backend.openai_client(default_headers=UNLOGGED_HEADERS)  # validation and test: served, not logged, never trained on
    validation, test = make_validation_tasks(), make_test_tasks()

    async def validate(served: str) -> float:
        return await success(checker, served, validation)

    users = population(args.population, args.users, seed=args.seed)
    tasks = make_tasks()
    rng = random.Random(args.seed)
    config = TrafficTrainConfig(TrafficDataConfig(max_staleness=2), TrainConfig(learning_rate=args.learning_rate))
    learner = TrafficLearner(backend, "agent", validate, config, steps_per_round=args.steps_per_round, tolerance=args.tolerance, validation_n=len(validation))
    untrained, untrained_any = await both_successes(checker, "agent", test)
    baselines = {
        "untrained": untrained,
        "untrained_forced_call": await success(checker, "agent", test, tool_choice="required"),
        "keyword_router": fmean(solved(t, keyword_router(t)) for t in test),
    }
    serving, (tested, tested_any) = await validate("agent"), (untrained, untrained_any)
    print(f"round 0: agent validates at {serving:.1%}; test: {', '.join(f'{k} {v:.1%}' for k, v in baselines.items())}")
    rounds = [{"round": 0, "served_validation": serving, "served_test": tested, "served_test_any_call": tested_any, "promoted": None, "warnings": []}]
    for number in range(1, args.rounds + 1):
        started = time.perf_counter()
        today = rng.sample(tasks, args.tasks)
        asked = [(user, user.picks(today, rng)) for user in users]
        replies = await asyncio.gather(*[ask(client, "agent", messages(user.ask(task)), args.temperature, None, task.prompt) for user, task in asked])
        labels = []
        for (user, task), reply in zip(asked, replies):
            label = user.rates(task, reply, rng)
            if label is not None:
                backend.feedback(reply["id"], label=label)
                labels.append(label)
        result = await learner.round()
        decision = result.decision
        if decision is not None:
            serving = decision.served_score
            if decision.promoted:
                tested, tested_any = await both_successes(checker, "agent", test)
        row = {
            "round": number,
            "traffic_success": fmean(solved(t, r) for (_, t), r in zip(asked, replies)),  # the right tool, in what was served
            "traffic_any_call": fmean(reward_for(r) for r in replies),
            "liked": labels.count("thumbs_up") / max(len(labels), 1),
            "rated": len(labels),
            **{k.removeprefix("traffic/"): v for k, v in result.metrics.items() if k.startswith("traffic/")},
            "feedback_reward": result.metrics.get("reward/mean"),
            "candidate_validation": decision and decision.candidate_score,
            "incumbent_validation": decision and decision.incumbent_score,
            "promoted": decision and decision.promoted,
            "reason": decision and decision.reason,
            "served_validation": serving,
            "served_test": tested,
            "served_test_any_call": tested_any,
            "warnings": [w.as_dict() for w in result.warnings],
            "seconds": round(time.perf_counter() - started, 1),
        }
        rounds.append(row)
        print(f"{result.line()}; served traffic {row['traffic_success']:.0%} right calls, users liked {row['liked']:.0%}; test {tested:.1%} ({row['seconds']} s)")
        for warning in result.warnings:
            print(warning.line(number))
    low, high = wilson_interval(tested * len(test), len(test))
    return {"baselines_on_test": baselines, "rounds": rounds, "final_test": {"success": tested, "ci95": [low, high], "n": len(test)}}


def messages(request: str) -> list[dict]:
    """The agent's prompt (system, worked example) around the user's own words."""
    return [*prompt_messages(make_tasks()[0])[:-1], {"role": "user", "content": request}]


async def ask(
    client: openai.AsyncOpenAI, model: str, chat: list[dict], temperature: float, seed: int | None, task_key: str | None = None, **extra
) -> dict:
    response = await client.chat.completions.create(
        model=model, messages=chat, tools=TOOLS, max_tokens=MAX_TOKENS, temperature=temperature, seed=seed,
        extra_body={"task_key": task_key} if task_key else None, **extra,
    )  # fmt: skip
    message = response.choices[0].message.model_dump()
    return {**message, "id": response.id}


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (chosen, held_out) = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    runs = sorted(RESULTS.glob("online_rl_*.json"))
    baselines = {}
    for index, path in enumerate(runs):
        colour = f"C{index}"  # the same run, the same colour, in both panels
        result = json.loads(path.read_text())
        steps = max(int(r.get("steps") or 1) for r in result["rounds"][1:])  # made, not asked: the staleness bound can stop a round's steps
        label = f"{result['settings']['population']} users, lr {result['settings']['learning_rate']:g}, {steps} step(s) a round"
        chosen.plot(result["served_validation"], marker="o", color=colour, label=label)
        if "served_test" in result:
            held_out.plot(result["served_test"], marker="o", color=colour)  # its legend is the left panel's
            baselines = result.get("baselines_on_test", baselines)
    for name, style in (("keyword_router", ":"), ("untrained_forced_call", "--")):
        if name in baselines:
            held_out.axhline(baselines[name], color="grey", linestyle=style, label=name.replace("_", " "))
    chosen.set_title("validation (the gate chooses on it)")
    held_out.set_title("held-out test")
    for axes in (chosen, held_out):
        axes.set_xlabel("round (serve → feedback → train → gate)")
        axes.set_ylim(0, 1.05)
    chosen.legend(fontsize=7, loc="lower right")  # the curves run above 0.35
    held_out.legend(fontsize=7, loc="lower right")
    chosen.set_ylabel("right-tool success of what is served")
    figure.tight_layout()
    figure.savefig(RESULTS / "online_rl.png", dpi=120)


if __name__ == "__main__":
    main()
