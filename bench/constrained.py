"""Benchmark: what grammar-constrained decoding guarantees, and what it costs, on the embedded model.

1. Validity. The 40 toolcall tasks (hone.envs.toolcall), zero-shot (system prompt and question only,
   no worked example), through the OpenAI route of an in-process LocalBackend, temperature 0.6,
   max_tokens 128, seeded. For tool_choice "required" with parallel_tool_calls false and true, and
   "auto": how many replies parse as calls to an offered tool whose arguments validate against its
   schema (jsonschema), how many call the tool the question is about, and how many max_tokens cut
   (a reply cut inside a call carries no calls). "auto" lets the model answer in text; its calls,
   when it makes them, are valid by construction.
2. Throughput at batch 32. The engine alone, 32 concurrent requests with distinct 64-token prompts,
   128 new tokens each, temperature 1:
   - unconstrained;
   - constrained: a JSON array of at least 50 get_weather calls (so no row ends before 128 tokens);
   - mixed: 16 of each in one batch (unconstrained rows' rate reported separately).
   Best of --repeats, tokens/s = sampled tokens / wall time.
3. Unconstrained against the engine before grammar support (--baseline, a git revision): the same
   unconstrained batch-32 run in a subprocess on a checkout of that revision and on this tree,
   alternating, best of --repeats each.

Run: .venv/bin/python bench/constrained.py [--repeats R] [--baseline REV]
Writes bench/results/constrained.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the engine's worker gets its own threads (bench/engine.py, point 5)

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jsonschema

from hone.backends import LocalBackend
from hone.chat.grammar import closed_objects
from hone.engine import Engine
from hone.engine.grammar import GrammarMatchers
from hone.envs.toolcall import SYSTEM_PROMPT, TOOLS, make_tasks
from hone.models import load_model
from hone.types import SamplingParams

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "constrained.json"
BATCH, PROMPT_TOKENS, NEW_TOKENS = 32, 64, 128
EXPECTED_TOOL = {"weather": "get_weather", "Email": "send_email", "How much": "convert_currency"}


# --------------------------------------------------------------------------- 1. validity
def validity(tool_choice: str, parallel: bool, seed: int) -> dict[str, float]:
    schemas = {t["function"]["name"]: closed_objects(t["function"]["parameters"]) for t in TOOLS}
    backend = LocalBackend(engine_options={"num_threads": os.cpu_count()})
    backend.add_model("m", "smollm2-135m")
    client = backend.openai_client()

    async def ask(task) -> dict:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task.prompt}]
        reply = await client.chat.completions.create(
            model="m", messages=messages, tools=TOOLS, tool_choice=tool_choice, parallel_tool_calls=parallel, max_tokens=128, temperature=0.6, seed=seed
        )
        choice = reply.choices[0]
        return {"task": task.prompt, "message": choice.message.model_dump(), "forced": choice.model_extra["token_forced"], "finish_reason": choice.finish_reason}

    async def run_all():
        return await asyncio.gather(*[ask(t) for t in make_tasks()])

    started = time.perf_counter()
    answers = asyncio.run(run_all())
    seconds = time.perf_counter() - started
    backend.close()
    valid = right_tool = 0
    for answer in answers:
        calls = answer["message"]["tool_calls"] or []
        ok = bool(calls)
        for call in calls:
            name = call["function"]["name"]
            try:
                jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[name])
            except (KeyError, ValueError, jsonschema.ValidationError):
                ok = False
        valid += ok
        expected = next(tool for key, tool in EXPECTED_TOOL.items() if key in answer["task"])
        right_tool += ok and calls[0]["function"]["name"] == expected
    forced = [f for a in answers for f in (a["forced"] or [])]
    return {
        "tasks": len(answers),
        "valid_calls": valid,
        "cut_by_max_tokens": sum(a["finish_reason"] == "length" for a in answers),
        "calls_per_reply": round(sum(len(a["message"]["tool_calls"] or []) for a in answers) / len(answers), 2),
        "right_tool": right_tool,
        "forced_token_share": round(sum(forced) / len(forced), 3) if forced else None,
        "seconds": round(seconds, 1),
        "example": answers[0]["message"]["tool_calls"] or answers[0]["message"]["content"],
    }


# --------------------------------------------------------------------------- 2. throughput
def weather_array_grammar() -> str:
    call = {"type": "object", "properties": {"name": {"const": "get_weather"}, "arguments": TOOLS[0]["function"]["parameters"]}, "required": ["name", "arguments"]}
    schema = closed_objects({"type": "array", "items": call, "minItems": 50})
    layout = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    return "start: %json " + json.dumps({**schema, "x-guidance": layout})


def prompts(tokenizer, count: int) -> list[list[int]]:
    text = " ".join(t.prompt for t in make_tasks()) * 4
    stream = tokenizer.encode(text)
    return [stream[3 * i : 3 * i + PROMPT_TOKENS] for i in range(count)]


def throughput(engine: Engine, rows: list[tuple[list[int], SamplingParams]], repeats: int) -> dict[str, float]:
    """Best tokens/s over the whole batch, and over its unconstrained rows alone."""

    async def run():
        return await asyncio.gather(*[engine.sample(p, 1, params) for p, params in rows])

    best = {"all": 0.0, "unconstrained": 0.0, "constrained": 0.0}
    for _ in range(repeats):
        start = time.perf_counter()
        results = asyncio.run(run())
        elapsed = time.perf_counter() - start
        counts = {"all": 0, "unconstrained": 0, "constrained": 0}
        for (_, params), [sample] in zip(rows, results):
            assert len(sample.tokens) == NEW_TOKENS, (len(sample.tokens), sample.finish_reason)
            counts["all"] += NEW_TOKENS
            counts["constrained" if params.grammar else "unconstrained"] += NEW_TOKENS
        for key, tokens in counts.items():
            best[key] = max(best[key], tokens / elapsed)
    return {k: round(v, 1) for k, v in best.items() if v}


UNCONSTRAINED_SNIPPET = """
import os, asyncio, time, json
os.environ.setdefault("OMP_NUM_THREADS", "1")
from hone.engine import Engine
from hone.models import load_model
from hone.types import SamplingParams
loaded = load_model("smollm2-135m")
stream = loaded.tokenizer.encode("Agents call tools, read what comes back and decide what to do next. " * 40)
prompts = [stream[3 * i : 3 * i + {prompt}] for i in range({batch})]
engine = Engine(loaded.model, eos_token_ids=[], num_threads=os.cpu_count())
engine.sample_sync(prompts[0], 2, SamplingParams(max_tokens=8))
params = SamplingParams(max_tokens={new}, temperature=1.0)
async def run():
    return await asyncio.gather(*[engine.sample(p, 1, params) for p in prompts])
start = time.perf_counter(); asyncio.run(run()); print(json.dumps({{"tokens_per_s": {batch} * {new} / (time.perf_counter() - start)}}))
engine.close()
"""


def against_baseline(revision: str, repeats: int) -> dict[str, float]:
    """Unconstrained batch-32 tokens/s on `revision` and on this tree, runs alternating."""
    snippet = UNCONSTRAINED_SNIPPET.format(prompt=PROMPT_TOKENS, batch=BATCH, new=NEW_TOKENS)
    with tempfile.TemporaryDirectory() as scratch:
        baseline_tree = Path(scratch) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline_tree), revision], check=True, capture_output=True)
        try:
            best = {"baseline": 0.0, "this_tree": 0.0}
            for _ in range(repeats):
                for name, tree in (("baseline", baseline_tree), ("this_tree", ROOT)):
                    env = {**os.environ, "PYTHONPATH": str(tree)}
                    out = subprocess.run([sys.executable, "-c", snippet], env=env, cwd=tree, check=True, capture_output=True, text=True)
                    best[name] = max(best[name], json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_s"])
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline_tree)], check=True, capture_output=True)
    return {**{k: round(v, 1) for k, v in best.items()}, "ratio": round(best["this_tree"] / best["baseline"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", default="0856c0e", help="a revision before grammar support; '' skips part 3")
    args = parser.parse_args()

    configurations = {"required, one call": ("required", False), "required, parallel calls": ("required", True), "auto": ("auto", True)}
    result: dict = {"validity": {name: validity(choice, parallel, args.seed) for name, (choice, parallel) in configurations.items()}}
    print(json.dumps(result, indent=2, default=str), flush=True)

    loaded = load_model("smollm2-135m")
    tokenizer = loaded.tokenizer
    grammars = GrammarMatchers(tokenizer, loaded.model.config.vocab_size, [tokenizer.eos_token_id])
    # no eos: every row runs its 128 tokens (the constrained ones cannot end sooner: minItems 50)
    engine = Engine(loaded.model, eos_token_ids=[], num_threads=os.cpu_count(), grammars=grammars)
    plain = SamplingParams(max_tokens=NEW_TOKENS, temperature=1.0)
    constrained = SamplingParams(max_tokens=NEW_TOKENS, temperature=1.0, grammar=weather_array_grammar())
    rows = prompts(tokenizer, BATCH)
    engine.sample_sync(rows[0], 2, constrained)  # warm-up, and llguidance's tokenizer built
    result["throughput_batch_32"] = {
        "unconstrained": throughput(engine, [(p, plain) for p in rows], args.repeats),
        "constrained": throughput(engine, [(p, constrained) for p in rows], args.repeats),
        "mixed_16_16": throughput(engine, [(p, constrained if i % 2 else plain) for i, p in enumerate(rows)], args.repeats),
    }
    result["tokens_forced_share_in_throughput_runs"] = round(engine.stats["tokens_forced"] / max(1, engine.stats["tokens_constrained"]), 3)
    engine.close()
    t = result["throughput_batch_32"]
    result["constrained_over_unconstrained"] = round(t["constrained"]["all"] / t["unconstrained"]["all"], 3)
    if args.baseline:
        result["unconstrained_vs_baseline"] = {"revision": args.baseline, **against_baseline(args.baseline, args.repeats)}
    result["machine"] = {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version()}
    RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
