"""How the untrained inbox agent does on training questions: verdict counts, with the replies.

The figures behind the demo's prompt and temperature choices came from this (embedded model,
2 turns, forced first search; greedy on 48 training questions: 11 correct; T=0.3: 9, T=0.6: 7,
T=1.0: 1). Training questions only: the held-out ones stay out of prompt tuning.

    .venv/bin/python bench/inbox_probe.py --questions 48 --temperature 0.6 [--show]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time

from hone.backends import LocalBackend
from hone.envs.inbox.agent import InboxEnv, rollout


async def main(args: argparse.Namespace) -> None:
    backend = LocalBackend()
    backend.add_model("probe", args.model)
    client = backend.openai_client()
    env = InboxEnv(max_turns=args.max_turns, force_first_search=True)
    tasks = list(env.train_tasks())[: args.questions]
    started = time.perf_counter()
    trajectories = await asyncio.gather(
        *[
            rollout(client, "probe", q, max_turns=args.max_turns, temperature=args.temperature, seed=i, force_first_search=True)
            for i, q in enumerate(tasks)
        ]
    )
    counts = collections.Counter(t.metadata["verdict"] for t in trajectories)
    found = sum(t.metrics["found_answer_email"] for t in trajectories)
    if args.show:
        for t in trajectories:
            print(f"Q: {t.metadata['question']}  gold: {t.metadata['answer']}  -> {t.metadata['verdict']}")
            print(f"   answered: {str(t.metadata['final_answer'])[:160]!r}")
    print(f"{len(tasks)} questions, temperature {args.temperature}: {dict(counts)}; answer email found {found:.0f}; "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    backend.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--max-turns", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--show", action="store_true", help="print every question and reply")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
