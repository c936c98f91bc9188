"""`hone` on the command line: chat, serve, train, export, demo.

A HoneError is a user's mistake or an environment's limit: it is printed as one sentence and the
command exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console

from hone.errors import HoneError
from hone.types import DEFAULT_BASE_MODEL as DEFAULT_MODEL  # not hone.models: that imports torch, and --help must be fast

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train small language models into agents with RL.")
console = Console()
err_console = Console(stderr=True)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        console.print(f"hone {version('hone-rl')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print hone's version and exit."),
    verbose: bool = typer.Option(False, "--verbose", help="Show third-party loading bars and deprecation warnings."),
) -> None:
    """Train small language models into agents with RL."""
    if not verbose:  # before transformers is imported (commands import it lazily): read at its import
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def friendly_errors(command: Callable) -> Callable:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except HoneError as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2)
        except KeyboardInterrupt:
            err_console.print("interrupted; a training run resumes from its last checkpoint with the same command")
            raise typer.Exit(130)

    return wrapper


@app.command()
@friendly_errors
def chat(
    prompt: str = typer.Argument(..., help="What to say to the model."),
    model: str = typer.Option(DEFAULT_MODEL, help="Model alias, folder, .gguf file, hub id, or a run directory or checkpoint of hone's."),
    max_tokens: int = typer.Option(128, help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, help="0 = greedy."),
    system: Optional[str] = typer.Option(None, help="System prompt."),
) -> None:
    """Print one reply from a model (the embedded one by default)."""
    from hone.models.names import check_model_name

    check_model_name(model)  # before torch loads: an unknown name is answered in seconds
    from hone.backends import LocalBackend
    from hone.export import servable

    backend = LocalBackend()
    backend.add_model(model, servable(model))
    client = backend.openai_client_sync()
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=temperature)
    console.print(reply.choices[0].message.content, highlight=False, markup=False, soft_wrap=True)  # piped output keeps its lines
    backend.close()


@app.command()
@friendly_errors
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(8000, help="Port to bind."),
    model: list[str] = typer.Option([DEFAULT_MODEL], help="Models to serve (repeatable); with --home, the base models tenants may train."),
    home: Optional[Path] = typer.Option(None, help="Run as a multi-tenant service with API keys, state in this directory (SQLite, checkpoints)."),
    max_models: int = typer.Option(8, help="With --home: models per tenant."),
    max_concurrent: int = typer.Option(32, help="With --home: requests in flight per tenant."),
    max_body_mb: float = typer.Option(64.0, help="With --home: largest request body, in MiB."),
    checkpoint_engines: int = typer.Option(2, help="With --home: NAME@STEP samplers kept loaded."),
    autosave: bool = typer.Option(True, help="With --home: persist each optimizer step, so a killed server loses no completed step."),
    share_base: bool = typer.Option(True, help="With --home: LoRA models of one base share it (95 MB per extra model, not 1.8 GB); merged weights sample ~25% faster."),
    drain_s: float = typer.Option(30.0, help="On SIGTERM or Ctrl-C: stop accepting, give requests in flight this long to finish, cancel the rest, exit."),
    request_timeout_s: float = typer.Option(600.0, help="Cancel a chat request still sampling after this long and answer 504 (0 = no limit)."),
    dtype: str = typer.Option("auto", help="Weights' compute dtype: auto (bf16 where this CPU has bf16 instructions, or serving only without --home where hone's bf16 kernel runs (x86 with AVX2), then with the LM head's weights in bf16 too; else fp32), bf16 (half the memory) or fp32. Logits and logprobs are fp32 either way."),
) -> None:
    """Serve the OpenAI-compatible API over HTTP (and, with --home, the training API for many tenants)."""
    from hone.models.names import check_model_name

    if drain_s < 0 or request_timeout_s < 0:
        raise HoneError("--drain-s and --request-timeout-s must be 0 or more seconds")
    for name in model:
        check_model_name(name)
    if dtype not in _DTYPES:
        raise HoneError(f"--dtype must be one of {', '.join(_DTYPES)}, not '{dtype}'")
    listener = _listen(host, port)  # before torch and any model load: a port in use is said at once
    from hone.backends import LocalBackend
    from hone.server import create_app
    from hone.server.app import AnswerCutRequests

    timeout = request_timeout_s or None  # 0 = no limit
    # uvicorn stops accepting on SIGTERM/SIGINT, waits up to drain_s for requests in flight, then
    # cancels them (a cancelled chat request cancels its engine rows; AnswerCutRequests answers it
    # 503) and re-raises the signal; the engine's threads are daemons, so nothing holds the process
    run_options: dict[str, Any] = {"log_level": "warning", "timeout_graceful_shutdown": drain_s}
    engine_options = {} if dtype == "auto" else {"dtype": _torch_dtype(dtype)}

    if home is not None:
        from hone.service import Service, ServiceConfig, create_service_app

        os.umask(0o077)  # every file the service writes under --home (checkpoints, states) is the owner's alone

        config = ServiceConfig(
            home=home,
            base_models=tuple(model),
            max_models_per_tenant=max_models,
            max_concurrent_requests=max_concurrent,
            max_body_bytes=int(max_body_mb * 2**20),
            checkpoint_engines=checkpoint_engines,
            autosave=autosave,
            share_base=share_base,
        )
        service = Service(config, LocalBackend(engine_options, share_base=share_base, checkpoint_models=checkpoint_engines))
        for line in asyncio.run(service.restore()):
            console.print(f"restored {line}", highlight=False)
        console.print(f"hone service at http://{host}:{port}/v1 (home {home}; base models {', '.join(model)})", highlight=False)
        service_app = create_service_app(service, request_timeout_s=timeout)
        try:
            _run_uvicorn(AnswerCutRequests(service_app, drain_s), listener, host, port, run_options)
        finally:
            service.close()
        return
    from hone.export import servable

    if dtype == "auto":  # nothing here trains, so nothing needs fp32's trainer-exact logprobs (engine.serving_options)
        from hone.engine import serving_options

        engine_options = serving_options()
    backend = LocalBackend(engine_options, serve_only=True)  # no training routes here: one packed copy of the weights
    for name in model:
        backend.add_model(name, servable(name))  # a run directory or checkpoint: its weights, exported once
    console.print(f"hone serving {', '.join(model)} at http://{host}:{port}/v1")
    try:
        _run_uvicorn(AnswerCutRequests(create_app(backend, request_timeout_s=timeout), drain_s), listener, host, port, run_options)
    finally:
        backend.close()


_DTYPES = ("auto", "bf16", "fp32")


def _torch_dtype(name: str) -> Any:
    import torch

    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound and listening; one sentence if the address cannot be had."""
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise HoneError(f"cannot listen on {host}:{port} ({reason}); is another server using it? pick another with --port")


def _run_uvicorn(app: Any, listener: socket.socket, host: str, port: int, options: dict[str, Any]) -> None:
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options)).run(sockets=[listener])


keys_app = typer.Typer(no_args_is_help=True, help="API keys of a `hone serve --home` service.")
app.add_typer(keys_app, name="keys")
HOME_HELP = "The service's directory (as given to `hone serve --home`); default $HONE_HOME/serve."


def _service_home(home: Optional[Path]) -> Path:
    from hone.models import hone_home

    return home if home is not None else hone_home() / "serve"


@keys_app.command("create")
@friendly_errors
def keys_create(
    tenant: str = typer.Option(..., help="Tenant name; created if new."),
    home: Optional[Path] = typer.Option(None, help=HOME_HELP),
) -> None:
    """Create an API key for a tenant and print it (once: only its hash is stored)."""
    from hone.service.store import Store

    store = Store(_service_home(home))
    key_id, key = store.create_key(tenant)
    store.close()
    err_console.print(f"key {key_id} for tenant '{tenant}' (shown once; `hone keys revoke {key_id}` to revoke):")
    print(key)


@keys_app.command("list")
@friendly_errors
def keys_list(home: Optional[Path] = typer.Option(None, help=HOME_HELP)) -> None:
    """List keys: id, tenant, prefix, and whether revoked."""
    from hone.service.store import Store

    store = Store(_service_home(home))
    for key in store.list_keys():
        state = "revoked" if key["revoked"] else "active"
        console.print(f"{key['id']:>4}  {key['tenant']:<24} {key['prefix']}…  {state}", highlight=False)
    store.close()


@keys_app.command("revoke")
@friendly_errors
def keys_revoke(
    key_id: int = typer.Argument(..., help="The key's id (from `hone keys list`)."),
    home: Optional[Path] = typer.Option(None, help=HOME_HELP),
) -> None:
    """Revoke a key; requests with it get 401 from then on."""
    from hone.service.store import Store

    store = Store(_service_home(home))
    revoked = store.revoke_key(key_id)
    store.close()
    if not revoked:
        raise HoneError(f"there is no active key with id {key_id}; `hone keys list` shows them")
    console.print(f"revoked key {key_id}")


@app.command()
@friendly_errors
def train(
    env: Optional[str] = typer.Argument(None, help="Built-in environment (toolcall, inbox) or a Python file defining make_env()."),
    out: Path = typer.Option(Path("runs/train"), help="Run directory: checkpoints, metrics.jsonl. Re-run to resume."),
    steps: int = typer.Option(20, help="Training steps."),
    group_size: int = typer.Option(8, help="Attempts per task."),
    groups_per_step: int = typer.Option(4, help="Tasks per step."),
    learning_rate: float = typer.Option(5e-5, "--learning-rate", "--lr", help="AdamW learning rate."),
    loss: str = typer.Option("cispo", help="cispo, ppo, importance_sampling or cross_entropy."),
    lora_rank: int = typer.Option(16, help="LoRA rank; 0 = full fine-tuning."),
    model: str = typer.Option(DEFAULT_MODEL, help="Base model."),
    seed: int = typer.Option(0, help="Seed for data order and sampling."),
    concurrency: int = typer.Option(32, help="Rollouts in flight at once."),
    max_exceptions: float = typer.Option(0.25, help="Failed rollouts tolerated per step: a count, or a fraction if < 1."),
    temperature: float = typer.Option(1.0, help="Sampling temperature for rollouts."),
    log: list[str] = typer.Option([], help="Also log to wandb or tensorboard (repeatable)."),
    backend: str = typer.Option("local", help="local, or the URL of a `hone serve` (API key from HONE_API_KEY)."),
    validate_every: Optional[int] = typer.Option(
        None, help="Validate greedy on the environment's validation split every K steps (default: automatic, at most 15% of run time; 0: never)."
    ),
    stop_on: str = typer.Option("", help="Stop the run when one of these warnings starts, comma-separated: collapse, hacking, truncation, mismatch, drift, gaming (with --gate)."),
    from_traffic: Optional[str] = typer.Option(None, help="Instead of an environment: train this model of the --backend server on the traffic it logged and the feedback it got, --steps steps."),
    max_staleness: int = typer.Option(4, help="With --from-traffic: drop replies served more than this many steps from the model's current one."),
    malformed_reward: float = typer.Option(-1.0, help="With --from-traffic: the reward of a rejected tool call or an empty reply, whatever its feedback."),
    gate: Optional[str] = typer.Option(
        None, help="With --from-traffic: after each step, validate on this environment's validation split and promote the new weights only if no worse than what the model serves (else reset them)."
    ),
    tolerance: float = typer.Option(0.0, help="With --gate: how far below what is served a candidate may validate and still be promoted."),
    judge_model: Optional[str] = typer.Option(
        None, help="With --from-traffic: have this judge model rate the replies that got no feedback, each task's against each other (key from HONE_JUDGE_API_KEY)."
    ),
    judge_url: str = typer.Option("http://127.0.0.1:8000/v1", help="With --judge-model: the judge's OpenAI-compatible base URL."),
) -> None:
    """Train a model on an environment with GRPO; re-running the same command resumes. With
    --from-traffic MODEL, train a served model on its own logged traffic and feedback instead."""
    from hone.rl.loop import RunConfig, run_training

    if from_traffic is not None:
        if env is not None:
            raise HoneError("give an environment or --from-traffic MODEL, not both")
        config = _traffic_config(max_staleness, malformed_reward, learning_rate, loss)
        stops = tuple(name.strip() for name in stop_on.split(",") if name.strip())
        score = None
        if judge_model is not None:
            from hone.rewards import JudgeConfig
            from hone.traffic.train import judge_score

            score = judge_score(JudgeConfig(base_url=judge_url, model=judge_model))
        _train_from_traffic(from_traffic, backend, steps, config, gate, tolerance, stops, score)
        return
    if gate is not None:
        raise HoneError("--gate validates a model trained --from-traffic; an environment run keeps its best checkpoint by validation already")
    if env is None:
        raise HoneError("name an environment to train on (toolcall, inbox, or a Python file defining make_env()), or pass --from-traffic MODEL")
    environment = load_env(env)
    config = RunConfig(
        out_dir=str(out),
        base_model=model,
        steps=steps,
        group_size=group_size,
        groups_per_step=groups_per_step,
        learning_rate=learning_rate,
        loss=loss,
        lora_rank=lora_rank,
        seed=seed,
        concurrency=concurrency,
        max_exceptions=int(max_exceptions) if max_exceptions >= 1 else max_exceptions,
        temperature=temperature,
        log_sinks=tuple(log),
        validate_every=validate_every,
        stop_on=tuple(name.strip() for name in stop_on.split(",") if name.strip()),
    )
    result = asyncio.run(run_training(environment, config, backend=make_backend(backend)))
    if result.resumed_from:
        console.print(f"resumed from step {result.resumed_from}")
    captured = [row for row in result.history if "turns/bridged" in row]
    if captured:
        bridged, broken = (sum(row[key] for row in captured) for key in ("turns/bridged", "turns/broken"))
        console.print(f"captured turns: {bridged:.0f} continued their conversation verbatim, {broken:.0f} broke (each trained as a sequence of its own)")
    if result.stopped_by:
        console.print(f"stopped early at step {result.history[-1]['step']}: the '{result.stopped_by}' warning is in --stop-on")
    else:
        console.print(f"done: {steps} steps in {out}")
    validated = [(row["validation/success"], -row["step"]) for row in result.history if row.get("validation/success") is not None]
    if validated and -max(validated)[1] == 0 and len(validated) > 1:
        console.print(f"validation was best before training (step 0, {max(validated)[0]:.1%}): no checkpoint beats the base model yet")
    elif result.best_checkpoint is not None:
        console.print(f"best checkpoint: {result.best_checkpoint} (export it with `hone export {out} --best`)")
    console.print(f"report: {out / 'report.html'}")


def _traffic_config(max_staleness: int, malformed_reward: float, learning_rate: float, loss: str) -> Any:
    from hone.rl.step import TrainConfig
    from hone.traffic.groups import TrafficDataConfig
    from hone.traffic.train import TrafficTrainConfig

    return TrafficTrainConfig(TrafficDataConfig(max_staleness=max_staleness, malformed_reward=malformed_reward), TrainConfig(learning_rate=learning_rate, loss=loss))


def _train_from_traffic(
    name: str, backend_url: str, steps: int, config: Any, gate_env: str | None, tolerance: float, stop_on: tuple[str, ...], score: Any
) -> None:
    """--steps steps on the traffic; with --gate, each step is a round that the gate and the health monitor read."""
    from hone.monitor.health import stop_codes

    if backend_url == "local":
        raise HoneError("--from-traffic trains a model of a running `hone serve --home`: pass --backend URL (and HONE_API_KEY)")
    try:
        stop_codes(stop_on)  # an unknown name fails before any step
    except ValueError as exc:
        raise HoneError(str(exc)) from None
    remote = make_backend(backend_url)
    try:
        if gate_env is not None:
            _gated_rounds(remote, name, steps, config, load_env(gate_env), tolerance, stop_on, score)
            return
        asyncio.run(_plain_steps(remote, name, steps, config, score))  # one event loop: a judge's client outlives a step
    finally:
        remote.close()


async def _plain_steps(remote: Any, name: str, steps: int, config: Any, score: Any) -> None:
    from hone.traffic.train import train_from_traffic

    for _ in range(steps):
        metrics = await train_from_traffic(remote, name, config, score)
        used = {k.removeprefix("traffic/"): int(v) for k, v in metrics.items() if k.startswith("traffic/")}
        if metrics.get("train/skipped"):
            console.print(f"no step: nothing to learn from ({used})")
            return
        console.print(f"step {remote.model_info(name).step}: {used['scored']} scored replies in {used['groups']} groups; {used['stale_dropped']} stale, "
                      f"{used['malformed_penalised']} malformed (penalised), {used['singletons_dropped']} from tasks seen once, {used['unscored']} unscored"
                      + (f", {used['judged']} judged ({used['judge_failed']} groups failed)" if score is not None else ""))


def _gated_rounds(remote: Any, name: str, rounds: int, config: Any, env: Any, tolerance: float, stop_on: tuple[str, ...], score: Any) -> None:
    from hone.rl.evaluate import evaluate
    from hone.rl.validation import validation_tasks_of
    from hone.traffic import UNLOGGED_HEADERS
    from hone.traffic.rounds import TrafficLearner

    tasks = validation_tasks_of(env, None)
    if tasks is None:
        raise HoneError(f"--gate needs an environment with a validation split, and '{getattr(env, 'name', env)}' has no validation_tasks() method")

    async def run() -> None:
        client = remote.openai_client(default_headers=UNLOGGED_HEADERS)  # validation must not become training data

        async def validate(served: str) -> float:
            return (await evaluate(env, client, served, tasks, backend=remote)).success

        learner = TrafficLearner(remote, name, validate, config, tolerance=tolerance, validation_n=len(tasks), score=score, stop_on=stop_on)
        try:
            for _ in range(rounds):
                result = await learner.round()
                console.print(result.line())
                for warning in result.warnings:
                    console.print(warning.line(result.number))
                if result.stop:
                    console.print(f"stopped after round {result.number}: a warning in --stop-on started")
                    return
                if result.decision is None:
                    return
        finally:
            await client.close()

    asyncio.run(run())


@app.command()
@friendly_errors
def rollback(
    version: str = typer.Argument(..., help="NAME@STEP or NAME@CHECKPOINT: the checkpoint the model's name should serve again."),
    backend: str = typer.Option(..., help="The URL of the `hone serve --home` that serves it (API key from HONE_API_KEY)."),
    reason: str = typer.Option("rollback", help="Recorded with the decision."),
) -> None:
    """Make a served model's name serve one of its earlier checkpoints again (a promotion of it)."""
    name, _, wanted = version.partition("@")
    if not name or not wanted:
        raise HoneError(f"'{version}' is not NAME@STEP or NAME@CHECKPOINT")
    remote = make_backend(backend)
    if remote is None:
        raise HoneError("hone rollback needs --backend URL: promotions live in a `hone serve --home`")
    try:
        saved = asyncio.run(remote.list_checkpoints(name))
        chosen = [c for c in saved if c["checkpoint"] == wanted] or [c for c in saved if wanted.isdigit() and c["step"] == int(wanted)]
        if not chosen:
            kept = ", ".join(c["checkpoint"] for c in saved) or "none"
            raise HoneError(f"the model '{name}' has no checkpoint '{wanted}' (it keeps: {kept})")
        checkpoint = max(chosen, key=lambda c: c["created"])["checkpoint"]
        info = remote.promote(name, checkpoint, True, reason)
        console.print(f"'{name}' now serves {info['serving']} (step {info['step']})")
    finally:
        remote.close()


@app.command()
@friendly_errors
def export(
    source: str = typer.Argument(..., help="A run directory, one of its checkpoints/step_* folders, a trainer checkpoint folder, or NAME@STEP on --backend."),
    out: Path = typer.Option(..., help="Folder to write (replaced whole if it exists)."),
    format: str = typer.Option("hf", "--format", help="hf: merged weights + tokenizer for transformers; peft: the adapter + tokenizer; gguf: merged weights for llama.cpp and Ollama."),
    gguf_type: str = typer.Option("f16,q8_0", "--gguf-type", help="With --format gguf: the files to write, comma-separated (f16, q8_0)."),
    step: Optional[int] = typer.Option(None, help="Export this step of a run (default: its latest)."),
    best: bool = typer.Option(False, help="Export the run's best checkpoint by its best metric instead of its latest."),
    base_model: Optional[str] = typer.Option(None, help="The base model, for a checkpoint folder no run describes."),
    backend: str = typer.Option("local", help="local, or the URL of a `hone serve` whose model NAME@STEP to export (API key from HONE_API_KEY)."),
) -> None:
    """Write a trained model as a folder transformers (hf), PEFT (peft) or llama.cpp (gguf) loads."""
    import tempfile

    from hone.export import check_export_options, export as write_export, find_checkpoint

    gguf_types = tuple(t.strip() for t in gguf_type.split(",") if t.strip())
    check_export_options(format, gguf_types)  # before any model loads
    with tempfile.TemporaryDirectory() as scratch:
        if backend != "local":  # the server's checkpoint, fetched (weights only), then exported here
            if step is not None or best:
                raise HoneError(f"with --backend, name the checkpoint as NAME@STEP (e.g. {source.partition('@')[0]}@{step or 10}); --step and --best are for run directories")
            fetched = asyncio.run(make_backend(backend).download_checkpoint(source, Path(scratch) / "checkpoint"))
            found = find_checkpoint(fetched, base_model=base_model)
            found.run = f"{source} on {backend}"
        else:
            found = find_checkpoint(source, step=step, best=best, base_model=base_model)
        write_export(found, format, out, gguf_types)
    console.print(f"exported step {found.step} of {found.base_model} as {format} to {out}")


@app.command()
@friendly_errors
def demo(
    out: Path = typer.Option(Path("demo-out"), help="Output directory: results.json, report.html, the run. Re-run to resume."),
    steps: int = typer.Option(6, help="RL steps after the warm start."),
    group_size: int = typer.Option(6, help="Attempts per question."),
    groups_per_step: int = typer.Option(4, help="Questions per step."),
    learning_rate: float = typer.Option(2e-4, "--learning-rate", "--lr", help="AdamW learning rate for RL."),
    lora_rank: int = typer.Option(16, help="LoRA rank; 0 = full fine-tuning."),
    model: str = typer.Option(DEFAULT_MODEL, help="Base model."),
    seed: int = typer.Option(0, help="Seed for data, sampling and initialisation."),
    max_turns: int = typer.Option(6, help="Turn limit per question."),
    sft_demonstrations: int = typer.Option(96, help="Worked training episodes for the supervised warm start (0 = none)."),
    sft_epochs: int = typer.Option(1, help="Passes over the worked episodes."),
    sft_learning_rate: float = typer.Option(1e-3, "--sft-lr", help="AdamW learning rate for the warm start."),
    temperature: float = typer.Option(0.8, help="Sampling temperature while training."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="Train with bf16 matmuls (logprobs stay fp32). Default: where the trainer's hardware multiplies in bf16 natively (AVX512-BF16, AMX, a CUDA GPU); an AVX2-only CPU emulates bf16, which trained 18x slower than fp32 there."),
    eval_limit: int = typer.Option(0, help="Evaluate on only this many questions per split (0 = all; smoke runs only)."),
    reward: str = typer.Option("code", help="code: the environment's reward; judge: a relative LLM judge's scores alone."),
    judge_url: str = typer.Option("http://127.0.0.1:8000/v1", help="OpenAI-compatible base URL of the judge (with --reward judge)."),
    judge_model: str = typer.Option("smollm2-135m", help="Judge model name (API key from HONE_JUDGE_API_KEY or OPENAI_API_KEY)."),
    backend: str = typer.Option("local", help="local, or the URL of a `hone serve` (API key from HONE_API_KEY)."),
) -> None:
    """Evaluate the inbox agent and the no-learning rules, warm-start and train it, evaluate again, report."""
    from hone.demo import DemoConfig, run_demo
    from hone.envs.inbox import InboxEnv
    from hone.rl.loop import RunConfig

    if reward not in ("code", "judge"):
        raise HoneError(f"--reward must be 'code' or 'judge', not '{reward}'")
    score = None
    if reward == "judge":
        from hone.rewards import JudgeConfig, judge_scorer

        score = judge_scorer(JudgeConfig(base_url=judge_url, model=judge_model))
    env = InboxEnv(seed=seed, max_turns=max_turns)
    run = RunConfig(
        out_dir=str(out),
        base_model=model,
        steps=steps,
        group_size=group_size,
        groups_per_step=groups_per_step,
        learning_rate=learning_rate,
        lora_rank=lora_rank,
        seed=seed,
        temperature=temperature,
        autocast_bf16=_demo_autocast(bf16, backend),
    )
    config = DemoConfig(
        run=run, eval_limit=eval_limit, score=score, sft_demonstrations=sft_demonstrations, sft_epochs=sft_epochs,
        sft_learning_rate=sft_learning_rate,
    )
    run_demo(env, config, backend=make_backend(backend), console=console)


def _demo_autocast(bf16: bool | None, backend: str) -> bool | str:
    """The demo's bf16 choice: as asked, else decided for the hardware that trains. Resolved here for
    a local run, so results.json records what was used; a server decides for its own."""
    if bf16 is not None:
        return bf16
    if backend != "local":
        return "auto"
    import torch

    from hone.hardware import bf16_is_native

    return bf16_is_native(torch.device("cpu"))  # where a LocalBackend trains


def make_backend(spec: str) -> Any:
    """None (the run makes its own LocalBackend) for "local"; a RemoteBackend for a server URL."""
    if spec == "local":
        return None
    from hone.backends import RemoteBackend

    return RemoteBackend.from_env(spec)


def load_env(spec: str) -> Any:
    if spec == "toolcall":
        from hone.envs.toolcall import ToolCallEnv

        return ToolCallEnv()
    if spec == "inbox":
        from hone.envs.inbox import InboxEnv

        return InboxEnv()
    path = Path(spec)
    if path.suffix == ".py":
        if not path.exists():
            raise HoneError(f"no environment file at {path}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
        if not hasattr(module, "make_env"):
            raise HoneError(f"{path} must define make_env() returning an environment")
        return module.make_env()
    raise HoneError(f"unknown environment '{spec}'; use toolcall, inbox, or a path to a .py file defining make_env()")


if __name__ == "__main__":
    app()
