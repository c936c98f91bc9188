"""Benchmark: what the transformers fallback costs (hone.engine.fallback), on the embedded model.

The same model sampled by the native runner and, forced, by the fallback (transformers' forward
and cache, one sequence at a time, fp32): distinct 64-token prompts, 64 new tokens, temperature
1, no EOS, at batch 1 and 8; best of --repeats, tokens/s = sampled tokens / wall time, prefill
included. The native runner runs in its default dtype (bf16 where the CPU multiplies in it).

Run: .venv/bin/python bench/fallback.py [--repeats R]
Writes bench/results/fallback.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the engine's worker sets its own thread count

import argparse
import json
from pathlib import Path

from common import best_tokens_per_s, machine

import hone.engine.engine as engine_module
from hone.engine import Engine
from hone.errors import HoneError
from hone.models import load_model
from hone.types import SamplingParams

RESULTS = Path(__file__).parent / "results" / "fallback.json"
PROMPT_TOKENS, NEW_TOKENS = 64, 64


def force_fallback(model) -> None:
    raise HoneError("forced by bench/fallback.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    loaded = load_model("smollm2-135m")
    stream = loaded.tokenizer.encode("Agents call tools, read what comes back and decide what to do next. " * 30)
    prompts = [stream[3 * i : 3 * i + PROMPT_TOKENS] for i in range(8)]
    result: dict = {}
    native_check = engine_module.check_supported
    for runner in ("native", "transformers"):
        engine_module.check_supported = native_check if runner == "native" else force_fallback
        with Engine(loaded.model, eos_token_ids=[], num_threads=os.cpu_count()) as engine:
            engine.sample_sync(prompts[0], 1, SamplingParams(max_tokens=4))  # warm-up
            params = SamplingParams(max_tokens=NEW_TOKENS, temperature=1.0)
            result[runner] = {"dtype": str(engine.dtype), **{f"batch_{n}_tokens_per_s": best_tokens_per_s(engine, prompts[:n], params, args.repeats) for n in (1, 8)}}
        print(runner, json.dumps(result[runner]), flush=True)
    engine_module.check_supported = native_check
    result["native_over_fallback"] = {n: round(result["native"][n] / result["transformers"][n], 2) for n in result["native"] if n != "dtype"}
    result["machine"] = machine()
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
