"""RemoteBackend: the LocalBackend interface over HTTP to `hone serve` (contract: docs/serve-api.md).

    backend = RemoteBackend("http://127.0.0.1:8000", api_key=os.environ["HONE_API_KEY"])
    model = TrainableModel("agent", "smollm2-135m", backend=backend)   # user code does not change

The user's process keeps the rollouts, tools and rewards; the server samples and trains. Knows the
HTTP contract and nothing of how the server stores or runs models.

1. Every call is one logical request with one `request_id` (uuid4). Transient failures (connect
   errors, dropped connections, 429, 502, 503, 504) are retried with exponential backoff and full
   jitter, resending the same id, so the server applies a training request once however many
   times it arrives.
   Sixteen tries wait 45-90 s in all: long enough for a server to restart and restore its models;
   the OpenAI client for rollouts retries about as long.
2. Permanent failures (other 4xx, 500) raise one hone error whose message is the server's own
   sentence; nothing is retried that cannot succeed.
3. Checkpoints live on the server. `save_state(name, PATH)` writes PATH/remote_checkpoint.json
   naming the server checkpoint, and `load_state` reads it back, so hone.rl's atomic run
   checkpoints and resume work unchanged: the run folder is local, the weights are remote.
4. Only built-in losses travel: a Python callable cannot be sent, so it raises a clear error.
5. Async first: every call goes through one async retry loop. The sync methods (`add_model`,
   `list_models`, ...) run that loop on a private event loop in a daemon thread and wait for it,
   so they work the same from scripts and from inside a running event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import uuid
import weakref
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine, TypeVar

import httpx
import openai

from hone.errors import AuthenticationError, CheckpointError, ConflictError, HoneError, InvalidRequestError, ModelNotFoundError, RemoteError, error_class
from hone.files import write_dir_atomically, write_file_atomically
from hone.models import DEFAULT_MODEL, load_tokenizer
from hone.traffic import Feedback, LoggedCompletion, logged_completion
from hone.types import AdamParams, Datum, ModelInfo, ModelSpec, OnTokens, SampledSequence, SamplingParams

__all__ = ["CHECKPOINT_FILE", "RemoteBackend", "RemoteError", "RetryPolicy", "read_checkpoint_pointer"]
T = TypeVar("T")

CHECKPOINT_FILE = "remote_checkpoint.json"
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
# Errors after which the request may not have arrived, or its answer was lost: safe to resend
# because every training request carries its request id. (Not httpx's protocol errors made on
# this side, nor an unsupported URL scheme: those fail the same way every time.)
TRANSIENT_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)
@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 16  # tries per logical request, the first included: 45-90 s of waits, a slow server restart
    backoff_s: float = 0.25  # the n-th retry waits c/2 + uniform(0, c/2), c = min(cap, backoff·2^(n-1))
    max_backoff_s: float = 8.0


@dataclass(frozen=True)
class _Call:
    """One logical request: resent unchanged (same request id) on a transient failure."""

    method: str
    path: str
    body: dict[str, Any] | None = None


class RemoteBackend:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout_s: float | None = None,  # None: wait as long as a training step takes
        retry: RetryPolicy = RetryPolicy(),
        openai_max_retries: int = 12,  # chat is safe to resend; 12 of the openai client's backoffs (~70 s) outlast a restart as training calls do
        transport: httpx.AsyncBaseTransport | None = None,  # tests inject one; the network otherwise
    ):
        if not api_key:
            raise HoneError("RemoteBackend needs an API key: set HONE_API_KEY to a key from `hone keys create`")
        self.base_url = _root_url(base_url)
        self.retry = retry
        self.openai_max_retries = openai_max_retries
        self._api_key = api_key
        self._timeout = httpx.Timeout(timeout_s, connect=10.0)
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._transport = transport
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()
        self._runner: _LoopThread | None = None
        self._models: dict[str, ModelInfo] = {}
        self._rollout_keys: dict[str, str] = {}  # open rollout id -> the key its agent is given

    @classmethod
    def from_env(cls, base_url: str, **kwargs: Any) -> "RemoteBackend":
        """A backend for `base_url` with the key in HONE_API_KEY (what `hone demo/train --backend URL` use)."""
        api_key = os.environ.get("HONE_API_KEY", "").strip()
        if not api_key:
            raise HoneError(f"set HONE_API_KEY to an API key for {_root_url(base_url)} (one from `hone keys create --tenant NAME`)")
        return cls(base_url, api_key, **kwargs)

    # ------------------------------------------------------------------ models
    def add_model(self, name: str, base_model: str = DEFAULT_MODEL, **options: Any) -> ModelInfo:
        """Get or create `name` on the server, so a resumed run re-attaches to the model it trained.

        Options as LocalBackend takes them (`hone.types.ModelSpec.of`), checked here before any request.
        """
        spec = ModelSpec.of(base_model, **options)
        body = {"name": name, **spec.model_dump(exclude_none=True), "exist_ok": True}
        model = _model_info(self._run(self._request(_Call("POST", "/v1/hone/models", body))))
        self._models[name] = model
        return model

    def list_models(self) -> list[str]:
        return sorted(row["name"] for row in self._run(self._request(_Call("GET", "/v1/hone/models")))["data"])

    def model_info(self, name: str) -> ModelInfo:
        for row in self._run(self._request(_Call("GET", "/v1/hone/models")))["data"]:
            if row["name"] == name:
                return _model_info(row)
        raise ModelNotFoundError(f"the model '{name}' does not exist on {self.base_url}; add_model creates it")

    def delete_model(self, name: str) -> None:
        self._run(self._request(_Call("DELETE", f"/v1/hone/models/{name}")))
        self._models.pop(name, None)

    def tokenizer(self, name: str) -> Any:
        """The base model's tokenizer, loaded here (the embedded and tiny ones need no network)."""
        model = self._models.get(name) or self.model_info(name)
        return load_tokenizer(model.base_model)

    # ------------------------------------------------------------------ sampling
    async def sample(
        self, name: str, prompt_tokens: list[int], n: int, params: SamplingParams, on_tokens: OnTokens | None = None
    ) -> list[SampledSequence]:
        """`on_tokens` is not called: the sample route answers whole sequences."""
        body = {"prompt_tokens": list(prompt_tokens), "n": n, "params": asdict(params)}
        answer = await self._request(_Call("POST", f"/v1/hone/models/{name}/sample", body))
        return [
            SampledSequence(
                tokens=s["tokens"],
                logprobs=s["logprobs"],
                finish_reason=s["finish_reason"],
                top_logprobs=[[tuple(pair) for pair in row] for row in s["top_logprobs"]] if s.get("top_logprobs") else None,
                forced=s.get("forced"),
            )
            for s in answer["sequences"]
        ]

    # ------------------------------------------------------------------ training (Tinker-shaped)
    async def forward_backward(
        self, name: str, datums: list[Datum], loss: str | Callable = "cispo", loss_config: Any = None
    ) -> dict[str, float]:
        """Accumulate gradients of a built-in `loss` over `datums` on the server; returns its metrics."""
        answer = await self._request(_forward_backward_call(name, datums, loss, loss_config, _request_id()))
        return _metrics(answer["metrics"])

    async def optim_step(self, name: str, adam: AdamParams) -> dict[str, float]:
        """Apply the accumulated gradients; the server samples from the new weights from then on."""
        answer = await self._request(_optim_step_call(name, adam))
        return _metrics(answer["metrics"])

    async def forward_backward_optim_step(
        self, name: str, datums: list[Datum], loss: str | Callable, loss_config: Any, adam: AdamParams
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Both calls sent at once, the optim_step naming the forward_backward it comes `after`: the
        server runs them in that order, and the step costs one round trip, not two."""
        fb_id = _request_id()
        fb_call = _forward_backward_call(name, datums, loss, loss_config, fb_id)  # a bad loss raises before anything is sent
        forward_backward = asyncio.ensure_future(self._request(fb_call))
        optim_step = asyncio.ensure_future(self._request(_optim_step_call(name, adam, after=fb_id)))
        try:
            loss_answer = await forward_backward  # its own error first: the optim_step's 409 would only echo it
            try:
                optim_answer = await optim_step
            except ConflictError as exc:
                if exc.param != "after":
                    raise
                # the forward_backward reached the server too late for the optim_step to wait for it
                # (a retried connection); it has run now, so the step goes on its own
                optim_answer = await self._request(_optim_step_call(name, adam))
        finally:
            optim_step.cancel()  # a no-op once it is done
        return _metrics(loss_answer["metrics"]), _metrics(optim_answer["metrics"])

    async def save_state(self, name: str, path: str | Path) -> Path:
        """Checkpoint on the server, and leave PATH/remote_checkpoint.json pointing at it."""
        body = {"checkpoint": None, "request_id": _request_id()}
        answer = await self._request(_Call("POST", f"/v1/hone/models/{name}/save_state", body))
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        pointer = {"base_url": self.base_url, "model": name, "checkpoint": answer["checkpoint"], "step": answer["step"]}
        write_file_atomically(path / CHECKPOINT_FILE, json.dumps(pointer, indent=1))
        return path

    async def load_state(self, name: str, path: str | Path, with_optimizer: bool = True) -> None:
        pointer = read_checkpoint_pointer(path)
        if pointer["model"] != name:
            raise CheckpointError(
                f"{Path(path) / CHECKPOINT_FILE} is a checkpoint of the model '{pointer['model']}', not '{name}'"
            )
        body = {"checkpoint": pointer["checkpoint"], "with_optimizer": with_optimizer}
        await self._request(_Call("POST", f"/v1/hone/models/{name}/load_state", body))

    async def list_checkpoints(self, name: str) -> list[dict[str, Any]]:
        return (await self._request(_Call("GET", f"/v1/hone/models/{name}/checkpoints")))["data"]

    async def download_checkpoint(self, name_at_step: str, folder: str | Path) -> Path:
        """Fetch the weights of `NAME@STEP` (the newest checkpoint of that step; `NAME` alone: the
        newest checkpoint) into `folder`, a trainer checkpoint folder `hone export` reads."""
        import zipfile

        name, _, step = name_at_step.partition("@")
        saved = await self.list_checkpoints(name)
        if step and not step.isdigit():
            raise InvalidRequestError(f"'{name_at_step}' is not NAME@STEP (STEP a number)", param="source")
        chosen = [c for c in saved if not step or c["step"] == int(step)]
        if not chosen:
            kept = ", ".join(str(s) for s in sorted({c["step"] for c in saved})) or "none"
            raise CheckpointError(f"the model '{name}' on {self.base_url} has no checkpoint of step {step or 'any'} (it keeps steps: {kept})")
        checkpoint = max(chosen, key=lambda c: (c["step"], c.get("created", 0)))["checkpoint"]
        folder = Path(folder)
        path = f"/v1/hone/models/{name}/checkpoints/{checkpoint}/archive"
        with write_dir_atomically(folder) as staging:  # `folder` is replaced whole, or left as it was
            archive = staging / ".download.zip"
            async with self._client().stream("GET", path) as response:
                if not response.is_success:
                    await response.aread()
                    self._answer(_Call("GET", path), response)
                with open(archive, "wb") as out:
                    async for chunk in response.aiter_bytes(1 << 20):
                        out.write(chunk)
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(staging)  # zipfile drops absolute and '..' parts of member names
            archive.unlink()
        return folder

    # ------------------------------------------------------------------ traffic and feedback (issue 17)
    def configure_traffic(self, name: str, enabled: bool = True, **settings: Any) -> dict[str, Any]:
        """Turn `name`'s traffic log on (or off): retention_days, max_completions, labels (word -> reward)."""
        return self._run(self._request(_Call("PUT", f"/v1/hone/models/{name}/traffic", {"enabled": enabled, **settings})))

    def feedback(self, completion_id: str | None = None, *, rollout_id: str | None = None, reward: float | None = None, label: str | None = None, choice: int = 0) -> Feedback:
        """A reward (or a label the model maps to one) for a served completion or a whole rollout;
        sent with an id of its own, so a retry after a dropped connection is stored once."""
        body = {"completion_id": completion_id, "rollout_id": rollout_id, "reward": reward, "label": label, "choice": choice, "feedback_id": _request_id()}
        return Feedback(**self._run(self._request(_Call("POST", "/v1/hone/feedback", body))))

    async def traffic(self, name: str) -> tuple[list[LoggedCompletion], list[Feedback]]:
        """Every completion `name`'s log holds, oldest first, and the feedback on them."""
        completions: dict[str, LoggedCompletion] = {}
        feedback: dict[str, Feedback] = {}
        after: int | None = 0
        while after is not None:
            page = await self._request(_Call("GET", f"/v1/hone/models/{name}/traffic/completions?after={after}&limit=1000"))
            completions.update((row["id"], logged_completion(row)) for row in page["data"])
            feedback.update((row["id"], Feedback(**row)) for row in page["feedback"])
            after = page["next_after"]
        return list(completions.values()), list(feedback.values())

    # ------------------------------------------------------------------ promotion (issue 17)
    def save_checkpoint(self, name: str, checkpoint: str | None = None) -> dict[str, Any]:
        """Save `name`'s live weights on the server as `checkpoint` (default step-N): {"checkpoint", "step"}."""
        body = {"checkpoint": checkpoint, "request_id": _request_id()}
        return self._run(self._request(_Call("POST", f"/v1/hone/models/{name}/save_state", body)))

    def restore_checkpoint(self, name: str, checkpoint: str, with_optimizer: bool = True) -> int:
        """Put the server's checkpoint back as `name`'s live weights; returns the step it brings back."""
        body = {"checkpoint": checkpoint, "with_optimizer": with_optimizer}
        return self._run(self._request(_Call("POST", f"/v1/hone/models/{name}/load_state", body)))["step"]

    def promotions(self, name: str) -> dict[str, Any]:
        """What `name` serves ("serving": NAME@STEP, or NAME@live) and every gate decision so far."""
        return self._run(self._request(_Call("GET", f"/v1/hone/models/{name}/promotions")))

    def promote(self, name: str, checkpoint: str, promoted: bool = True, reason: str = "", metrics: dict[str, float] | None = None) -> dict[str, Any]:
        """Record a decision on `checkpoint`; promoted, the OpenAI routes' `name` serves it from now
        on (a rollback is promoting an older one). Answers as `promotions` does."""
        body = {"checkpoint": checkpoint, "promoted": promoted, "reason": reason, "metrics": metrics or {}}
        return self._run(self._request(_Call("POST", f"/v1/hone/models/{name}/promotions", body)))

    # ------------------------------------------------------------------ clients
    def openai_client(self, rollout_id: str | None = None, **kwargs: Any) -> openai.AsyncOpenAI:
        """An async OpenAI client for the server's /v1 routes (or rollout `rollout_id`'s), with this
        backend's key; it retries about as long as training calls do, so rollouts too ride out a
        server restart."""
        kwargs.setdefault("max_retries", self.openai_max_retries)
        base_url, api_key = self._endpoint(rollout_id)
        return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, **kwargs)

    def openai_client_sync(self, rollout_id: str | None = None, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("max_retries", self.openai_max_retries)
        base_url, api_key = self._endpoint(rollout_id)
        return openai.OpenAI(base_url=base_url, api_key=api_key, **kwargs)

    def _endpoint(self, rollout_id: str | None) -> tuple[str, str]:
        """The /v1 base URL and key: the tenant's, or a rollout's with the key that reaches it alone."""
        if not rollout_id:
            return f"{self.base_url}/v1", self._api_key
        return f"{self.base_url}/v1/rollouts/{rollout_id}", self._rollout_keys.get(rollout_id, self._api_key)

    # ------------------------------------------------------------------ rollouts
    async def open_rollout(self, name: str, task_id: str | None = None, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        body = {"model": name, "task_id": task_id, "metadata": metadata}
        record = await self._request(_Call("POST", "/v1/rollouts", body))
        if record.get("api_key"):
            self._rollout_keys[record["id"]] = record.pop("api_key")
        return record

    async def close_rollout(self, rollout_id: str) -> dict[str, Any]:
        try:
            return await self._request(_Call("DELETE", f"/v1/rollouts/{rollout_id}"))
        finally:
            self._rollout_keys.pop(rollout_id, None)

    def rollout_endpoint(self, rollout_id: str) -> tuple[str, str]:
        """The rollout's base URL and the key that reaches only it (agent code never holds the tenant's key)."""
        return self._endpoint(rollout_id)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.stop()
            self._runner = None
        self._clients = weakref.WeakKeyDictionary()  # their connections belong to event loops that may be gone already

    # ------------------------------------------------------------------ HTTP with retries
    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """A sync method's answer: `coroutine` run to the end on this backend's private event loop."""
        if self._runner is None:
            self._runner = _LoopThread()
        return self._runner.run(coroutine)

    async def _request(self, call: _Call) -> Any:
        """The one retry loop: every call, sync or async, goes through here."""
        client = self._client()
        for attempt in range(1, self.retry.attempts + 1):
            try:
                response = await client.request(call.method, call.path, json=call.body)
            except TRANSIENT_ERRORS as exc:
                failure: httpx.Response | Exception = exc
            else:
                if not _transient(response):
                    return self._answer(call, response)
                failure = response
            if attempt == self.retry.attempts:
                raise self._gave_up(call, failure)
            await asyncio.sleep(self._backoff(attempt, failure))

    def _client(self) -> httpx.AsyncClient:
        """One client per event loop: pooled connections cannot move between loops."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self._timeout, transport=self._transport)
            self._clients[loop] = client
        return client

    def _backoff(self, attempt: int, failure: httpx.Response | Exception) -> float:
        ceiling = min(self.retry.max_backoff_s, self.retry.backoff_s * 2 ** (attempt - 1))
        wait = ceiling / 2 + random.uniform(0, ceiling / 2)  # jitter: many clients retrying do not stampede
        if isinstance(failure, httpx.Response):
            retry_after = _seconds(failure.headers.get("retry-after"))
            if retry_after is not None:
                wait = max(wait, min(retry_after, self.retry.max_backoff_s))
        return wait

    def _answer(self, call: _Call, response: httpx.Response) -> Any:
        if response.is_success:
            return response.json()
        message = _server_message(response)
        status = response.status_code
        error = error_class(status)
        if error is AuthenticationError:
            raise AuthenticationError(f"{self.base_url} refused the API key ({message}); set HONE_API_KEY to a key from `hone keys create`", status)
        if issubclass(error, InvalidRequestError):
            raise error(message, param=_server_param(response))
        if error is RemoteError:
            raise RemoteError(f"{self.base_url} failed on {call.method} {call.path} with {status}: {message}", status)
        raise error(message)

    def _gave_up(self, call: _Call, failure: httpx.Response | Exception) -> RemoteError:
        tries = f"{self.retry.attempts} tries"
        if isinstance(failure, httpx.Response):
            return RemoteError(
                f"{self.base_url} kept answering {failure.status_code} to {call.method} {call.path} after {tries}: "
                f"{_server_message(failure)}",
                failure.status_code,
            )
        reason = str(failure) or type(failure).__name__
        return RemoteError(f"could not reach hone serve at {self.base_url} after {tries} ({reason}); is it running?")


# --------------------------------------------------------------------------- helpers
def read_checkpoint_pointer(path: str | Path) -> dict[str, Any]:
    """PATH/remote_checkpoint.json: which server checkpoint a local run checkpoint stands for."""
    file = Path(path) / CHECKPOINT_FILE
    if not file.exists():
        raise CheckpointError(
            f"{Path(path)} holds no {CHECKPOINT_FILE}: it was not written by RemoteBackend "
            "(a LocalBackend checkpoint cannot be loaded into a server model)"
        )
    try:
        pointer = json.loads(file.read_text())
        _ = pointer["model"], pointer["checkpoint"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{file} is unreadable ({exc}); delete that run checkpoint to resume from an earlier one") from exc
    return pointer


def _root_url(url: str) -> str:
    """The server's root: trailing slashes and a trailing /v1 are dropped, so both spellings work."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise HoneError(f"the backend URL must start with http:// or https://, not '{url}'")
    return url


def _request_id() -> str:
    return uuid.uuid4().hex


def _forward_backward_call(name: str, datums: list[Datum], loss: str | Callable, loss_config: Any, request_id: str) -> _Call:
    if not isinstance(loss, str):
        raise InvalidRequestError(
            "a custom Python loss cannot be sent to hone serve; use a built-in loss name "
            "(cispo, ppo, importance_sampling, cross_entropy) or train with LocalBackend",
            param="loss",
        )
    body = {
        "datums": [d.model_dump() for d in datums],
        "loss": loss,
        "loss_config": asdict(loss_config) if is_dataclass(loss_config) else loss_config,
        "request_id": request_id,
    }
    return _Call("POST", f"/v1/hone/models/{name}/forward_backward", body)


def _optim_step_call(name: str, adam: AdamParams, after: str | None = None) -> _Call:
    body: dict[str, Any] = {"adam": asdict(adam), "request_id": _request_id()}
    if after is not None:
        body["after"] = after
    return _Call("POST", f"/v1/hone/models/{name}/optim_step", body)


def _model_info(row: dict[str, Any]) -> ModelInfo:
    return ModelInfo(name=row["name"], base_model=row["base_model"], lora_rank=row["lora_rank"], step=row.get("step", 0))


def _transient(response: httpx.Response) -> bool:
    """Worth resending: a gateway or overload answer. A 429 for a limit that waiting cannot lift
    (the tenant's model count, sent as an invalid_request_error) is permanent."""
    if response.status_code == 429:
        return _server_error_field(response, "type") != "invalid_request_error"
    if _server_error_field(response, "code") == "request_timeout":  # hone's own time limit: asking again costs as long
        return False
    return response.status_code in TRANSIENT_STATUS


def _metrics(metrics: dict[str, float | None]) -> dict[str, float]:
    """JSON has no NaN: the server sends an undefined metric as null; hand it back as NaN, as LocalBackend does."""
    return {k: float("nan") if v is None else float(v) for k, v in metrics.items()}


def _server_message(response: httpx.Response) -> str:
    message = _server_error_field(response, "message")
    if message:
        return str(message)
    text = response.text.strip()
    return text[:300] if text else f"HTTP {response.status_code} with no message"


def _server_param(response: httpx.Response) -> str | None:
    return _server_error_field(response, "param")


def _server_error_field(response: httpx.Response, field: str) -> Any:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return error.get(field) if isinstance(error, dict) else None


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class _LoopThread:
    """A private event loop in a daemon thread: sync methods run the async retry loop on it, so
    there is one retry loop, and a sync call from inside a running event loop does not deadlock."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hone-remote", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
