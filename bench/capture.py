"""Benchmark: what capturing an agent's calls costs a training step (issue 12: ≤ 1.05×).

One agent, a 3-turn calculator episode on the embedded model (a forced `calculate` call, the tool
result, a free reply, then "Reply with only the number." and the answer; the tool offered every
turn, as agent frameworks do), written three ways:
- `add_response`: hone's own client, each reply recorded by `Trajectory.add_response`;
- `capture`: the same loop with no recording of its own, inside `model.capture()`, through
  `rollout.openai_client()` (in-process, no port);
- `capture_http`: inside `model.capture()`, the agent builds its own `openai.AsyncOpenAI` from
  `rollout.base_url` and `rollout.api_key` (the loopback server on 127.0.0.1), as LangChain and
  the Agents SDK do.
A training step = gather 4 tasks × 4 attempts, then one LoRA optimizer step. The modes take turns,
step by step (each its own model, same seeds), so load drifts hit all alike; reported per mode:
the median step time, the ratio to `add_response`, and the sequences trained per episode.

Run: .venv/bin/python bench/capture.py [--steps N]
Writes bench/results/capture.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the engine's worker gets its own threads (bench/engine.py, point 5)

import argparse
import asyncio
import json
import platform
import random
import re
import time
from pathlib import Path
from statistics import median

import openai

from hone.backends import LocalBackend
from hone.rl.datums import datums_from_trajectory
from hone.rl.gather import GatherConfig, gather_groups
from hone.rl.model import TrainableModel, TrainConfig
from hone.rl.trajectory import Trajectory

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "capture.json"
MODES = ("add_response", "capture", "capture_http")
CALCULATE = {
    "type": "function",
    "function": {
        "name": "calculate",
        "description": "Evaluate an arithmetic expression such as 12 * (3 + 4)",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}
SYSTEM = "Use the calculate tool for arithmetic, then reply with only the number."


async def episode(client: openai.AsyncOpenAI, model: str, question: str, seed: int, record: Trajectory | None) -> str:
    """The agent: plain `openai` calls; `record` (add_response mode) keeps each reply."""

    async def ask(messages: list, **options) -> dict:
        response = await client.chat.completions.create(model=model, messages=messages, temperature=0.6, seed=seed, **options)
        if record is not None:
            return record.add_response(response)
        return response.choices[0].message.model_dump(exclude_none=True)

    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    call = await ask(messages, tools=[CALCULATE], tool_choice={"type": "function", "function": {"name": "calculate"}}, max_tokens=40)
    messages.append(call)
    for tool_call in call.get("tool_calls") or []:
        expression = json.loads(tool_call["function"]["arguments"] or "{}").get("expression", "")
        result = str(eval(expression, {"__builtins__": {}}, {})) if re.fullmatch(r"[\d\s+\-*/().]{1,64}", str(expression)) else "Error"
        messages.append({"role": "tool", "tool_call_id": tool_call["id"], "content": result})
    messages.append(await ask(messages, tools=[CALCULATE], max_tokens=24))
    messages.append({"role": "user", "content": "Reply with only the number."})
    return (await ask(messages, tools=[CALCULATE], max_tokens=12)).get("content") or ""


def score(answer: str, value: int) -> float:
    numbers = re.findall(r"-?\d+", answer)
    return 1.0 if numbers and int(numbers[0]) == value else 0.0


async def one_step(mode: str, model: TrainableModel, client: openai.AsyncOpenAI, tasks: list[tuple[str, int]], step: int) -> dict[str, float]:
    async def attempt(task: tuple[str, int], index: int) -> Trajectory:
        question, value = task
        seed = 1000 * step + 10 * tasks.index(task) + index
        if mode == "add_response":
            trajectory = Trajectory()
            trajectory.reward = score(await episode(client, model.name, question, seed, trajectory), value)
            return trajectory
        async with model.capture(task_id=question) as rollout:
            agent_client = rollout.openai_client() if mode == "capture" else openai.AsyncOpenAI(base_url=rollout.base_url, api_key=rollout.api_key)
            rollout.reward = score(await episode(agent_client, rollout.model, question, seed, None), value)
        return rollout.trajectory

    started = time.perf_counter()
    groups = await gather_groups(tasks, attempt, GatherConfig(group_size=4, show_progress=False))
    sampled = time.perf_counter()
    await model.train(groups, TrainConfig(learning_rate=1e-4))
    trajectories = [t for g in groups for t in g.trajectories]
    sequences = sum(len(datums_from_trajectory(t, 1.0)) for t in trajectories)
    return {
        "step_s": time.perf_counter() - started,
        "sample_s": sampled - started,
        "sequences_per_episode": sequences / len(trajectories) if trajectories else float("nan"),
        "reward": sum(t.reward for t in trajectories) / max(1, len(trajectories)),
    }


async def main(steps: int) -> dict:
    backend = LocalBackend(engine_options={"num_threads": os.cpu_count()})
    models = {mode: TrainableModel(f"agent-{mode}", "smollm2-135m", backend=backend, lora_rank=8) for mode in MODES}
    clients = {mode: models[mode].openai_client() for mode in MODES}
    rng = random.Random(0)
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for step in range(steps + 1):  # step 0 warms every path up and is not counted
        tasks = []
        for _ in range(4):
            a, b = rng.randint(11, 99), rng.randint(11, 99)
            tasks.append((f"What is {a} + {b}?", a + b))
        for mode in MODES:
            result = await one_step(mode, models[mode], clients[mode], tasks, step)
            if step > 0:
                runs[mode].append(result)
            print(f"step {step} {mode:>13}: {result['step_s']:.2f} s, {result['sequences_per_episode']:.2f} sequences per episode", flush=True)
    backend.close()
    base = median(r["step_s"] for r in runs["add_response"])
    summary = {
        mode: {
            "median_step_s": median(r["step_s"] for r in runs[mode]),
            "median_sample_s": median(r["sample_s"] for r in runs[mode]),
            "ratio_to_add_response": median(r["step_s"] for r in runs[mode]) / base,
            "sequences_per_episode": sum(r["sequences_per_episode"] for r in runs[mode]) / len(runs[mode]),
            "mean_reward": sum(r["reward"] for r in runs[mode]) / len(runs[mode]),
        }
        for mode in MODES
    }
    return {"steps": steps, "tasks_per_step": 4, "group_size": 4, "turns_per_episode": 3, "modes": summary, "runs": runs}


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    result = asyncio.run(main(args.steps))
    result["machine"] = {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version()}
    RESULTS.write_text(json.dumps(result, indent=2))
    for mode, row in result["modes"].items():
        print(f"{mode:>13}: {row['median_step_s']:.2f} s per step ({row['ratio_to_add_response']:.3f}x), {row['sequences_per_episode']:.2f} sequences per episode")
    print(f"wrote {RESULTS}")
