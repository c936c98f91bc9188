"""Learning from production, end to end: rounds of serve -> feedback -> train -> promote.

A real `hone serve --home` (127.0.0.1, the embedded model, LoRA) serves the toolcall agent as
`agent`, its traffic log on. Each round:
1. simulated users (hone.traffic.personas) each pick a task, phrase it their way and send it to
   `agent` through the `openai` client (task_key = the task, so attempts at one task group);
2. each rates the reply by its own rule (POST /v1/hone/feedback, a label);
3. one training step on the logged traffic (hone.traffic.train: clipped IS over the served
   logprobs, stale data dropped, malformed replies penalised);
4. the gate (hone.traffic.promotion): the new weights and what `agent` serves are validated
   greedily on the toolcall environment's validation split; promoted if no worse than
   `--tolerance`, else kept as a checkpoint, the reason recorded, the live weights reset.

`--population honest` (users who check the call) should raise validation success round by round;
`--population gameable` (users who like long replies) should be refused by the gate. Validation
success of what `agent` serves after each round is written to bench/results/online_rl_<population>.json
and plotted to online_rl.png (both populations once both have run).

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
from hone.envs.toolcall import TOOLS, make_tasks, make_validation_tasks, prompt_messages, reward_for
from hone.models import DEFAULT_MODEL
from hone.rl.step import TrainConfig
from hone.traffic.groups import TrafficDataConfig
from hone.traffic.personas import population
from hone.traffic.promotion import gate, pin
from hone.traffic.train import TrafficTrainConfig, train_from_traffic

from common import create_key, machine, start_server

RESULTS = Path(__file__).parent / "results"
MAX_TOKENS = 48


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", choices=("honest", "gameable"), default="honest")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--users", type=int, default=32, help="requests per round, one per simulated user")
    parser.add_argument("--tasks", type=int, default=8, help="distinct tasks per round: users share them, so attempts group")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--tolerance", type=float, default=0.0, help="how far below what is served a candidate may validate and still be promoted")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="hone-online-"))
    server, port = start_server(home, args.model)
    started = time.perf_counter()
    try:
        backend = RemoteBackend(f"http://127.0.0.1:{port}", create_key(home))
        rounds = asyncio.run(run(backend, args))
        backend.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
    result = {
        "machine": machine(),
        "settings": vars(args),
        "rounds": rounds,
        "served_validation": [r["served_validation"] for r in rounds],
        "promoted": [r["promoted"] for r in rounds[1:]],
        "wall_s": round(time.perf_counter() - started, 1),
        "what_the_agent_is_given": "one worked example in the prompt, three tools, no forced calls, no constrained decoding, one turn",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"online_rl_{args.population}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("served_validation", "promoted", "wall_s")}))
    plot()


async def run(backend: RemoteBackend, args: argparse.Namespace) -> list[dict]:
    backend.add_model("agent", args.model, lora_rank=16, seed=args.seed)
    backend.configure_traffic("agent")
    await pin(backend, "agent")
    client = backend.openai_client()
    validation = make_validation_tasks()

    async def validate(served: str) -> float:
        replies = await asyncio.gather(*[ask(client, served, prompt_messages(t), temperature=0.0, seed=0) for t in validation])
        return fmean(reward_for(r) for r in replies)

    users = population(args.population, args.users, seed=args.seed)
    tasks = make_tasks()
    rng = random.Random(args.seed)
    config = TrafficTrainConfig(TrafficDataConfig(max_staleness=2), TrainConfig(learning_rate=args.learning_rate))
    serving = await validate("agent")
    rounds = [{"round": 0, "served_validation": serving, "promoted": None}]
    print(f"round 0: what agent serves validates at {serving:.1%}")
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
        trained = await train_from_traffic(backend, "agent", config)
        decision = await gate(backend, "agent", validate, tolerance=args.tolerance)
        serving = decision.candidate_score if decision.promoted else decision.incumbent_score
        row = {
            "round": number,
            "traffic_success": fmean(reward_for(r) for r in replies),  # the environment's own check of what was served
            "liked": labels.count("thumbs_up") / max(len(labels), 1),
            "rated": len(labels),
            "groups": trained.get("traffic/groups"),
            "stale_dropped": trained.get("traffic/stale_dropped"),
            "malformed_penalised": trained.get("traffic/malformed_penalised"),
            "trained": not trained.get("train/skipped"),
            "candidate_validation": decision.candidate_score,
            "incumbent_validation": decision.incumbent_score,
            "promoted": decision.promoted,
            "reason": decision.reason,
            "served_validation": serving,
            "seconds": round(time.perf_counter() - started, 1),
        }
        rounds.append(row)
        print(
            f"round {number}: served traffic {row['traffic_success']:.0%} valid calls, users liked {row['liked']:.0%}; "
            f"candidate {decision.candidate_score:.1%} vs served {decision.incumbent_score:.1%} -> "
            f"{'promoted' if decision.promoted else 'refused'}; agent now validates at {serving:.1%} ({row['seconds']} s)"
        )
    return rounds


def messages(request: str) -> list[dict]:
    """The agent's prompt (system, worked example) around the user's own words."""
    return [*prompt_messages(make_tasks()[0])[:-1], {"role": "user", "content": request}]


async def ask(client: openai.AsyncOpenAI, model: str, chat: list[dict], temperature: float, seed: int | None, task_key: str | None = None) -> dict:
    response = await client.chat.completions.create(
        model=model, messages=chat, tools=TOOLS, max_tokens=MAX_TOKENS, temperature=temperature, seed=seed,
        extra_body={"task_key": task_key} if task_key else None,
    )  # fmt: skip
    message = response.choices[0].message.model_dump()
    return {**message, "id": response.id}


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    for kind in ("honest", "gameable"):
        path = RESULTS / f"online_rl_{kind}.json"
        if path.exists():
            served = json.loads(path.read_text())["served_validation"]
            axes.plot(range(len(served)), served, marker="o", label=f"{kind} users")
    axes.set_xlabel("round (serve → feedback → train → gate)")
    axes.set_ylabel("validation success of what is served")
    axes.set_ylim(0, 1)
    axes.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "online_rl.png", dpi=120)


if __name__ == "__main__":
    main()
