"""Benchmark: does llama.cpp load hone's GGUF exports and decode them as hone does?

The embedded SmolLM2-135M-Instruct is written with `hone.gguf_export.write_gguf` as f16 and q8_0.
For each file: llama.cpp (llama-cpp-python) loads it and its load log's warnings are kept; its
tokenisation of each rendered chat prompt is compared with Hugging Face's ids; then hone (which
loads the GGUF through transformers, dequantised to fp32) and llama.cpp (f16 / q8_0 kernels) each
greedy-decode 32 tokens of 4 chat prompts, EOS ignored on both sides. Reported per prompt: how many
leading tokens agree, and at the first disagreement each side's top-2 logit margin there (a small
margin means a near tie that rounding can flip). Also batch-1 tokens/s for both, prefill included
(hone runs fp32 here, so its speed is not its bf16 speed), and the file sizes.

Needs llama.cpp's binding, which is not a hone dependency:
    CMAKE_ARGS="-DGGML_NATIVE=ON" .venv/bin/pip install llama-cpp-python==0.3.36
Run: .venv/bin/python bench/gguf_llamacpp.py     Writes bench/results/gguf_llamacpp.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: the engine's worker gets the threads (bench/engine.py, point 5)

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

try:
    from llama_cpp import Llama, __version__ as llama_cpp_version, llama_get_logits_ith
except ImportError:
    print('llama-cpp-python is not installed; run: CMAKE_ARGS="-DGGML_NATIVE=ON" .venv/bin/pip install llama-cpp-python==0.3.36')
    sys.exit(2)

import numpy as np
import torch

from hone.engine import Engine
from hone.gguf_export import write_gguf
from hone.models import load_model
from hone.types import SamplingParams

TEXTS = ("What is the capital of France?", "Write a haiku about the sea.", "List three prime numbers.", "Explain what a tool call is in one sentence.")
NEW_TOKENS = 32
THREADS = 2
RESULTS = Path(__file__).parent / "results" / "gguf_llamacpp.json"


def load_llama(path: Path) -> tuple[Llama, list[str]]:
    """Load with verbose=True, its C-level stderr caught in a file, to keep the load log's warnings."""
    with tempfile.TemporaryFile(mode="w+") as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            llm = Llama(model_path=str(path), n_ctx=512, n_threads=THREADS, verbose=True)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        lines = log.read().splitlines()
    llm.verbose = False
    return llm, [line for line in lines if "warn" in line.lower() or "missing" in line.lower() or "incorrect" in line.lower()]


def llama_greedy(llm: Llama, prompt: list[int]) -> tuple[list[int], list[float], float]:
    """Argmax over llama.cpp's own logits, one token at a time, so the margins can be read too
    (its sampler at top_k=1 picks the same; `llm.scores` stays empty unless logits_all=True)."""
    llm.reset()
    tokens, margins = [], []
    start = time.perf_counter()
    llm.eval(prompt)
    for _ in range(NEW_TOKENS):
        logits = np.ctypeslib.as_array(llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        top2 = np.argpartition(logits, -2)[-2:]
        best = int(top2[np.argmax(logits[top2])])
        tokens.append(best)
        margins.append(float(abs(logits[top2[0]] - logits[top2[1]])))
        llm.eval([best])
    return tokens, margins, time.perf_counter() - start


def hone_greedy(engine: Engine, prompt: list[int]) -> tuple[list[int], list[float], float]:
    start = time.perf_counter()
    (seq,) = engine.sample_sync(prompt, 1, SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, top_logprobs=2))
    seconds = time.perf_counter() - start
    # logprob differences are logit differences: the softmax's normaliser cancels
    return seq.tokens, [top[0][1] - top[1][1] for top in seq.top_logprobs], seconds


def check_file(path: Path, prompts: list[list[int]], rendered: list[str]) -> dict:
    size_mb = round(path.stat().st_size / 1e6, 1)
    try:
        llm, warnings = load_llama(path)
    except Exception as exc:  # a file llama.cpp refuses is the finding; report it, don't stop
        return {"size_mb": size_mb, "llama_cpp_loaded": False, "error": str(exc), "prompts": []}
    hone_loaded = load_model(str(path))
    result = {
        "size_mb": size_mb,
        "llama_cpp_loaded": True,
        "llama_cpp_load_warnings": warnings,
        "llama_cpp_tokens_match_hf": all(llm.tokenize(t.encode(), add_bos=False, special=True) == p for t, p in zip(rendered, prompts)),
        "gguf_tokenizer_via_transformers_matches_hf": all(
            hone_loaded.tokenizer.encode(t, add_special_tokens=False) == p for t, p in zip(rendered, prompts)
        ),
        "prompts": [],
    }
    with Engine(hone_loaded.model, eos_token_ids=[], dtype=torch.float32, num_threads=THREADS) as engine:
        hone_greedy(engine, prompts[0][:8])  # warm-up, both sides: first calls pay one-off setup
        llama_greedy(llm, prompts[0][:8])
        hone_s = llama_s = 0.0
        for text, prompt in zip(TEXTS, prompts):
            h_tokens, h_margins, h_s = hone_greedy(engine, prompt)
            l_tokens, l_margins, l_s = llama_greedy(llm, prompt)
            hone_s, llama_s = hone_s + h_s, llama_s + l_s
            agree = next((i for i, (a, b) in enumerate(zip(h_tokens, l_tokens)) if a != b), NEW_TOKENS)
            row = {"prompt": text, "prompt_tokens": len(prompt), "agree_leading": agree, "all_agree": agree == NEW_TOKENS,
                   "hone_text": hone_loaded.tokenizer.decode(h_tokens)}
            if agree < NEW_TOKENS:
                row["diverge"] = {"index": agree, "hone_token": h_tokens[agree], "llama_cpp_token": l_tokens[agree],
                                  "hone_top2_margin": round(h_margins[agree], 4), "llama_cpp_top2_margin": round(l_margins[agree], 4)}
            result["prompts"].append(row)
    n = NEW_TOKENS * len(prompts)
    result["hone_fp32_tokens_per_s"] = round(n / hone_s, 1)
    result["llama_cpp_tokens_per_s"] = round(n / llama_s, 1)
    llm.close()
    return result


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    load_before = [round(x, 2) for x in os.getloadavg()]
    loaded = load_model("smollm2-135m")
    messages = [[{"role": "user", "content": t}] for t in TEXTS]
    prompts = [loaded.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=False) for m in messages]
    rendered = [loaded.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
    files = {}
    with tempfile.TemporaryDirectory() as folder:
        for quant in ("f16", "q8_0"):
            path = write_gguf(loaded.model, loaded.tokenizer, Path(folder) / f"model.{quant}.gguf", quant=quant, name="SmolLM2-135M-Instruct")
            files[quant] = check_file(path, prompts, rendered)

    print(f"{'file':6} {'MB':>6} {'loads':>5} {'tok=hf':>6} {'hone tok/s':>10} {'llama tok/s':>11}  leading tokens agreeing, of {NEW_TOKENS}")
    for quant, r in files.items():
        if not r["llama_cpp_loaded"]:
            print(f"{quant:6} {r['size_mb']:6.1f}    no  llama.cpp could not load it: {r['error']}")
            continue
        agree = " ".join(str(p["agree_leading"]) for p in r["prompts"])
        print(f"{quant:6} {r['size_mb']:6.1f} {'yes' if r['llama_cpp_loaded'] else 'no':>5} {str(r['llama_cpp_tokens_match_hf']):>6} "
              f"{r['hone_fp32_tokens_per_s']:10.1f} {r['llama_cpp_tokens_per_s']:11.1f}  {agree}")
        for p in r["prompts"]:
            if "diverge" in p:
                d = p["diverge"]
                print(f"  {quant} '{p['prompt']}': diverges at token {d['index']} (hone {d['hone_token']}, margin {d['hone_top2_margin']}; "
                      f"llama.cpp {d['llama_cpp_token']}, margin {d['llama_cpp_top2_margin']})")
        for w in r["llama_cpp_load_warnings"]:
            print(f"  {quant} llama.cpp load warning: {w}")

    result = {
        "files": files,
        "workload": f"4 chat prompts, batch 1, greedy, {NEW_TOKENS} new tokens, EOS ignored, prefill included in tokens/s; hone fp32, llama.cpp {THREADS} threads",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
                    "torch": torch.__version__, "llama_cpp_python": llama_cpp_version,
                    "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()]},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
