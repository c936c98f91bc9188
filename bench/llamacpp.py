"""Benchmark: hone's engine against llama.cpp, the peer a user would pick to run a small model on CPU.

Both serve SmolLM2-135M-Instruct (embedded) in the same run on the same machine, 2 threads each:
hone's `Engine` in its default dtype (`preferred_dtype`: bf16 where the CPU multiplies in it, as
with AVX512-BF16; fp32 on an AVX2-only CPU) with speculation off (the default), llama.cpp on the
same weights written as an f16 GGUF by `hone.gguf_export`. The CPU's vector extensions are recorded
with the figures: "AMD EPYC" alone names machines of either kind.

1. Throughput at batch 1, 8, 32: B rows, each a distinct 64-token prompt (bench/engine.py's), 128
   new tokens each. hone: B concurrent `sample` calls, no EOS ids so every row makes exactly 128
   tokens, temperature 1; tokens/s = B * 128 / wall time from submitting the rows to the last
   token, prefill included. llama.cpp: `llama-batched-bench -npp 64 -ntg 128 -npl B -t 2`, random
   prompt tokens, the same count: B * 128 / (its prefill time + its decode time). Its decode-only
   and prefill tokens/s are reported beside. llama.cpp samples nothing there (it feeds random
   tokens), so its figures leave out the sampling that hone's include. Each figure is the best of
   --repeats; hone and llama.cpp alternate per batch size so slow phases of a shared machine hit both.
Memory (llama-server beside `hone serve`) is measured by bench/serve_memory.py --peer, with the
binaries and GGUF this script builds.

llama.cpp is built here, once, from the source vendored in llama-cpp-python 0.3.36's sdist (only
the two binaries, native CPU flags) and cached with the GGUF under $HONE_HOME/llamacpp/0.3.36/;
the first run downloads and builds it: 11.5 min on a 2-core AMD EPYC (AVX2), download included.
Delete that folder to rebuild (the binaries use this CPU's instructions: rebuild on another machine).

Run: .venv/bin/python bench/llamacpp.py [--quick] [--repeats N] [--dtype auto|bf16|fp32|serve]
--dtype serve takes the dtypes `hone serve` picks when it only serves (engine.serving_options: on an
AVX2 CPU, bf16 layers and a bf16 LM head on hone's kernel).
Writes bench/results/llamacpp.json, or llamacpp_DTYPE.json for another --dtype, with _avx512bf16 added
on a CPU with native bf16 (figures are only comparable within one machine and run).
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before torch loads (bench/engine.py, point 5); not when bench/serve_memory.py imports the build helpers
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from common import best_tokens_per_s, machine, native_bf16_suffix

import hone.gguf_export
from hone.engine import Engine, serving_options
from hone.models import load_model
from hone.models.loader import hone_home
from hone.types import SamplingParams

VERSION = "0.3.36"  # llama-cpp-python, whose sdist vendors the llama.cpp source built here
BINARIES = ("llama-batched-bench", "llama-server")
THREADS = 2
PROMPT_TOKENS, NEW_TOKENS = 64, 128
BATCHES = (1, 8, 32)
RESULTS = Path(__file__).parent / "results"  # llamacpp.json; llamacpp_bf16.json etc. with --dtype
CMAKE_FLAGS = (
    "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",  # self-contained binaries, so they can be copied out of the build folder
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF", "-DGGML_CCACHE=OFF",
    "-DLLAMA_OPENSSL=OFF",  # the server is only reached over plain http on localhost
    "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF",  # no web UI: it would be downloaded from Hugging Face or built with npm
)  # fmt: skip


class BuildError(Exception):
    """One sentence on why llama.cpp could not be built."""


# --------------------------------------------------------------------------- llama.cpp, built once
def cache_dir() -> Path:
    return hone_home() / "llamacpp" / VERSION


def build_info() -> dict:
    """The llama.cpp commit and build time recorded by the build, building first if needed."""
    ensure_built()
    return json.loads((cache_dir() / "build.json").read_text())


def batched_bench_binary() -> Path:
    ensure_built()
    return cache_dir() / "llama-batched-bench"


def server_binary() -> Path:
    ensure_built()
    return cache_dir() / "llama-server"


def ensure_built() -> None:
    folder = cache_dir()
    if all((folder / name).exists() for name in BINARIES) and (folder / "build.json").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "build.log"
    print(f"building llama.cpp ({', '.join(BINARIES)}) from llama-cpp-python {VERSION}'s sdist into {folder}; first run only, ~12 min on 2 cores", flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hone-llamacpp-") as work, log.open("w") as out:
        work = Path(work)
        step("downloading the sdist", [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", f"llama-cpp-python=={VERSION}", "-d", str(work)], out)
        sdists = list(work.glob("llama_cpp_python-*.tar.gz"))
        if not sdists:
            raise BuildError(f"pip downloaded no llama_cpp_python sdist into {work}")
        print("  extracting it", flush=True)
        with tarfile.open(sdists[0]) as tar:
            tar.extractall(work, filter="data")
        source = work / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"
        if not (source / "CMakeLists.txt").exists():
            raise BuildError(f"the sdist has no vendor/llama.cpp source (looked in {source})")
        commit = vendored_commit(source)
        build = work / "build"
        step("configuring with cmake", ["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS], out)
        step(f"compiling (2 jobs, ninja; progress in {log})", ["cmake", "--build", str(build), "--target", *BINARIES, "-j", "2"], out)
        for name in BINARIES:
            shutil.copy2(build / "bin" / name, folder / name)
    build_s = round(time.perf_counter() - start)
    (folder / "build.json").write_text(json.dumps({"llama_cpp_python": VERSION, "llama_cpp_commit": commit, "build_s": build_s, "cmake_flags": list(CMAKE_FLAGS)}, indent=2) + "\n")
    print(f"built llama.cpp {commit[:10]} in {build_s // 60} min {build_s % 60} s", flush=True)


def vendored_commit(source: Path) -> str:
    """The llama.cpp commit the sdist vendors: the HEAD of the git submodule folder it keeps."""
    try:
        gitdir = (source / ".git").read_text().split(":", 1)[1].strip()  # "gitdir: ../../.git/modules/vendor/llama.cpp"
        return (source / gitdir / "HEAD").read_text().strip()
    except (OSError, IndexError):
        return "unknown"


def step(what: str, command: list[str], log) -> None:
    """Run one build step with its output in the log; raise BuildError naming the step if it fails."""
    print(f"  {what}", flush=True)
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    try:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    except FileNotFoundError as exc:
        raise BuildError(f"{what} failed: {exc.filename} is not installed") from None
    if code != 0:
        raise BuildError(f"{what} failed (exit code {code}); its output is in {log.name}")


def f16_gguf(loaded=None) -> Path:
    """SmolLM2-135M-Instruct as an f16 GGUF written by hone's exporter, cached; rewritten when the exporter changes."""
    path = cache_dir() / "smollm2-135m-instruct.f16.gguf"
    if path.exists() and path.stat().st_mtime >= Path(hone.gguf_export.__file__).stat().st_mtime:
        return path
    loaded = loaded or load_model("smollm2-135m")
    print(f"exporting the model as an f16 GGUF to {path}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")  # renamed when complete: an interrupted export is never mistaken for a cached one
    hone.gguf_export.write_gguf(loaded.model, loaded.tokenizer, partial, quant="f16", name="SmolLM2-135M-Instruct")
    partial.replace(path)
    return path


def llama_env() -> dict[str, str]:
    """The environment without OMP_NUM_THREADS=1, which is torch's setting here, not llama.cpp's (it gets -t)."""
    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}


# --------------------------------------------------------------------------- throughput
def llama_batched(gguf: Path, batch: int, new_tokens: int) -> dict[str, float]:
    """One llama-batched-bench run at `batch` rows: tokens/s with prefill (new tokens only), decode-only, prefill."""
    context = batch * (PROMPT_TOKENS + new_tokens)  # each row's own prompt and new tokens (no shared prompt)
    command = [str(batched_bench_binary()), "-m", str(gguf), "-c", str(context), "-npp", str(PROMPT_TOKENS), "-ntg", str(new_tokens),
               "-npl", str(batch), "-t", str(THREADS), "--output-format", "jsonl"]
    done = subprocess.run(command, capture_output=True, text=True, env=llama_env())
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or len(rows) != 1:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"llama-batched-bench at batch {batch} gave {len(rows)} result rows (exit code {done.returncode}): {' | '.join(tail)}")
    row = rows[0]
    assert (row["pl"], row["n_threads"]) == (batch, THREADS), row
    # its own "speed" counts prompt tokens too; hone's figure counts only sampled tokens
    return {"with_prefill": batch * new_tokens / row["t"], "decode_only": row["speed_tg"], "prefill": row["speed_pp"]}


def throughput(engine: Engine, gguf: Path, prompts: list[list[int]], batches: tuple[int, ...], new_tokens: int, repeats: int) -> dict:
    """Every repeat, per batch size, hone then llama.cpp; the best of each."""
    params = SamplingParams(max_tokens=new_tokens, temperature=1.0)
    runs: dict[str, dict[int, list]] = {"hone": {b: [] for b in batches}, "llama_cpp": {b: [] for b in batches}}
    for repeat in range(repeats):
        for b in batches:
            runs["hone"][b].append(best_tokens_per_s(engine, prompts[:b], params, repeats=1))
            runs["llama_cpp"][b].append(llama_batched(gguf, b, new_tokens))
            print(f"  repeat {repeat + 1}/{repeats}, batch {b}: hone {runs['hone'][b][-1]:.1f} tok/s, "
                  f"llama.cpp {runs['llama_cpp'][b][-1]['with_prefill']:.1f} tok/s", flush=True)
    best_llama = {b: max(r, key=lambda x: x["with_prefill"]) for b, r in runs["llama_cpp"].items()}
    hone = {b: max(r) for b, r in runs["hone"].items()}
    llama = {b: round(best_llama[b]["with_prefill"], 1) for b in batches}
    return {
        "tokens_per_s": {"hone": {str(b): hone[b] for b in batches}, "llama_cpp": {str(b): llama[b] for b in batches}},
        "hone_over_llama_cpp": {str(b): round(hone[b] / llama[b], 2) for b in batches},
        "llama_cpp_decode_only_tokens_per_s": {str(b): round(best_llama[b]["decode_only"], 1) for b in batches},
        "llama_cpp_prefill_tokens_per_s": {str(b): round(best_llama[b]["prefill"], 1) for b in batches},
        "every_run_tokens_per_s": {"hone": {str(b): r for b, r in runs["hone"].items()},
                                   "llama_cpp": {str(b): [round(x["with_prefill"], 1) for x in r] for b, r in runs["llama_cpp"].items()}},
    }


# --------------------------------------------------------------------------- main
def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 and 8, 32 new tokens: checks that it all works")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", choices=("auto", "bf16", "fp32", "serve"), default="auto",
                        help="hone's compute dtype (auto: preferred_dtype; serve: what `hone serve` picks, engine.serving_options)")
    args = parser.parse_args()
    batches, new_tokens = ((1, 8), 32) if args.quick else (BATCHES, NEW_TOKENS)
    load_before = load_average()

    try:
        info = build_info()
    except BuildError as exc:
        print(f"Could not build llama.cpp: {exc}.")
        sys.exit(1)
    print(f"llama.cpp {info['llama_cpp_commit'][:10]} (vendored by llama-cpp-python {VERSION}), binaries in {cache_dir()}", flush=True)
    loaded = load_model("smollm2-135m")
    gguf = f16_gguf(loaded)
    from engine import distinct_prompts  # bench/engine.py's prompts; imported here as it sets OMP_NUM_THREADS on import

    prompts = distinct_prompts(loaded.tokenizer, max(batches))
    print(f"throughput: {PROMPT_TOKENS}-token prompts, {new_tokens} new tokens per row, batches {', '.join(map(str, batches))}, best of {args.repeats}", flush=True)
    options = serving_options() if args.dtype == "serve" else {"dtype": {"auto": None, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]}
    with Engine(loaded.model, eos_token_ids=[], decode=loaded.tokenizer.decode, num_threads=THREADS, speculation=None, **options) as engine:
        engine.sample_sync(prompts[0], 4, SamplingParams(max_tokens=8))  # warm-up: first calls pay one-off setup
        figures = throughput(engine, gguf, prompts, batches, new_tokens, args.repeats)
        dtype, attention = str(engine.dtype).replace("torch.", ""), engine.attention_impl
        head_dtype = str(engine.lm_head_dtype).replace("torch.", "")

    result = {
        **figures,
        "parameters": {"model": "SmolLM2-135M-Instruct (embedded)", "llama_cpp_weights": "f16 GGUF written by hone.gguf_export",
                       "hone_dtype": dtype, "hone_lm_head_dtype": head_dtype, "hone_attention": attention, "hone_speculation": False, "threads": THREADS,
                       "prompt_tokens": PROMPT_TOKENS, "new_tokens": new_tokens, "batches": list(batches), "repeats": args.repeats,
                       "quick": args.quick},
        "workload": f"B rows, distinct {PROMPT_TOKENS}-token prompts, {new_tokens} new tokens each; tokens/s = B x {new_tokens} / wall time, "
                    "prefill included; hone samples at temperature 1, llama-batched-bench feeds random tokens (no sampling)",
        "versions": {"llama_cpp_python": VERSION, "llama_cpp_commit": info["llama_cpp_commit"], "torch": torch.__version__},
        "llama_cpp_build_s": info["build_s"],
        "machine": {**machine(), "threads": THREADS, "load_average_before": load_before, "load_average_after": load_average()},
    }
    path = RESULTS / (("llamacpp" if args.dtype == "auto" else f"llamacpp_{args.dtype}") + native_bf16_suffix() + ".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")

    tps, ratio = result["tokens_per_s"], result["hone_over_llama_cpp"]
    print(f"\n{'batch':>5}  {'hone tok/s':>10}  {'llama.cpp tok/s':>15}  {'hone/llama.cpp':>14}  {'llama.cpp decode-only':>21}")
    for b in map(str, batches):
        print(f"{b:>5}  {tps['hone'][b]:>10.1f}  {tps['llama_cpp'][b]:>15.1f}  {ratio[b]:>13.2f}x  {result['llama_cpp_decode_only_tokens_per_s'][b]:>21.1f}")
    print(f"(tokens/s with prefill, best of {args.repeats}; hone {dtype} (LM head {head_dtype}), llama.cpp f16, {THREADS} threads each)")
    print(f"load average before/after: {load_before} / {result['machine']['load_average_after']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
