"""Grammar-constrained decoding: what does each library cost per token on CPU?

Compares llguidance, xgrammar and outlines-core on the project's tokenizer (SmolLM2, 49152 tokens)
so the choice between them rests on measured cost, not on their READMEs. For each library:

1. compile: building (a) a tool-call JSON schema and (b) a generic JSON object (`{"type": "object"}`,
   how OpenAI's `json_object` mode maps onto all three). Also "first mask" = compile + new matcher
   + its first mask: llguidance compiles lazily, the other two eagerly, so only that sum compares.
2. step: 32 matchers (one per batch row) walk one valid token path in lock-step; each step fills the
   (32, 1536) int32 next-token bitmask, then advances every matcher by the path's token. Batched
   APIs where the library has one; "serial" drives the same 32 rows through the single-matcher
   calls, to show what the thread pool buys on this machine. Also a batch of 1.
3. apply: setting disallowed entries of (32, 49152) fp32 logits to -inf with each library's kernel.

Each figure is repeated REPS times; tables show the best, the JSON also keeps the median. Threads
are pinned to 2 (torch, llguidance's executor, xgrammar's compiler and batch matcher).

    # xgrammar's own requirements pull triton (GBs, GPU only): install the two peers without them
    .venv/bin/python -m pip install --no-deps xgrammar==0.2.8 outlines-core==0.2.14 apache-tvm-ffi==0.1.15.post2
    .venv/bin/python bench/grammar_masks.py   # -> bench/results/grammar_masks.json
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import time
from importlib.metadata import version
from pathlib import Path

import llguidance
import llguidance.hf
import llguidance.torch as llt
import outlines_core
import outlines_core.kernels.torch as okt
import torch
import xgrammar as xgr

from hone.models.loader import load_tokenizer

THREADS, BATCH, REPS = 2, 32, 5
SHOW = "best"  # tables show the best of REPS (least disturbed by other load on 2 cores); JSON has the median too
TEXT = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c", "days": 3}}'
ARGS = {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}, "days": {"type": "integer"}}
TOOL_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"const": "get_weather"},
        "arguments": {"type": "object", "properties": ARGS, "required": list(ARGS), "additionalProperties": False},
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
GRAMMARS = {"tool_schema": TOOL_SCHEMA, "json_object": {"type": "object"}}
OUT = Path(__file__).parent / "results" / "grammar_masks.json"


class LLGuidance:
    name, batched = "llguidance", True

    def __init__(self, tok):
        self.tok = llguidance.hf.from_tokenizer(tok)
        self.executor = llguidance.LLExecutor(num_threads=THREADS)
        self.apply = llt.apply_token_bitmask_inplace  # a torch.compile'd kernel

    def compile(self, schema):
        m = llguidance.LLMatcher(self.tok, llguidance.LLMatcher.grammar_from_json_schema(schema), log_level=0)
        assert not m.is_error(), m.get_error()
        return m  # the compiled form is a fresh matcher; rows are deep copies of it

    def matchers(self, compiled, n):
        return [compiled.deep_copy() for _ in range(n)]

    def fill(self, ms, bitmask):
        if len(ms) == 1:
            return llt.fill_next_token_bitmask(ms[0], bitmask)
        llt.fill_next_token_bitmask_par(self.executor, [(m, i) for i, m in enumerate(ms)], bitmask)

    def advance(self, ms, token):
        if len(ms) == 1:
            return [ms[0].consume_token(token)]
        return llt.consume_token_par(self.executor, [(m, token) for m in ms])


class XGrammar:
    name, batched = "xgrammar", True

    def __init__(self, tok):
        info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
        self.compiler = xgr.GrammarCompiler(info, max_threads=THREADS, cache_enabled=False)
        self.batch = xgr.BatchGrammarMatcher(max_threads=THREADS)
        self.apply = xgr.apply_token_bitmask_inplace  # backend "auto" picks its native CPU kernel
        self.apply_torch_native = functools.partial(xgr.apply_token_bitmask_inplace, backend="torch_native")

    def compile(self, schema):
        return self.compiler.compile_json_schema(json.dumps(schema))

    def matchers(self, compiled, n):
        return [xgr.GrammarMatcher(compiled) for _ in range(n)]

    def fill(self, ms, bitmask):
        if len(ms) == 1:
            return ms[0].fill_next_token_bitmask(bitmask, 0)
        self.batch.batch_fill_next_token_bitmask(ms, bitmask)

    def advance(self, ms, token):
        if len(ms) == 1:
            return [ms[0].accept_token(token)]
        return xgr.BatchGrammarMatcher.batch_accept_token(ms, [token] * len(ms))


class OutlinesCore:
    name, batched = "outlines-core", False  # no batched API: rows are filled one at a time

    def __init__(self, tok):
        self.vocab = outlines_core.Vocabulary(tok.eos_token_id, byte_level_vocab(tok))
        self.apply = okt.apply_token_bitmask_inplace  # a torch.compile'd kernel

    def compile(self, schema):  # JSON schema -> regex -> token-level DFA index
        return outlines_core.Index(outlines_core.json_schema.build_regex_from_schema(json.dumps(schema)), self.vocab)

    def matchers(self, compiled, n):
        return [outlines_core.Guide(compiled) for _ in range(n)]

    def fill(self, ms, bitmask):
        for i, g in enumerate(ms):
            g.write_mask_into(bitmask[i].data_ptr(), bitmask.shape[1], 4)

    def advance(self, ms, token):
        return [g.advance(token, return_tokens=False) is None for g in ms]  # raises on a bad token


def byte_level_vocab(tok) -> dict[bytes, list[int]]:
    """Raw bytes -> token ids for a GPT-2 style byte-level BPE vocabulary (outlines-core wants bytes)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [b for b in range(256) if b not in printable]
    char_to_byte = {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(extra)}
    skip = set(tok.all_special_ids)  # EOS is passed separately; the rest are not JSON text
    vocab: dict[bytes, list[int]] = {}
    for piece, i in tok.get_vocab().items():
        if i not in skip:
            vocab.setdefault(bytes(char_to_byte[c] for c in piece), []).append(i)
    return vocab


def us(t0: int) -> float:
    return (time.perf_counter_ns() - t0) / 1e3


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "best": min(values)}


def new_bitmask(n: int, vocab: int) -> torch.Tensor:
    return torch.full((n, (vocab + 31) // 32), -1, dtype=torch.int32)


def check_path(lib, compiled, path, vocab, eos) -> dict:
    """One matcher walks the path: each token must be in its mask and accepted; EOS must be allowed at the end."""
    (m,), bm, allowed = lib.matchers(compiled, 1), new_bitmask(1, vocab), []
    for step, tok in enumerate([*path, eos]):
        lib.fill([m], bm)
        bits = ((bm[0].unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1).flatten()
        allowed.append(int(bits.sum()))
        if not bits[tok]:
            return {"ok": False, "why": f"token {tok} masked out at step {step}"}
        if tok != eos and not all(lib.advance([m], tok)):
            return {"ok": False, "why": f"token {tok} rejected at step {step}"}
    return {"ok": True, "mean_allowed_tokens": statistics.mean(allowed)}


def bench_compile(lib, schema, vocab) -> tuple[object, dict]:
    compile_us, first_us = [], []
    for _ in range(REPS):
        t0 = time.perf_counter_ns()
        compiled = lib.compile(schema)
        compile_us.append(us(t0))
        lib.fill(lib.matchers(compiled, 1), new_bitmask(1, vocab))
        first_us.append(us(t0))
    return compiled, {"compile_us": summary(compile_us), "first_mask_us": summary(first_us)}


def bench_steps(lib, compiled, path, batch, vocab, serial=False) -> dict:
    def fill(ms, bm):
        if not serial:
            return lib.fill(ms, bm)
        for i, m in enumerate(ms):
            lib.fill([m], bm[i : i + 1])

    def advance(ms, tok):
        return [ok for m in ms for ok in lib.advance([m], tok)] if serial else lib.advance(ms, tok)

    reps = {"fill_us": [], "advance_us": [], "step_us": [], "step_p95_us": [], "step_per_row_us": []}
    for _ in range(REPS):
        ms, bm, fills, advs = lib.matchers(compiled, batch), new_bitmask(batch, vocab), [], []
        for tok in path:
            t0 = time.perf_counter_ns()
            fill(ms, bm)
            fills.append(us(t0))
            t0 = time.perf_counter_ns()
            assert all(advance(ms, tok)), f"{lib.name} rejected token {tok}"
            advs.append(us(t0))
        steps = sorted(f + a for f, a in zip(fills, advs))
        mean = statistics.mean(steps)
        p95 = steps[round(0.95 * (len(steps) - 1))]
        for key, val in zip(reps, (statistics.mean(fills), statistics.mean(advs), mean, p95, mean / batch)):
            reps[key].append(val)
    return {k: summary(v) for k, v in reps.items()}


def bench_apply(fn, vocab, iters=200) -> dict:
    logits, work = torch.randn(BATCH, vocab), torch.empty(BATCH, vocab)
    mask = torch.randint(-(2**31), 2**31 - 1, new_bitmask(BATCH, vocab).shape, dtype=torch.int32)
    t0 = time.perf_counter_ns()
    fn(work.copy_(logits), mask)  # torch.compile'd kernels compile here; inductor's disk cache makes this vary
    first, reps = us(t0), []
    for _ in range(REPS):
        times = []
        for _ in range(iters):
            work.copy_(logits)
            t0 = time.perf_counter_ns()
            fn(work, mask)
            times.append(us(t0))
        reps.append(statistics.median(times))
    return {"first_call_us": first, "per_call_us": summary(reps)}


def table(headers: list[str], rows: list[list]) -> None:
    cells = [[c if isinstance(c, str) else f"{c:.0f}" if c >= 100 else f"{c:.1f}" for c in r] for r in rows]
    widths = [max(map(len, col)) for col in zip(headers, *cells)]
    for r in [headers, *cells]:  # text columns left-aligned, numbers right-aligned
        print("  ".join(x.rjust(w) if x[:1].isdigit() or x == "nan" else x.ljust(w) for x, w in zip(r, widths)).rstrip())


def cpu_model() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())


def main() -> None:
    torch.set_num_threads(THREADS)
    tok = load_tokenizer()
    vocab, path = len(tok), tok.encode(TEXT, add_special_tokens=False)
    meta = {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(), "threads": THREADS,
            "batch": BATCH, "reps": REPS,
            "python": platform.python_version(), "torch": torch.__version__,
            "versions": {p: version(p) for p in ("llguidance", "xgrammar", "outlines_core")},
            "vocab": vocab, "text": TEXT, "path_tokens": len(path)}
    results = {}
    for cls in (LLGuidance, XGrammar, OutlinesCore):
        t0 = time.perf_counter_ns()
        lib = cls(tok)
        res = results[lib.name] = {"tokenizer_setup_us": us(t0), "grammars": {}}
        for gname, schema in GRAMMARS.items():
            compiled, g = bench_compile(lib, schema, vocab)
            g["path"] = check_path(lib, compiled, path, vocab, tok.eos_token_id)
            if g["path"]["ok"]:
                g["batch1"] = bench_steps(lib, compiled, path, 1, vocab)
                g[f"batch{BATCH}"] = bench_steps(lib, compiled, path, BATCH, vocab)
                if lib.batched:
                    g[f"batch{BATCH}_serial"] = bench_steps(lib, compiled, path, BATCH, vocab, serial=True)
            res["grammars"][gname] = g
        res["apply"] = bench_apply(lib.apply, vocab)
        if hasattr(lib, "apply_torch_native"):  # for scale: xgrammar's pure-torch kernel vs its native CPU one
            res["apply_torch_native"] = bench_apply(lib.apply_torch_native, vocab)
        print(f"{lib.name} done", flush=True)

    def med(d: dict, key: str, sub: str) -> float:
        return d.get(key, {}).get(sub, {}).get(SHOW, float("nan"))

    print(f"\n{meta['cpu_model']}, {THREADS} threads, {len(path)}-token path; microseconds, {SHOW} of {REPS}")
    rows = []
    for name, res in results.items():
        for gname, g in res["grammars"].items():
            b, ser, one = f"batch{BATCH}", f"batch{BATCH}_serial", "batch1"
            rows.append([name, gname, g["compile_us"][SHOW], g["first_mask_us"][SHOW],
                         med(g, b, "step_us"), med(g, b, "step_p95_us"), med(g, b, "step_per_row_us"),
                         med(g, b, "fill_us"), med(g, b, "advance_us"), med(g, ser, "step_us"),
                         med(g, one, "step_us"), med(g, one, "step_p95_us"),
                         "ok" if g["path"]["ok"] else "REJECTED: " + g["path"]["why"]])
    table(["library", "grammar", "compile", "1st mask", f"b{BATCH} step", "p95", "/row", "fill", "advance",
           "serial", "b1 step", "b1 p95", "token path"], rows)
    print(f"\napplying the mask to ({BATCH}, {vocab}) fp32 logits; one-off tokenizer setup")
    rows = [[n, r["apply"]["per_call_us"][SHOW], r["apply"]["first_call_us"], r["tokenizer_setup_us"]]
            for n, r in results.items()]
    native = results["xgrammar"]["apply_torch_native"]
    rows.append(["xgrammar (torch_native)", native["per_call_us"][SHOW], native["first_call_us"], float("nan")])
    table(["library", "apply", "1st call", "tok setup"], rows)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"machine": meta, "results": results}, indent=2) + "\n")
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
