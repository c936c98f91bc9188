"""How often does a relative LLM judge rank inbox attempts the way the environment's reward does?

1. Groups: for each held-out inbox question, a few scripted reference attempts of known quality
   (the direct path to the answer; a correct but roundabout path; a wrong answer after reading
   the wrong email; "I don't know") plus `--policy-attempts` rollouts of the embedded model. Every
   attempt is scored by the inbox environment's own reward (the ground truth), and the group is
   shuffled (seeded) so an attempt's position says nothing about its quality.
2. Each group is judged in one call with the default rubric (`hone.rewards.judge_group`).
3. Agreement: over all pairs of attempts in a group whose true rewards differ, the fraction the
   judge orders the same way; a tie in judge score counts as half. So 0.5 is a coin (or a judge
   that scores everything the same) and 1.0 is perfect. The 95% interval is a bootstrap over
   groups (pairs within a group are not independent).
4. By default the judge is the embedded SmolLM2-135M served by `hone serve`, started here as a
   subprocess; `--judge-url` and `--judge-model` measure any OpenAI-compatible judge instead
   (its API key from $HONE_JUDGE_API_KEY or $OPENAI_API_KEY). Policy rollouts always use the
   embedded model behind a `hone serve` started here.

    .venv/bin/python bench/judge_agreement.py                      # the embedded judge
    .venv/bin/python bench/judge_agreement.py --judge-url https://api.openai.com/v1 --judge-model gpt-4o-mini
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from hone.envs.inbox import TOOL_SCHEMAS, EpisodeState, Question, inbox_db, inbox_of, make_splits, rollout, score_episode, take_turn
from hone.envs.inbox.agent import initial_messages
from hone.rewards import Judge, JudgeConfig, JudgeError, judge_group
from hone.rewards.agreement import pair_agreements
from hone.rl.trajectory import Trajectory, TrajectoryGroup

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = "smollm2-135m"


# --------------------------------------------------------------------------- hone serve
def start_hone_serve() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hone = ROOT / ".venv" / "bin" / "hone"
    command = [str(hone)] if hone.exists() else [sys.executable, "-m", "hone.cli"]
    process = subprocess.Popen(
        command + ["serve", "--host", "127.0.0.1", "--port", str(port), "--model", EMBEDDED],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"hone serve exited before it was ready:\n{process.stdout.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("hone serve did not answer /health within 180 s")


# --------------------------------------------------------------------------- groups
def call(name: str, arguments: dict[str, Any], index: int) -> dict[str, Any]:
    function = {"name": name, "arguments": json.dumps(arguments)}
    return {"role": "assistant", "content": "", "tool_calls": [{"id": f"call_{index}", "type": "function", "function": function}]}


def scripted_attempt(question: Question, kind: str, max_turns: int = 6) -> Trajectory:
    """Play a fixed plan through the environment's own tools and reward."""
    inbox = inbox_of(question)
    db = inbox_db(inbox)
    gold = question.answer_message_id
    decoy = next(e for e in inbox.emails if e.message_id != gold)
    wrong = next((q.answer for q in inbox.questions if q.answer != question.answer), "next Tuesday")
    keywords = " ".join(re.findall(r"[A-Za-z0-9]+", question.question)[:6])
    plans = {
        "direct": [
            call("search_inbox", {"keywords": keywords}, 1),
            call("read_email", {"message_id": gold}, 2),
            call("answer", {"text": question.answer, "sources": [gold]}, 3),
        ],
        "roundabout": [
            call("search_inbox", {"keywords": "meeting"}, 1),
            call("read_email", {"message_id": decoy.message_id}, 2),
            call("search_inbox", {"keywords": keywords}, 3),
            call("read_email", {"message_id": gold}, 4),
            call("answer", {"text": question.answer, "sources": [gold]}, 5),
        ],
        "wrong": [
            call("search_inbox", {"keywords": keywords}, 1),
            call("read_email", {"message_id": decoy.message_id}, 2),
            call("answer", {"text": wrong, "sources": [decoy.message_id]}, 3),
        ],
        "idk": [call("search_inbox", {"keywords": keywords}, 1), {"role": "assistant", "content": "I don't know."}],
    }
    trajectory = Trajectory(messages=initial_messages(inbox, question), tools=TOOL_SCHEMAS)
    state = EpisodeState(max_turns=max_turns)
    for message in plans[kind]:
        trajectory.messages.append(message)
        trajectory.messages.extend(take_turn(db, state, message))
    trajectory.reward = score_episode(state.outcome(question)).reward
    trajectory.metadata["kind"] = kind
    return trajectory


async def build_groups(questions: list[Question], policy_url: str | None, policy_attempts: int, seed: int) -> list[TrajectoryGroup]:
    groups = []
    client = openai.AsyncOpenAI(base_url=policy_url, api_key="hone-local", timeout=600) if policy_attempts else None
    for index, question in enumerate(questions):
        attempts = [scripted_attempt(question, kind) for kind in ("direct", "roundabout", "wrong", "idk")]
        policy = await asyncio.gather(
            *(
                rollout(client, EMBEDDED, question, temperature=1.0, seed=seed * 1000 + index * 10 + a, force_first_search=True)
                for a in range(policy_attempts)
            )
        )
        for trajectory in policy:
            trajectory.metadata["kind"] = "policy"
        attempts += policy
        random.Random(f"{seed}/{index}").shuffle(attempts)
        groups.append(TrajectoryGroup(trajectories=attempts, metadata={"question_id": question.question_id}))
        print(f"  group {index + 1}/{len(questions)}: rewards {[round(t.reward, 2) for t in attempts]}", flush=True)
    if client is not None:
        await client.close()
    return groups


# --------------------------------------------------------------------------- agreement
def pair_scores(group: TrajectoryGroup) -> list[float]:
    """1 per pair the judge orders like the true reward, 0.5 per judge tie, 0 otherwise."""
    return pair_agreements(group)


def bootstrap_ci(per_group: list[list[float]], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    means = []
    for _ in range(resamples):
        sample = [v for _ in per_group for v in rng.choice(per_group)]
        if sample:
            means.append(sum(sample) / len(sample))
    means.sort()
    if not means:
        return (0.0, 1.0)
    return (means[int(0.025 * len(means))], means[min(len(means) - 1, int(0.975 * len(means)))])


# --------------------------------------------------------------------------- main
async def main(args: argparse.Namespace) -> dict[str, Any]:
    server = None
    policy_url = None
    judge_url = args.judge_url
    if judge_url is None or args.policy_attempts > 0:
        print("starting hone serve with the embedded model ...", flush=True)
        server, policy_url = start_hone_serve()
    judge_url = judge_url or policy_url
    try:
        eval_questions = make_splits(args.seed).test
        questions = eval_questions[: args.tasks]
        print(f"building {len(questions)} groups ({4 + args.policy_attempts} attempts each) ...", flush=True)
        started = time.perf_counter()
        groups = await build_groups(questions, policy_url, args.policy_attempts, args.seed)
        rollout_seconds = time.perf_counter() - started

        config = JudgeConfig(
            base_url=judge_url,
            model=args.judge_model,
            max_tokens=args.max_tokens,
            max_tool_chars=args.max_tool_chars,
            cache=args.cache,
            timeout=600,
        )
        per_group, failures, usage = [], [], []
        async with Judge(config) as judge:
            for index, group in enumerate(groups):
                try:
                    result = await judge_group(group, judge, set_reward=False)  # keep the true reward in `reward`
                except JudgeError as exc:
                    failures.append(str(exc))
                    if exc.result is not None:
                        usage.append(exc.result)  # what the failed judging cost
                    print(f"  judge failed on group {index + 1}: {exc}", flush=True)
                    continue
                usage.append(result)
                per_group.append(pair_scores(group))
                print(f"  group {index + 1}: judge {[round(s, 2) for s in result.scores]} in {result.seconds:.1f}s", flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)

    values = [v for g in per_group for v in g]
    agreement = sum(values) / len(values) if values else None
    ci95 = bootstrap_ci(per_group) if values else None
    judge_name = f"{args.judge_model} (embedded, hone serve)" if args.judge_url is None else f"{args.judge_model} at {args.judge_url}"
    return {
        "judge": judge_name,
        "pairs": len(values),
        "agreement": agreement,
        "ci95": list(ci95) if ci95 else None,
        "ci_method": "percentile bootstrap over groups, 2000 resamples",
        "judge_ties": sum(v == 0.5 for v in values) / len(values) if values else None,
        "groups": len(groups),
        "groups_judged": len(per_group),
        "judge_failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "attempts_per_group": {"scripted": 4, "policy": args.policy_attempts},
        "judge_calls": sum(r.calls for r in usage),
        "judge_seconds_per_group": sum(r.seconds for r in usage) / len(usage) if usage else None,
        "judge_prompt_tokens_per_group": sum(r.prompt_tokens for r in usage) / len(usage) if usage else None,
        "judge_completion_tokens_per_group": sum(r.completion_tokens for r in usage) / len(usage) if usage else None,
        "judge_retries": sum(r.retries for r in usage),
        "rollout_seconds": rollout_seconds,
        "seed": args.seed,
        "date": time.strftime("%Y-%m-%d"),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL; default: the embedded model via hone serve")
    parser.add_argument("--judge-model", default=EMBEDDED)
    parser.add_argument("--tasks", type=int, default=8, help="held-out inbox questions, one group each")
    parser.add_argument("--policy-attempts", type=int, default=2, help="embedded-model rollouts added to each group")
    parser.add_argument("--max-tokens", type=int, default=400, help="most tokens the judge may answer with")
    parser.add_argument("--max-tool-chars", type=int, default=300, help="tool outputs are clipped to this in the judge's prompt")
    parser.add_argument("--cache", action="store_true", help="reuse cached judge answers (off: every call is measured)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    result = asyncio.run(main(args))
    slug = "" if args.judge_url is None else "_" + re.sub(r"[^A-Za-z0-9.-]+", "-", args.judge_model)
    out = args.out or ROOT / "bench" / "results" / f"judge_agreement{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")
    print(
        "\nto measure a stronger judge of your own (key in $HONE_JUDGE_API_KEY or $OPENAI_API_KEY):\n"
        "  .venv/bin/python bench/judge_agreement.py --judge-url https://api.openai.com/v1 --judge-model gpt-4o-mini"
    )
