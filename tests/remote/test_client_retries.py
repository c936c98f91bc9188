"""RemoteBackend's HTTP layer against a handler function: which failures are retried, with what id.

No server here (httpx's MockTransport stands in for the network); tests/remote/test_remote_training.py
covers the same behaviour against a real `hone serve`.
"""

import asyncio
import json

import httpx
import pytest
from typer.testing import CliRunner

from hone.backends.remote import CHECKPOINT_FILE, RemoteBackend, RemoteError, RetryPolicy
from hone.cli import app
from hone.errors import AuthenticationError, CheckpointError, HoneError, InvalidRequestError, ModelNotFoundError
from hone.types import AdamParams, Datum

FAST = RetryPolicy(attempts=4, backoff_s=0.001, max_backoff_s=0.002)
DATUM = Datum.from_sequence([1, 2, 3], [0, 1, 1], sampler_logprobs=[0.0, -1.0, -1.0], advantages=[0.0, 1.0, 1.0])


class Server:
    """A scripted server: answers[i] is the reply to the i-th request (an exception is raised instead)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        return httpx.Response(status, json=body)

    def bodies(self) -> list[dict]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


def backend_over(server: Server) -> RemoteBackend:
    transport = httpx.MockTransport(server)
    return RemoteBackend("http://hone.test:1/v1/", "key-1", retry=FAST, transport=transport)


def error(message: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}


def test_a_dropped_connection_is_retried_with_the_same_request_id():
    server = Server(httpx.RemoteProtocolError("server closed the connection"), httpx.ConnectError("refused"), (200, {"metrics": {"lr": 1.0}, "step": 1}))
    metrics = asyncio.run(backend_over(server).optim_step("m", AdamParams()))
    assert metrics == {"lr": 1.0}
    ids = [b["request_id"] for b in server.bodies()]
    assert len(ids) == 3 and len(set(ids)) == 1  # one logical request, sent three times
    assert server.requests[0].headers["authorization"] == "Bearer key-1"
    assert str(server.requests[0].url) == "http://hone.test:1/v1/hone/models/m/optim_step"


def test_each_logical_call_gets_its_own_request_id():
    server = Server((200, {"metrics": {}}), (200, {"metrics": {}}))
    backend = backend_over(server)
    asyncio.run(backend.forward_backward("m", [DATUM]))
    asyncio.run(backend.forward_backward("m", [DATUM]))
    first, second = server.bodies()
    assert first["request_id"] != second["request_id"]
    assert first["loss"] == "cispo" and first["datums"][0]["input_tokens"] == [1, 2]


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_answers_are_retried(status):
    server = Server((status, {"detail": "bad gateway"}), (200, {"data": []}))
    assert backend_over(server).list_models() == []
    assert len(server.requests) == 2


def test_a_429_for_a_limit_that_waiting_cannot_lift_is_not_retried():
    server = Server((429, error("this tenant already has 8 models, the server's limit; delete one first")))
    with pytest.raises(InvalidRequestError, match="delete one first") as caught:
        backend_over(server).add_model("p", "tiny")
    assert caught.value.status_code == 429 and len(server.requests) == 1


def test_a_429_for_requests_in_flight_is_retried():
    busy = {"error": {"message": "too many requests in flight", "type": "rate_limit_error", "param": None, "code": None}}
    server = Server((429, busy), (200, {"data": []}))
    assert backend_over(server).list_models() == []
    assert len(server.requests) == 2


def test_a_permanent_4xx_raises_the_servers_sentence_without_retrying():
    server = Server((400, error("model names may not contain '/'", param="name")))
    with pytest.raises(InvalidRequestError, match="may not contain") as caught:
        backend_over(server).add_model("a/b", "tiny")
    assert caught.value.status_code == 400 and caught.value.param == "name"
    assert len(server.requests) == 1


def test_a_missing_model_is_model_not_found():
    server = Server((404, error("the model 'x' does not exist")))
    with pytest.raises(ModelNotFoundError, match="'x' does not exist"):
        asyncio.run(backend_over(server).optim_step("x", AdamParams()))


def test_a_refused_key_says_to_set_hone_api_key():
    server = Server((401, error("invalid API key")))
    with pytest.raises(AuthenticationError, match="HONE_API_KEY") as caught:
        backend_over(server).list_models()
    assert caught.value.status_code == 401


def test_a_server_that_never_answers_gives_one_sentence_after_the_last_try():
    server = Server(*[httpx.ConnectError("connection refused")] * FAST.attempts)
    with pytest.raises(RemoteError, match=r"could not reach hone serve at http://hone.test:1 after 4 tries"):
        backend_over(server).list_models()
    assert len(server.requests) == FAST.attempts


def test_a_custom_loss_callable_is_refused_before_anything_is_sent():
    server = Server()
    with pytest.raises(InvalidRequestError, match="LocalBackend"):
        asyncio.run(backend_over(server).forward_backward("m", [DATUM], loss=lambda *a: None))
    assert server.requests == []


def test_add_model_gets_or_creates_with_the_options_mapped_to_the_contract():
    row = {"name": "p", "base_model": "tiny", "lora_rank": 0, "step": 3}
    server = Server((200, row))
    model = backend_over(server).add_model("p", "tiny", lora_rank=16, full_finetune=True, seed=7, autocast_bf16=False)
    assert model.step == 3
    [body] = server.bodies()
    assert body == {"name": "p", "base_model": "tiny", "lora_rank": 0, "options": {"seed": 7, "autocast_bf16": False}, "exist_ok": True}


def test_an_unknown_model_option_is_refused():
    with pytest.raises(InvalidRequestError, match="gpu_layers"):
        backend_over(Server()).add_model("p", "tiny", gpu_layers=3)


def test_save_state_leaves_a_pointer_that_load_state_follows(tmp_path):
    server = Server((200, {"checkpoint": "step-2", "step": 2}), (200, {"step": 2}))
    backend = backend_over(server)
    path = asyncio.run(backend.save_state("p", tmp_path / "trainer"))
    pointer = json.loads((path / CHECKPOINT_FILE).read_text())
    assert pointer == {"base_url": "http://hone.test:1", "model": "p", "checkpoint": "step-2", "step": 2}
    asyncio.run(backend.load_state("p", path))
    save, load = server.bodies()
    assert save["checkpoint"] is None and save["request_id"]
    assert load == {"checkpoint": "step-2", "with_optimizer": True}


def test_loading_a_folder_without_a_pointer_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not written by RemoteBackend"):
        asyncio.run(backend_over(Server()).load_state("p", tmp_path))


def test_an_empty_api_key_is_refused():
    with pytest.raises(HoneError, match="HONE_API_KEY"):
        RemoteBackend("http://127.0.0.1:1", "")


@pytest.mark.parametrize("command", ["train", "demo"])
def test_backend_url_without_hone_api_key_is_one_sentence(command, monkeypatch):
    monkeypatch.delenv("HONE_API_KEY", raising=False)
    args = [command, "toolcall"] if command == "train" else [command]
    result = CliRunner().invoke(app, [*args, "--backend", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "set HONE_API_KEY" in result.output
    assert "Traceback" not in result.output


def test_a_training_step_sends_forward_backward_and_optim_step_together_the_second_naming_the_first():
    arrived = asyncio.Event()
    seen: list[dict] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        if request.url.path.endswith("/forward_backward"):
            await asyncio.wait_for(arrived.wait(), 5)  # answers only once the optim_step has been sent too
            return httpx.Response(200, json={"metrics": {"loss": 0.5}})
        arrived.set()
        return httpx.Response(200, json={"metrics": {"grad_norm": 1.0}, "step": 1})

    backend = RemoteBackend("http://hone.test:1", "key-1", retry=FAST, transport=httpx.MockTransport(handler))
    loss, optim = asyncio.run(backend.forward_backward_optim_step("m", [DATUM], "cispo", None, AdamParams()))
    assert loss == {"loss": 0.5} and optim == {"grad_norm": 1.0}
    fb, step = seen
    assert step["after"] == fb["request_id"] and step["request_id"] != fb["request_id"]


def test_an_optim_step_refused_because_its_forward_backward_came_late_is_sent_again_on_its_own():
    server = Server(
        (200, {"metrics": {"loss": 0.5}}),
        (409, error("the forward_backward 'x' this optim_step is sent after did not arrive within 1 s", param="after")),
        (200, {"metrics": {"grad_norm": 1.0}, "step": 1}),
    )
    loss, optim = asyncio.run(backend_over(server).forward_backward_optim_step("m", [DATUM], "cispo", None, AdamParams()))
    assert optim == {"grad_norm": 1.0}
    bodies = server.bodies()
    assert [("after" in b) for b in bodies[1:]] == [True, False]  # the second optim_step waits for nothing
    assert sum(r.url.path.endswith("/forward_backward") for r in server.requests) == 1  # gradients computed once
