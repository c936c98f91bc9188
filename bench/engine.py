"""Benchmark: hone's torch engine against Hugging Face `generate`, and against this machine's matmul peak.

1. Model: the embedded SmolLM2-135M. Batch B = B concurrent `sample` calls, each with its own
   distinct 64-token prompt (what an agent workload looks like), n=1 each. Hugging Face gets the
   same B prompts as one left-padded batch.
2. Both sample at temperature 1 with no top-k/top-p and exactly 128 new tokens (hone: no eos ids;
   HF: min_new_tokens = max_new_tokens = 128). Tokens/s = B * 128 / wall time, prefill included.
3. Each figure is the best of `--repeats` runs (the machine is shared; the worst runs measure the
   neighbours). The load average before and after is recorded with the figures.
4. fraction_of_peak = hone tokens/s at batch 32 x FLOPs per token / matmul peak of the engine's dtype,
   FLOPs per token = 2 x (parameters that multiply: every layer plus the LM head; the embedding
   lookup is free).
4b. The decode roofline at batch B: a decode step must read every weight once (the layers in the
   engine's dtype, the LM head in its own: fp32 by default), each row's KV cache (at the mean decode position, prompt +
   half the new tokens) and write and read the fp32 logits; and it must do B x FLOPs per token plus
   attention. Its least time is max(bytes / memory bandwidth, FLOPs / matmul peak); the memory
   bandwidth is measured here (the best of summing a 512 MiB fp32 tensor). roofline_fraction =
   that least time / the measured time per step (B / tokens/s, prefill included, so a little
   pessimistic).

5. Threads: every measured workload (hone's worker, HF generate, the matmul peaks) runs in its own
   non-main thread with `--threads` OpenMP threads, and the main thread stays single-threaded
   (OMP_NUM_THREADS=1 before torch loads). Once the main thread has its own OpenMP pool, libgomp
   sees more threads than cores and any other thread's torch ops run ~30-40% slower on 2 cores;
   the same conditions for both systems keep the comparison fair.

6. The main figures decode without speculation (as HF generate and llama.cpp do, and the engine's
   default); with n-gram speculation on, the same workload is reported beside them at batch 1, 8, 32.

7. "serving": the same workload and roofline for the engine `hone serve` builds when it only
   serves (`engine.serving_options`; on an AVX2 CPU: bf16 layers and a bf16 LM head on hone's own
   kernel, which multiplies in fp32, so its compute bound uses the fp32 matmul peak). On such a
   CPU the default engine (fp32, what training samples with) and the serving one are the before
   and after of that kernel, measured in one run.

Run: .venv/bin/python bench/engine.py [--threads N] [--repeats R] [--quick]
Writes bench/results/engine.json (engine_avx512bf16.json on a CPU with native bf16).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: see point 5

import argparse
import asyncio
import json
import threading
import time
from pathlib import Path

import torch

from common import machine, native_bf16_suffix
from hone.engine import Engine, SpeculationConfig, serving_options
from hone.engine.engine import bf16_kernel_runs
from hone.models import load_model
from hone.types import SamplingParams

BATCHES = (1, 8, 32)  # hone and HF generate
ROOFLINE_BATCHES = (1, 8, 32, 64)  # hone only
PROMPT_TOKENS = 64
NEW_TOKENS = 128
RESULTS = Path(__file__).parent / "results" / "engine.json"

_TEXT = """Agents built on small language models call tools, read what comes back, and decide what to do
next. A mail assistant searches an inbox, opens the threads that look relevant, drafts a reply and
asks before sending it. A coding helper lists a directory, reads a file, edits three lines and runs
the tests. A travel planner compares fares, checks the calendar and books the cheaper of two
flights. Each step is a short completion that must follow a format exactly, or the tool call fails.
Reinforcement learning lets the model try, scores the outcome, and nudges the weights toward the
tries that worked. The sampler does most of the work: thousands of short completions per step,
many of them sharing a prompt, each returned with the log-probability of every token it drew."""


def distinct_prompts(tokenizer, count: int) -> list[list[int]]:
    """`count` different 64-token windows of a fixed text (each starts a few tokens later)."""
    stream = tokenizer.encode(_TEXT)
    while len(stream) < PROMPT_TOKENS + 4 * count:
        stream = stream + stream
    return [stream[4 * i : 4 * i + PROMPT_TOKENS] for i in range(count)]


# --------------------------------------------------------------------------- hone
def hone_tokens_per_s(engine: Engine, prompts: list[list[int]], repeats: int) -> float:
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=1.0)

    async def run():
        return await asyncio.gather(*[engine.sample(p, 1, params) for p in prompts])

    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        results = asyncio.run(run())
        elapsed = time.perf_counter() - start
        tokens = sum(len(r[0].tokens) for r in results)
        assert tokens == NEW_TOKENS * len(prompts), tokens
        best = max(best, tokens / elapsed)
    return best


# --------------------------------------------------------------------------- Hugging Face
def hf_tokens_per_s(model, tokenizer, prompts: list[list[int]], repeats: int) -> float:
    pad = tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # left-padded
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                pad_token_id=pad,
            )
        elapsed = time.perf_counter() - start
        tokens = (out.shape[1] - width) * len(prompts)
        assert tokens == NEW_TOKENS * len(prompts), tokens
        best = max(best, tokens / elapsed)
    return best


# --------------------------------------------------------------------------- machine
def in_thread(threads: int, fn, *args):
    """Run fn(*args) in a fresh thread with `threads` torch threads and return its result."""
    box = {}

    def target():
        torch.set_num_threads(threads)
        try:
            box["result"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def matmul_peak_gflops(dtype: torch.dtype, sizes=(1024, 2048), repeats: int = 5) -> dict[int, float]:
    peaks = {}
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(2):
            a @ b
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        peaks[n] = 2 * n**3 / best / 1e9
    return peaks


def flops_per_token(model) -> float:
    """2 x the parameters a token's forward multiplies by: all layers, the final norm and the LM head."""
    body = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name and "lm_head" not in name)
    head = model.get_output_embeddings().weight.numel()
    return 2.0 * (body + head)


def memory_bandwidth_gbs(megabytes: int = 512, repeats: int = 5) -> float:
    """Read bandwidth: the best of summing a `megabytes` fp32 tensor."""
    data = torch.ones(megabytes * 2**20 // 4)
    for _ in range(2):
        data.sum()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    return data.numel() * 4 / best / 1e9


def decode_step_cost(model, dtype: torch.dtype, head_dtype: torch.dtype, batch: int, position: int) -> tuple[float, float]:
    """(bytes moved, FLOPs) of one decode step at `batch` rows, each at cache `position` (point 4b)."""
    config = model.config
    itemsize = torch.tensor([], dtype=dtype).element_size()
    head_itemsize = torch.tensor([], dtype=head_dtype).element_size()
    body = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name and "lm_head" not in name)
    head = model.get_output_embeddings().weight.numel()
    head_dim = config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", config.num_attention_heads)
    kv_bytes = batch * position * config.num_hidden_layers * 2 * kv_heads * head_dim * itemsize
    logits_bytes = 2 * batch * config.vocab_size * 4
    moved = body * itemsize + head * head_itemsize + kv_bytes + logits_bytes
    attention_flops = batch * 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * position
    return float(moved), batch * flops_per_token(model) + attention_flops


def roofline(model, dtype: torch.dtype, head_dtype: torch.dtype, tokens_per_s: dict[int, float], bandwidth_gbs: float, peak_gflops: float) -> dict[str, dict[str, float]]:
    position = PROMPT_TOKENS + NEW_TOKENS // 2
    rows = {}
    for batch, rate in tokens_per_s.items():
        moved, flops = decode_step_cost(model, dtype, head_dtype, batch, position)
        memory_s, compute_s = moved / (bandwidth_gbs * 1e9), flops / (peak_gflops * 1e9)
        measured_s = batch / rate
        rows[str(batch)] = {
            "measured_ms_per_step": round(measured_s * 1e3, 2),
            "memory_bound_ms": round(memory_s * 1e3, 2),
            "compute_bound_ms": round(compute_s * 1e3, 2),
            "bound_by": "memory" if memory_s >= compute_s else "compute",
            "roofline_fraction": round(max(memory_s, compute_s) / measured_s, 3),
        }
    return rows


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="hone only, no HF generate (for profiling)")
    args = parser.parse_args()
    load_before = load_average()

    loaded = load_model("smollm2-135m")
    model, tokenizer = loaded.model, loaded.tokenizer
    prompts = distinct_prompts(tokenizer, max(BATCHES))

    # plain decoding (no speculation) is what HF generate and llama.cpp are compared with
    engine = Engine(model, eos_token_ids=[], decode=tokenizer.decode, num_threads=args.threads, speculation=None)  # dtype: auto
    engine.sample_sync(prompts[0], 4, SamplingParams(max_tokens=8))  # warm-up
    prompts = distinct_prompts(tokenizer, max(ROOFLINE_BATCHES))
    hone = {b: hone_tokens_per_s(engine, prompts[:b], args.repeats) for b in ROOFLINE_BATCHES}
    dtype, attention = engine.dtype, engine._runner.attention_impl
    engine.close()
    with Engine(model, eos_token_ids=[], decode=tokenizer.decode, num_threads=args.threads, speculation=SpeculationConfig()) as speculative:
        speculative.sample_sync(prompts[0], 4, SamplingParams(max_tokens=8))
        hone_speculative = {b: hone_tokens_per_s(speculative, prompts[:b], args.repeats) for b in BATCHES}
        acceptance = speculative.stats["draft_tokens_accepted"] / max(1, speculative.stats["draft_tokens"])
    serve = serving_options()
    with Engine(model, eos_token_ids=[], decode=tokenizer.decode, num_threads=args.threads, speculation=None, **serve) as serving:
        serving.sample_sync(prompts[0], 4, SamplingParams(max_tokens=8))
        hone_serving = {b: hone_tokens_per_s(serving, prompts[:b], args.repeats) for b in BATCHES}

    hf = {}
    if not args.quick:
        hf = {b: in_thread(args.threads, hf_tokens_per_s, model, tokenizer, prompts[:b], args.repeats) for b in BATCHES}

    peaks = {str(d).replace("torch.", ""): in_thread(args.threads, matmul_peak_gflops, d) for d in (torch.float32, torch.bfloat16)}
    peak = {name: max(by_size.values()) for name, by_size in peaks.items()}
    fpt = flops_per_token(model)
    dtype_name = str(dtype).replace("torch.", "")
    bandwidth = in_thread(args.threads, memory_bandwidth_gbs)
    decode_roofline = roofline(model, dtype, torch.float32, hone, bandwidth, peak[dtype_name])
    serve_name = str(serve["dtype"]).replace("torch.", "")
    serve_peak = peak["float32"] if serve["dtype"] == torch.bfloat16 and bf16_kernel_runs() else peak[serve_name]  # point 7
    serving_roofline = roofline(model, serve["dtype"], serve["lm_head_dtype"], hone_serving, bandwidth, serve_peak)
    result = {
        "hone_tokens_per_s": {str(b): round(v, 1) for b, v in hone.items()},
        "hf_generate_tokens_per_s": {str(b): round(v, 1) for b, v in hf.items()},
        "speedup_vs_hf": {str(b): round(hone[b] / hf[b], 2) for b in hf},
        "serving": {  # point 7: the engine `hone serve` builds when it only serves
            "dtype": serve_name,
            "lm_head_dtype": str(serve["lm_head_dtype"]).replace("torch.", ""),
            "tokens_per_s": {str(b): round(v, 1) for b, v in hone_serving.items()},
            "matmul_peak_gflops_used": round(serve_peak, 1),
            "decode_roofline": serving_roofline,
        },
        # with n-gram drafts verified in the decode step (opt-in; this text is not copied much)
        "hone_tokens_per_s_speculative": {str(b): round(v, 1) for b, v in hone_speculative.items()},
        "speculative_acceptance": round(acceptance, 3),
        "matmul_peak_gflops": {name: round(v, 1) for name, v in peak.items()},
        "matmul_gflops_by_size": {name: {str(n): round(v, 1) for n, v in s.items()} for name, s in peaks.items()},
        "flops_per_token_gflop": round(fpt / 1e9, 4),
        "fraction_of_peak": round(hone[32] * fpt / (peak[dtype_name] * 1e9), 4),
        "memory_bandwidth_gbs": round(bandwidth, 1),
        "decode_roofline": decode_roofline,
        "dtype": dtype_name,
        "lm_head_dtype": "float32",
        "attention": attention,  # "cpp": the compiled decode-attention kernel; "torch": the fallback
        "workload": f"B concurrent requests, distinct {PROMPT_TOKENS}-token prompts, n=1, temperature 1, "
        f"{NEW_TOKENS} new tokens each, prefill included; best of {args.repeats}",
        "machine": {
            **machine(),
            "torch_threads": args.threads,
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "torch": torch.__version__,
        },
    }
    path = RESULTS.with_name(f"engine{native_bf16_suffix()}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'batch':>5}  {'hone tok/s':>10}  {'HF generate tok/s':>17}  {'speed-up':>8}  {'roofline':>8}")
    for b in ROOFLINE_BATCHES:
        hf_b = hf.get(b)
        share = decode_roofline[str(b)]["roofline_fraction"]
        print(f"{b:>5}  {hone[b]:>10.1f}  {hf_b or float('nan'):>17.1f}  {(hone[b] / hf_b if hf_b else float('nan')):>7.2f}x  {share:>8.1%}")
    print(f"memory bandwidth {bandwidth:.1f} GB/s; roofline fraction = least step time (bytes/bandwidth or FLOPs/peak) / measured")
    print(f"serving engine ({serve_name}, LM head {result['serving']['lm_head_dtype']}):")
    for b in BATCHES:
        share = serving_roofline[str(b)]["roofline_fraction"]
        print(f"{b:>5}  {hone_serving[b]:>10.1f}  {'':>17}  {hone_serving[b] / hone[b]:>7.2f}x  {share:>8.1%}   (x = over the default engine)")
    print(f"with speculation on: {result['hone_tokens_per_s_speculative']} tok/s, acceptance {acceptance:.0%}")
    print(f"matmul peak GFLOP/s: {result['matmul_peak_gflops']}  engine dtype: {dtype_name}")
    print(f"fraction of {dtype_name} peak at batch 32: {result['fraction_of_peak']:.1%}")
    print(f"load average before/after: {load_before} / {result['machine']['load_average_after']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
