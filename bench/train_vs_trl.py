"""Benchmark: hone's RL loop against TRL's `GRPOTrainer` on the same GRPO work, in one process.

1. Work (both): the embedded SmolLM2-135M, LoRA r16 / alpha 32 / dropout 0 on every linear layer,
   the single-turn tool-call task (`hone.envs.toolcall`), 4 prompts x 8 completions = 32 per
   optimizer step, at most 48 completion tokens, temperature 1 (no top-k/top-p), reward 1 iff
   `hone.chat.parse_reply(text, tool_names)` returns tool calls. The step's prompts are hone's
   (`tasks_for_step`, seed 0) for both; TRL gets them in that order, unshuffled.
2. Same prompt tokens: TRL gets the text of `hone.chat.render_prompt(tokenizer, messages, TOOLS)`
   (hone's server renders exactly this), and the script asserts the tokenizer turns that text
   back into the same ids.
3. Same optimisation: loss CISPO (hone's default; TRL `loss_type="cispo"`), beta 0 (no reference
   model), advantages = reward - group mean (TRL `scale_rewards="none"`), one optimizer step per
   batch (TRL `num_iterations=1`), AdamW betas (0.9, 0.95), weight decay 0, grad-norm clip 1.0,
   constant learning rate, fp32 training weights. TRL's gradient checkpointing (its default) is
   turned off: with micro-batches of 8 it fits in memory, and it only costs time.
4. Time per step: hone's `time/step` (sample + train + checkpoint); TRL's time between consecutive
   `on_step_end` callbacks (generation + scoring + training + logging, no checkpoints). The first
   step of each (lazy set-up, first-call costs) is reported separately and left out of the mean.
5. Threads: OMP_NUM_THREADS = --threads (default: all cores) is set before torch loads, the main
   thread uses that many torch threads, and hone's engine worker gets the same number. hone runs
   first, then TRL (TRL's multi-threaded ops on the main thread would slow hone's engine worker
   if it ran after them; see hone/engine/engine.py). The machine is shared: the load average is
   recorded before and after each run.

Run: .venv/bin/python bench/train_vs_trl.py [--steps N] [--threads T] [--lr LR] [--skip-trl | --skip-hone]
Writes bench/results/train_vs_trl.json (needs `trl`: pip install 'hone[bench]').
"""

from __future__ import annotations

import argparse
import os
import sys

_THREADS = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--threads=")), os.cpu_count() or 1)
os.environ["OMP_NUM_THREADS"] = str(_THREADS)  # before torch loads: both systems run under the same setting
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path
from statistics import fmean
from typing import Any

import torch

from hone.chat import parse_reply, render_prompt
from hone.envs.toolcall import TOOLS, ToolCallEnv, make_tasks, prompt_messages
from hone.models import DEFAULT_MODEL, load_model
from hone.rl.loop import RunConfig, run_training, tasks_for_step

RESULTS = Path(__file__).parent / "results" / "train_vs_trl.json"
GROUP_SIZE = 8
GROUPS_PER_STEP = 4
MAX_TOKENS = 48
TEMPERATURE = 1.0
LORA_RANK = 16
LORA_ALPHA = 32
SEED = 0
TRL_MICRO_BATCH = 8
TOOL_NAMES = {t["function"]["name"] for t in TOOLS}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def summarise(step_times: list[float], rewards: list[float]) -> dict[str, Any]:
    steady = step_times[1:] if len(step_times) > 1 else step_times
    return {
        "s_per_step": round(fmean(steady), 2),
        "first_step_s": round(step_times[0], 2),
        "step_s": [round(t, 2) for t in step_times],
        "reward_per_step": [round(r, 4) for r in rewards],
    }


# --------------------------------------------------------------------------- hone
def run_hone(steps: int, lr: float, threads: int) -> dict[str, Any]:
    from hone.backends import LocalBackend

    env = ToolCallEnv(max_tokens=MAX_TOKENS)
    backend = LocalBackend(engine_options={"num_threads": threads})
    with tempfile.TemporaryDirectory(prefix="hone-bench-") as out:
        config = RunConfig(
            out_dir=out,
            base_model=DEFAULT_MODEL,
            steps=steps,
            group_size=GROUP_SIZE,
            groups_per_step=GROUPS_PER_STEP,
            learning_rate=lr,
            loss="cispo",
            lora_rank=LORA_RANK,  # hone's LoRA alpha is 2 x rank = 32, dropout 0, all linear layers
            temperature=TEMPERATURE,
            seed=SEED,
            show_progress=False,
            validate_every=0,  # TRL validates nothing: the same work on both sides
        )
        started = time.perf_counter()
        result = asyncio.run(run_training(env, config, backend=backend))
        wall = time.perf_counter() - started
    history = sorted(result.history, key=lambda r: r["step"])
    out = summarise([r["time/step"] for r in history], [r["reward/mean"] for r in history])
    out["wall_s_incl_setup"] = round(wall, 1)
    out["time_sample_s"] = [round(r["time/sample"], 2) for r in history]
    out["tokens_sampled_per_step"] = [int(r["tokens/sampled"]) for r in history]
    out["rollouts_failed"] = int(sum(r.get("rollouts/failed", 0) for r in history))
    return out


# --------------------------------------------------------------------------- TRL
def prompt_texts(tokenizer, steps: int) -> list[str]:
    """Each step's 4 prompts, hone's order, rendered exactly as hone's server renders them."""
    tasks = make_tasks()
    texts = []
    for step in range(steps):
        for task in tasks_for_step(tasks, step, GROUPS_PER_STEP, SEED):
            rendered = render_prompt(tokenizer, prompt_messages(task), TOOLS)
            assert rendered.forced_prefix == "" and rendered.tool_names == TOOL_NAMES
            text = tokenizer.decode(rendered.tokens, skip_special_tokens=False)
            # TRL tokenises a plain-text prompt with processing_class(text=...): it must give the same ids
            assert tokenizer(text)["input_ids"] == rendered.tokens, "TRL would see a different prompt"
            texts.append(text)
    return texts


def tool_call_reward(completions: list[str], **_: Any) -> list[float]:
    return [1.0 if parse_reply(text, TOOL_NAMES).tool_calls else 0.0 for text in completions]


def run_trl(steps: int, lr: float, bf16: bool) -> dict[str, Any]:
    import transformers
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    transformers.logging.set_verbosity_error()
    loaded = load_model(DEFAULT_MODEL)
    tokenizer = loaded.tokenizer
    prompts = prompt_texts(tokenizer, steps)
    dataset = Dataset.from_dict({"prompt": prompts})

    class Timer(transformers.TrainerCallback):
        def __init__(self):
            self.begin: list[float] = []
            self.end: list[float] = []
            self.logs: list[dict[str, float]] = []

        def on_step_begin(self, args, state, control, **kw):
            self.begin.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            self.end.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                self.logs.append(dict(logs))

    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="trl-bench-") as out:
        args = GRPOConfig(
            output_dir=out,
            use_cpu=True,
            bf16=bf16,
            fp16=False,
            max_steps=steps,
            # one optimizer step = one generation of 32 completions (4 prompts x 8), trained as 4 micro-batches
            # of 8 (all 32 at once needs ~18 GB; hone's trainer also splits, at 2048 tokens a micro-batch)
            per_device_train_batch_size=TRL_MICRO_BATCH,
            gradient_accumulation_steps=GROUP_SIZE * GROUPS_PER_STEP // TRL_MICRO_BATCH,
            steps_per_generation=GROUP_SIZE * GROUPS_PER_STEP // TRL_MICRO_BATCH,
            num_generations=GROUP_SIZE,
            num_iterations=1,
            max_completion_length=MAX_TOKENS,
            temperature=TEMPERATURE,
            top_p=1.0,
            top_k=0,
            learning_rate=lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            adam_beta1=0.9,
            adam_beta2=0.95,
            weight_decay=0.0,
            max_grad_norm=1.0,
            beta=0.0,
            loss_type="cispo",
            epsilon_high=4.0,  # CISPO's cap on the ratio itself = hone's cispo_ratio_max (TRL's default 0.2 would scale every gradient by 0.2)
            scale_rewards="none",
            shuffle_dataset=False,
            gradient_checkpointing=False,
            use_vllm=False,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=SEED,
            dataloader_num_workers=0,
        )
        peft_config = LoraConfig(
            r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear", bias="none", task_type="CAUSAL_LM"
        )
        trainer = GRPOTrainer(
            model=loaded.model,
            reward_funcs=tool_call_reward,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[timer],
        )
        started = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - started
    assert len(timer.end) == steps and len(timer.logs) == steps, (len(timer.end), len(timer.logs))
    # step i (i >= 1): from the end of step i-1 to the end of step i, so batch fetching and logging count
    step_times = [timer.end[0] - timer.begin[0]] + [b - a for a, b in zip(timer.end, timer.end[1:])]
    out = summarise(step_times, [log["reward"] for log in timer.logs])
    out["wall_s_train_call"] = round(wall, 1)
    out["tokens_sampled_per_step"] = [round(log["completions/mean_length"] * GROUP_SIZE * GROUPS_PER_STEP) for log in timer.logs]
    out["trl_version"] = trl.__version__
    return out


# --------------------------------------------------------------------------- main
NOTES = [
    "sampling differs by design: hone samples with its own engine (bf16 matmuls, fp32 LM head, KV cache, "
    "batched); TRL with transformers' generate in fp32 (TRL bf16 autocast off, as hone's trainer is fp32)",
    "hone's time/step includes writing a checkpoint (LoRA weights + optimizer state) every step; TRL saves nothing",
    "TRL trains the 32 completions as 4 micro-batches of 8 (one batch of 32 was OOM-killed at ~18 GB RSS); "
    "hone's trainer splits at 2048 tokens and runs a group's shared prompt once (its design)",
    "importance ratio: TRL's is exactly 1 (on-policy, logprobs of the trained model); hone's is trainer fp32 / "
    "sampler bf16 logprobs, capped at 4 (TRL epsilon_high=4.0 to match)",
    "completions are sampled from different RNG streams (and bf16 vs fp32), so per-step rewards differ by chance; "
    "a few steps say little about learning speed: the reward lists show both learn, not which learns better",
    "the first step is excluded from s_per_step (lazy trainer set-up in hone; first-call costs in TRL)",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=_THREADS, help="pass as --threads=N (read before torch loads)")
    parser.add_argument("--trl-bf16", action="store_true", help="TRL bf16 autocast (default: fp32, as hone's trainer)")
    parser.add_argument("--skip-hone", action="store_true")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    assert args.threads == _THREADS, "give the thread count as --threads=N"
    torch.set_num_threads(args.threads)

    loads: dict[str, list[float]] = {"before": load()}
    hone = trl = None
    if not args.skip_hone:
        hone = run_hone(args.steps, args.lr, args.threads)
        loads["after_hone"] = load()
    if not args.skip_trl:
        trl = run_trl(args.steps, args.lr, args.trl_bf16)
        loads["after_trl"] = load()

    result: dict[str, Any] = {}
    if hone:
        result["hone_s_per_step"] = hone["s_per_step"]
        result["hone_reward_per_step"] = hone["reward_per_step"]
    if trl:
        result["trl_s_per_step"] = trl["s_per_step"]
        result["trl_reward_per_step"] = trl["reward_per_step"]
    if hone and trl:
        result["speedup"] = round(trl["s_per_step"] / hone["s_per_step"], 2)
    result.update(
        {
            "hone": hone,
            "trl": trl,
            "settings": {
                "model": DEFAULT_MODEL,
                "steps": args.steps,
                "s_per_step": "mean over steps 2..N (step 1 reported as first_step_s)",
                "prompts_per_step": GROUPS_PER_STEP,
                "completions_per_prompt": GROUP_SIZE,
                "max_completion_tokens": MAX_TOKENS,
                "temperature": TEMPERATURE,
                "learning_rate": args.lr,
                "lr_schedule": "constant",
                "adamw_betas": [0.9, 0.95],
                "grad_clip_norm": 1.0,
                "lora": {"rank": LORA_RANK, "alpha": LORA_ALPHA, "dropout": 0.0, "targets": "all-linear"},
                "loss": "cispo, beta 0, advantages = reward - group mean",
                "reward": "1 iff hone.chat.parse_reply(text, tool names) returns tool calls",
                "omp_num_threads": args.threads,
                "torch_threads": args.threads,
                "trl_bf16": args.trl_bf16,
                "trl_gradient_checkpointing": False,
                "order": "hone first, then TRL, same process",
            },
            "machine": {
                "cpu": cpu_model(),
                "cores": os.cpu_count(),
                "load_average": loads,
                "python": platform.python_version(),
                "torch": torch.__version__,
            },
        }
    )
    result["notes"] = NOTES + [
        f"shared machine: load average {loads} (1/5/15 min) on {os.cpu_count()} cores while this ran, "
        "another user's CPU-heavy jobs included; both sides are slowed, not necessarily equally"
    ]
    result["command"] = "OMP_NUM_THREADS is set by the script; " + " ".join([".venv/bin/python", *sys.argv])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{'':6}{'s/step':>8}{'step 1 s':>10}  reward per step")
    for name, r in (("hone", hone), ("TRL", trl)):
        if r:
            print(f"{name:6}{r['s_per_step']:>8.2f}{r['first_step_s']:>10.2f}  {' '.join(f'{x:.2f}' for x in r['reward_per_step'])}")
    if "speedup" in result:
        print(f"speedup (TRL s/step / hone s/step): {result['speedup']}x")
    print(f"load average: {loads}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
