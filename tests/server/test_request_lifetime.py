"""A chat request samples only while it is wanted: a client that hangs up, a request over the time
limit, or a cancelled in-process call cancels its engine rows. Observed on the engine itself: its
active rows drop to 0 and its `cancelled_requests` count rises, long before the generation
(8 x 4000 tokens, ~40 s on 2 cores) could have run to its end."""

import asyncio
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from hone.server import create_app

from ..serving import wait_until
from .live import serving

LONG = {"model": "tiny", "messages": [{"role": "user", "content": "Tell me everything."}], "n": 8, "max_tokens": 4000, "temperature": 1.0}


@pytest.fixture
def engine(backend):
    engine = backend.get("tiny").engine
    wait_until(lambda: engine.active_rows == 0, 60, "the engine is still busy with an earlier test's request")
    return engine


def open_request(url: str, body: dict) -> socket.socket:
    """A raw HTTP/1.1 POST of `body` to /v1/chat/completions, sent whole; the socket stays open."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall(head + payload)
    return sock


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_mid_generation_frees_the_engine(backend, engine, stream):
    cancelled = engine.stats["cancelled_requests"]
    with serving(backend.app) as url:
        sock = open_request(url, {**LONG, "stream": stream})
        wait_until(lambda: engine.active_rows == 8, 30, "the 8 samples never started decoding")
        sock.close()  # the client hangs up while the server is still sampling
        hung_up_at = time.monotonic()
        wait_until(lambda: engine.active_rows == 0, 10, "the engine kept decoding for a client that had hung up")
        freed_after = time.monotonic() - hung_up_at
        assert engine.stats["cancelled_requests"] == cancelled + 1
        # not a natural end: 8 x 4000 tokens need 3999 decode steps, each ~5-10 ms here
        assert freed_after < 10, f"the rows were freed {freed_after:.1f} s after the client left"
        steps = engine.stats["decode_steps"]
        time.sleep(0.2)  # a few decode steps' worth: none may run for the gone request
        assert engine.stats["decode_steps"] == steps
        # the slots are free: the next request is served as usual
        reply = httpx.post(f"{url}/v1/chat/completions", json={**LONG, "n": 1, "max_tokens": 4}, timeout=60)
        assert reply.status_code == 200
        assert len(reply.json()["choices"][0]["token_ids"]) == 4


def test_a_cancelled_in_process_call_cancels_its_engine_rows(backend, engine):
    # over httpx's ASGI transport the route runs in the caller's task: cancelling the call cancels
    # the route, the same path as uvicorn cutting a request at the end of its shutdown drain
    cancelled = engine.stats["cancelled_requests"]

    async def main():
        client = backend.openai_client(max_retries=0)
        call = asyncio.ensure_future(client.chat.completions.create(**LONG))
        while engine.active_rows < 8:  # decoding has started
            assert not call.done(), call
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(main())
    wait_until(lambda: engine.active_rows == 0, 10, "the engine kept decoding for a cancelled call")
    assert engine.stats["cancelled_requests"] == cancelled + 1


def test_a_request_over_the_time_limit_is_cancelled_and_answered_504(backend, engine):
    cancelled = engine.stats["cancelled_requests"]
    app = create_app(backend, request_timeout_s=0.5)
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        start = time.monotonic()
        reply = client.post("/v1/chat/completions", json=LONG)
        elapsed = time.monotonic() - start
        assert reply.status_code == 504
        error = reply.json()["error"]
        assert error["code"] == "request_timeout" and error["type"] == "server_error"
        assert "time limit of 0.5 s" in error["message"], error["message"]
        assert reply.headers["x-should-retry"] == "false"  # the openai client would otherwise resend it twice
        assert elapsed < 10, f"the 504 came {elapsed:.1f} s after the request, for a 0.5 s limit"
        wait_until(lambda: engine.active_rows == 0, 10, "the engine kept decoding a request past its time limit")
        assert engine.stats["cancelled_requests"] == cancelled + 1
        # a request within the limit is answered as usual, on the same connection
        quick = client.post("/v1/chat/completions", json={**LONG, "n": 1, "max_tokens": 4})
        assert quick.status_code == 200, quick.text
        # the official client, which retries a 504 twice by default, takes the 504 as final
        requests = engine.stats["requests"]
        with pytest.raises(openai.APIStatusError) as raised:
            openai.OpenAI(base_url=f"{url}/v1", api_key="unused").chat.completions.create(**LONG)
        assert raised.value.status_code == 504
        assert engine.stats["requests"] == requests + 1  # sampled once: not resent


def test_the_in_process_app_has_no_time_limit_by_default(backend):
    assert backend.app.state.request_timeout_s is None
