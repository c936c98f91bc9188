"""Benchmark: does llama.cpp load hone's GGUF exports and decode them as hone does?

SmolLM2-135M-Instruct (embedded) is written by `hone.gguf_export.write_gguf` as f16 and as q8_0.
Per file: whether llama.cpp (llama-cpp-python) loads it, and its log's warnings; whether it
tokenises the rendered chat prompts to Hugging Face's ids; then hone (GGUF read by transformers,
dequantised to fp32) and llama.cpp (its f16 / q8_0 kernels) greedy-decode 32 tokens of 4 chat
prompts, EOS ignored: leading tokens agreeing, each side's top-2 logit margin where they first
differ (small = a near tie that rounding flips), batch-1 tokens/s with prefill (hone in fp32, not
its faster bf16), file sizes. Run: .venv/bin/python bench/gguf_llamacpp.py (writes
bench/results/gguf_llamacpp.json) after installing llama.cpp's binding, not a hone dependency:
    CMAKE_ARGS="-DGGML_NATIVE=ON" .venv/bin/pip install llama-cpp-python==0.3.36
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: the engine's worker gets the threads (bench/engine.py, point 5)

import ctypes
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

try:
    from llama_cpp import Llama, llama_get_logits_ith, llama_log_callback, llama_log_set
    from llama_cpp import __version__ as llama_cpp_version
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
LOG_PROBLEMS: list[str] = []  # llama.cpp's warning and error lines since the last clear


@llama_log_callback
def keep_problems(level: int, text: bytes, user_data) -> None:
    # replaces llama-cpp-python's printer: ggml's WARN = 3 and ERROR = 4 (its own level table
    # predates DEBUG = 1); the chatter of the other levels is dropped
    if level in (3, 4):
        LOG_PROBLEMS.append(text.decode(errors="replace").rstrip())


llama_log_set(keep_problems, ctypes.c_void_p(0))


def llama_greedy(llm: Llama, prompt: list[int]) -> tuple[list[int], list[float], float]:
    """Argmax of llama.cpp's logits, read from its context (`llm.scores` stays empty unless logits_all)."""
    llm.reset()
    tokens, margins = [], []
    start = time.perf_counter()
    llm.eval(prompt)
    for _ in range(NEW_TOKENS):
        logits = np.ctypeslib.as_array(llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        top2 = np.argpartition(logits, -2)[-2:]
        second, best = top2[np.argsort(logits[top2])]
        tokens.append(int(best))
        margins.append(float(logits[best] - logits[second]))
        llm.eval([int(best)])
    return tokens, margins, time.perf_counter() - start


def hone_greedy(engine: Engine, prompt: list[int]) -> tuple[list[int], list[float], float]:
    start = time.perf_counter()
    (seq,) = engine.sample_sync(prompt, 1, SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, top_logprobs=2))
    return seq.tokens, [top[0][1] - top[1][1] for top in seq.top_logprobs], time.perf_counter() - start  # logprob gaps = logit gaps


def check_file(path: Path, prompts: list[list[int]], rendered: list[str]) -> dict:
    result = {"size_mb": round(path.stat().st_size / 1e6, 1), "llama_cpp_loaded": False, "prompts": []}
    LOG_PROBLEMS.clear()
    try:
        llm = Llama(model_path=str(path), n_ctx=512, n_threads=THREADS, verbose=False)
    except ValueError as exc:  # how llama-cpp-python says llama.cpp refused the file; that is the finding: report it, don't stop
        return result | {"error": str(exc), "llama_cpp_warnings": list(LOG_PROBLEMS)}
    hone_loaded = load_model(str(path))
    decode = hone_loaded.tokenizer.decode
    result |= {"llama_cpp_loaded": True,  # and both readers of the file's tokenizer split the rendered prompts into hf's ids
               "llama_cpp_tokens_match_hf": all(llm.tokenize(t.encode(), add_bos=False, special=True) == p for t, p in zip(rendered, prompts)),
               "gguf_tokenizer_in_transformers_matches_hf": all(hone_loaded.tokenizer.encode(t, add_special_tokens=False) == p for t, p in zip(rendered, prompts))}
    with Engine(hone_loaded.model, eos_token_ids=[], dtype=torch.float32, num_threads=THREADS) as engine:
        hone_greedy(engine, prompts[0][:8])  # warm-up, both sides: first calls pay one-off setup
        llama_greedy(llm, prompts[0][:8])
        for text, prompt in zip(TEXTS, prompts):
            h_tokens, h_margins, h_s = hone_greedy(engine, prompt)
            l_tokens, l_margins, l_s = llama_greedy(llm, prompt)
            agree = next((i for i, (a, b) in enumerate(zip(h_tokens, l_tokens)) if a != b), NEW_TOKENS)
            row = {"prompt": text, "prompt_tokens": len(prompt), "agree_leading": agree, "all_agree": agree == NEW_TOKENS,
                   "hone_s": round(h_s, 3), "llama_cpp_s": round(l_s, 3), "hone_text": decode(h_tokens)}
            if agree < NEW_TOKENS:  # margins: each side's best minus second-best logit at the first disagreement
                row["diverge"] = {"index": agree, "hone_token": decode([h_tokens[agree]]), "hone_top2_margin": round(h_margins[agree], 4),
                                  "llama_cpp_token": decode([l_tokens[agree]]), "llama_cpp_top2_margin": round(l_margins[agree], 4)}
            result["prompts"].append(row)
    llm.close()
    n = NEW_TOKENS * len(prompts)
    speeds = {f"{k}_tokens_per_s": round(n / sum(p[f"{k}_s"] for p in result["prompts"]), 1) for k in ("hone", "llama_cpp")}
    return result | speeds | {"llama_cpp_warnings": list(LOG_PROBLEMS)}


def main() -> None:
    load_before = [round(x, 2) for x in os.getloadavg()]
    loaded = load_model("smollm2-135m")
    chats = [[{"role": "user", "content": t}] for t in TEXTS]
    prompts = [loaded.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False) for c in chats]
    rendered = [loaded.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
    files = {}
    with tempfile.TemporaryDirectory() as folder:
        for quant in ("f16", "q8_0"):
            path = write_gguf(loaded.model, loaded.tokenizer, Path(folder) / f"model.{quant}.gguf", quant=quant, name="SmolLM2-135M-Instruct")
            files[quant] = check_file(path, prompts, rendered)

    print(f"{'file':5} {'MB':>6} {'loads':>5} {'tok=hf':>6} {'hone tok/s':>10} {'llama tok/s':>11}  leading tokens agreeing (of {NEW_TOKENS}) per prompt")
    for quant, r in files.items():
        print(f"{quant:5} {r['size_mb']:6.1f} {'no':>5}  llama.cpp: {r['error']}" if not r["llama_cpp_loaded"] else
              f"{quant:5} {r['size_mb']:6.1f} {'yes':>5} {r['llama_cpp_tokens_match_hf']!s:>6} {r['hone_tokens_per_s']:10.1f} "
              f"{r['llama_cpp_tokens_per_s']:11.1f}  {' '.join(str(p['agree_leading']) for p in r['prompts'])}")
        for p in (p for p in r["prompts"] if "diverge" in p):
            d = p["diverge"]
            print(f"  {quant} '{p['prompt']}' diverges at token {d['index']}: hone {d['hone_token']!r} (top-2 logit margin {d['hone_top2_margin']}), "
                  f"llama.cpp {d['llama_cpp_token']!r} (margin {d['llama_cpp_top2_margin']})")
        for line in r["llama_cpp_warnings"]:
            print(f"  {quant} llama.cpp warning: {line}")

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    machine = {"cpu": cpu, "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "torch": torch.__version__,
               "llama_cpp_python": llama_cpp_version, "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    workload = f"4 chat prompts, batch 1, greedy, {NEW_TOKENS} new tokens, EOS ignored; tokens/s include prefill; hone fp32, both {THREADS} threads"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"files": files, "workload": workload, "machine": machine}, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
