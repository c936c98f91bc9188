"""Benchmark: the cost of training through `hone serve` instead of in process, on one machine.

1. Work (both sides): hone's RL loop (`hone.rl.loop.run_training`) on the single-turn tool-call
   task, the embedded SmolLM2-135M with LoRA r16, the same seed, steps, groups and group size, so
   both sides sample (nearly) the same tokens and train on the same datums. Only the backend
   differs: `LocalBackend` in this process, then `RemoteBackend` to a real
   `hone serve --home TMP` subprocess on 127.0.0.1 (its key written with the server's store, as
   `hone keys create` does).
2. Seconds per step: the loop's `time/step` (sample + score + train + checkpoint), the first step
   of each side (lazy set-up: trainer, LoRA, first-call costs) reported separately and left out of
   the mean. ratio = remote / local; target <= 1.15. The sides alternate step by step (local 1,
   remote 1, local 2, ...; each call resumes its run from its checkpoint, as a re-run would), so
   a change in the machine's load falls on both alike; the server is up throughout, idle while
   the local side runs.
3. Rollout throughput: 8 concurrent clients (each its own `openai.AsyncOpenAI`, no client retries,
   so every failure is counted) send a fixed number of tool-call chat requests to the server's
   trained model; requests/s, completion tokens/s, errors (must be 0).
4. The round trip saved per step by submitting forward_backward and optim_step together (the
   optim_step names the forward_backward it comes `after`): on the remote model, after the runs,
   `--pairs` optimizer steps on one small datum submitted one call after the other, alternating
   with as many submitted together; mean seconds per step of each, and the difference.
5. The machine is shared: server and client run on the same cores (2 on CI's machine), so remote
   figures include the client's HTTP and JSON work competing with the server's compute. The load
   average is recorded before and after.

Run: .venv/bin/python bench/remote_overhead.py [--steps N] [--requests R] [--model M]
Writes bench/results/remote_overhead.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import asyncio
import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from statistics import fmean
from typing import Any

import openai
from rich.console import Console

from hone.backends import LocalBackend, RemoteBackend
from hone.envs.toolcall import TOOLS, ToolCallEnv, make_tasks, prompt_messages
from hone.models import DEFAULT_MODEL
from hone.monitor import StepPrinter
from hone.rl.loop import RunConfig, make_model, run_training
from hone.types import AdamParams, Datum

from common import create_key, start_server

RESULTS = Path(__file__).parent / "results" / "remote_overhead.json"
CLIENTS = 8
TARGET_RATIO = 1.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="training steps per side, the first one left out of the mean")
    parser.add_argument("--groups-per-step", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64, help="chat requests in the 8-client throughput test")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--pairs", type=int, default=20, help="optimizer steps per way in the round-trip test")
    parser.add_argument("--no-share-base", action="store_true", help="serve with merged weights (hone serve --no-share-base), as LocalBackend does")
    args = parser.parse_args()
    cores = os.cpu_count()
    print(f"server and client share this machine's {cores} cores: remote figures include that contention")

    with tempfile.TemporaryDirectory(prefix="hone-remote-bench-") as tmp:
        tmp_path = Path(tmp)
        load_before = os.getloadavg()
        home = tmp_path / "home"
        home.mkdir()
        server, port = start_server(home, args.model, ("--no-share-base",) if args.no_share_base else ())
        try:
            key = create_key(home)
            url = f"http://127.0.0.1:{port}"
            local, remote, rollouts, pipelining = asyncio.run(measure(args, tmp_path, url, key))
        finally:
            server.terminate()
            server.wait(timeout=60)
        load_after = os.getloadavg()
    print(f"local : {local['s_per_step']:.2f} s/step  (steps {fmt(local['step_s'])})")
    print(f"remote: {remote['s_per_step']:.2f} s/step  (steps {fmt(remote['step_s'])})")

    ratio = remote["s_per_step"] / local["s_per_step"]
    paired = sorted(r / l for r, l in zip(remote["step_s"][1:], local["step_s"][1:]))
    median_paired = paired[len(paired) // 2] if paired else ratio
    print(f"ratio remote/local: {ratio:.3f} (target <= {TARGET_RATIO}); median of per-step ratios {median_paired:.3f}")
    # whole steps compare unlike work when a side skips training (all rewards in its groups equal), so also per phase
    phases = {
        "sample": phase_ratio(remote["sample_s"], local["sample_s"]),
        "train_where_both_trained": phase_ratio(
            [r for r, l in zip(remote["train_s"][1:], local["train_s"][1:]) if r > 0.5 and l > 0.5],
            [l for r, l in zip(remote["train_s"][1:], local["train_s"][1:]) if r > 0.5 and l > 0.5],
            skip_first=False,
        ),
    }
    print(f"per phase remote/local: sampling {phases['sample']}, training (steps both trained) {phases['train_where_both_trained']}")
    result = {
        "local_s_per_step": round(local["s_per_step"], 3),
        "remote_s_per_step": round(remote["s_per_step"], 3),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "median_step_ratio": round(median_paired, 3),
        "phase_ratios": phases,
        "server_share_base": not args.no_share_base,
        "local": local,
        "remote": remote,
        "rollout_clients": rollouts,
        "pipelined_step": pipelining,
        "work": {
            "env": "toolcall",
            "model": args.model,
            "lora_rank": 16,
            "steps": args.steps,
            "groups_per_step": args.groups_per_step,
            "group_size": args.group_size,
            "max_tokens": ToolCallEnv().max_tokens,
            "seed": 0,
            "first_step_excluded": True,
        },
        "machine": {
            "cores": cores,
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
            "note": f"server and client share the same {cores} cores",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


def config(args: argparse.Namespace, out: Path) -> RunConfig:
    return RunConfig(
        out_dir=str(out), base_model=args.model, steps=args.steps, groups_per_step=args.groups_per_step,
        group_size=args.group_size, learning_rate=1e-4, lora_rank=16, seed=0, show_progress=False,
        validate_every=0,  # it resumes once per step: a validation at every "last step" would swamp the timing
    )  # fmt: skip


async def measure(args: argparse.Namespace, tmp_path: Path, url: str, key: str) -> tuple[dict, dict, dict, dict]:
    sides = {
        "local": Side(LocalBackend(), config(args, tmp_path / "local")),
        "remote": Side(RemoteBackend(url, key), config(args, tmp_path / "remote")),
    }
    # 1) the same run on both sides, one step at a time, alternating, so a change in the machine's
    #    load falls on both alike; each call resumes its run from its last checkpoint
    for step in range(1, args.steps + 1):
        for name, side in sides.items():
            row = await side.run_to(step)
            print(f"step {step} {name:<6}: {row['time/step']:6.2f} s  (sample {row['time/sample']:.2f}, train {row['time/train']:.2f})")

    # 2) many rollout clients at once, against the remote side's trained model
    rollouts = await rollout_clients(url, key, "policy", args.requests)
    print(
        f"{CLIENTS} clients: {rollouts['requests']} requests in {rollouts['wall_s']:.1f} s = "
        f"{rollouts['requests_per_s']:.2f} req/s, {rollouts['completion_tokens_per_s']:.0f} tok/s, errors {rollouts['errors']}"
    )
    # 3) the round trip that submitting forward_backward and optim_step together saves
    pipelining = await round_trip_saved(sides["remote"].backend, args.pairs)
    print(
        f"optimizer step on one datum: {pipelining['sequential_s']*1000:.1f} ms one call after the other, "
        f"{pipelining['together_s']*1000:.1f} ms submitted together (saved {pipelining['saved_ms']:.1f} ms per step)"
    )
    for side in sides.values():
        side.backend.close()
    return sides["local"].summary(), sides["remote"].summary(), rollouts, pipelining


async def round_trip_saved(backend: RemoteBackend, pairs: int) -> dict[str, Any]:
    """Seconds per optimizer step on one small datum, the two calls awaited in turn vs submitted together."""
    datum = Datum.from_sequence(list(range(1, 33)), [0] * 16 + [1] * 16, sampler_logprobs=[-1.0] * 32, advantages=[1.0] * 32)
    adam = AdamParams(learning_rate=1e-6)
    times: dict[str, list[float]] = {"sequential": [], "together": []}
    for _ in range(pairs):  # alternating, so load changes fall on both
        started = time.perf_counter()
        await backend.forward_backward("policy", [datum])
        await backend.optim_step("policy", adam)
        times["sequential"].append(time.perf_counter() - started)
        started = time.perf_counter()
        await backend.forward_backward_optim_step("policy", [datum], "cispo", None, adam)
        times["together"].append(time.perf_counter() - started)
    sequential, together = fmean(times["sequential"][1:]), fmean(times["together"][1:])  # the first pair warms up
    return {
        "pairs": pairs,
        "sequential_s": round(sequential, 4),
        "together_s": round(together, 4),
        "saved_ms": round((sequential - together) * 1000, 2),
        "sequential_each_s": [round(t, 4) for t in times["sequential"]],
        "together_each_s": [round(t, 4) for t in times["together"]],
    }


class _Quiet(StepPrinter):
    def __init__(self) -> None:
        super().__init__(Console(quiet=True))

    def print(self, step: int, metrics: dict[str, Any]) -> None:
        pass


class Side:
    """One backend's run, advanced a step at a time (run_training resumes from its checkpoint)."""

    def __init__(self, backend: Any, run: RunConfig):
        self.backend, self.run = backend, run
        self.model = make_model("policy", run, backend)
        self.started = time.perf_counter()
        self.history: list[dict[str, Any]] = []

    async def run_to(self, step: int) -> dict[str, Any]:
        result = await run_training(ToolCallEnv(), replace(self.run, steps=step), model=self.model, printer=_Quiet())
        self.history = result.history
        return self.history[-1]

    def summary(self) -> dict[str, Any]:
        step_s = [row["time/step"] for row in self.history]
        return {
            "s_per_step": round(fmean(step_s[1:]) if len(step_s) > 1 else step_s[0], 3),
            "first_step_s": round(step_s[0], 3),
            "step_s": [round(s, 3) for s in step_s],
            "sample_s": [round(row["time/sample"], 3) for row in self.history],
            "train_s": [round(row["time/train"], 3) for row in self.history],
            "tokens_sampled": [int(row["tokens/sampled"]) for row in self.history],
            "reward_mean": [round(row["reward/mean"], 4) for row in self.history],
        }


async def rollout_clients(url: str, key: str, model: str, requests: int) -> dict[str, Any]:
    """CLIENTS clients, each sending its share of `requests` one after another; failures counted, not retried."""
    tasks = make_tasks()
    errors: list[str] = []
    completion_tokens = 0

    async def client_loop(index: int) -> None:
        nonlocal completion_tokens
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=300)
        for i in range(index, requests, CLIENTS):
            try:
                reply = await client.chat.completions.create(
                    model=model, messages=prompt_messages(tasks[i % len(tasks)]), tools=TOOLS, max_tokens=48, temperature=1.0, seed=i
                )
                completion_tokens += reply.usage.completion_tokens if reply.usage else 0
            except openai.OpenAIError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        await client.close()

    started = time.perf_counter()
    await asyncio.gather(*(client_loop(i) for i in range(CLIENTS)))
    wall = time.perf_counter() - started
    return {
        "clients": CLIENTS,
        "requests": requests,
        "wall_s": round(wall, 2),
        "requests_per_s": round(requests / wall, 3),
        "completion_tokens_per_s": round(completion_tokens / wall, 1),
        "errors": len(errors),
        "error_examples": errors[:3],
    }




def phase_ratio(remote: list[float], local: list[float], skip_first: bool = True) -> float | None:
    remote, local = (remote[1:], local[1:]) if skip_first else (remote, local)
    return round(fmean(remote) / fmean(local), 3) if remote and local and fmean(local) > 0 else None


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
