"""A stand-in judge: a real HTTP server on 127.0.0.1 speaking OpenAI's chat-completions shape.

It stands in for an outside judge service (the one thing a test may fake). It plays back the
answers a test queues, records every request it receives, and, with nothing queued, answers
each attempt id it finds in the prompt with `default_score(id)`.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from typing import Any, Callable

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hone.rewards import JudgeConfig
from hone.rl.trajectory import Trajectory

Answer = str | int | Callable[[dict[str, Any]], str]  # content, an HTTP status to fail with, or a function of the request


def default_score(attempt_id: str) -> float:
    return round(1.0 / int(attempt_id), 3)  # "1" -> 1.0, "2" -> 0.5, "3" -> 0.333


def attempt_ids(request: dict[str, Any]) -> list[str]:
    return re.findall(r'<attempt id="(\w+)">', request["messages"][1]["content"])


def score_every_attempt(request: dict[str, Any]) -> str:
    entries = ", ".join(f'{{"id": "{i}", "explanation": "attempt {i}", "score": {default_score(i)}}}' for i in attempt_ids(request))
    return '{"scores": [' + entries + "]}"


class StandInJudge:
    score_every_attempt = staticmethod(score_every_attempt)

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            answer = self.answers.pop(0) if self.answers else score_every_attempt
            if isinstance(answer, int):
                return JSONResponse({"error": {"message": "stand-in failure", "type": "server_error"}}, status_code=answer)
            content = answer(body) if callable(answer) else answer
            return {
                "id": "chatcmpl-standin",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
            }

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("the stand-in judge did not start within 10 s")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def _judge_server():
    server = StandInJudge()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def stand_in(_judge_server):
    _judge_server.answers.clear()
    _judge_server.requests.clear()
    _judge_server.headers.clear()
    yield _judge_server
    _judge_server.answers.clear()


@pytest.fixture
def config(stand_in, tmp_path) -> JudgeConfig:
    return JudgeConfig(base_url=stand_in.base_url, model="stand-in-judge", cache_dir=str(tmp_path / "cache"), http_retries=0)


# --------------------------------------------------------------------------- trajectories
SYSTEM = {"role": "system", "content": "You manage an inbox with tools."}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "archive",
            "description": "Archive one email",
            "parameters": {"type": "object", "properties": {"email_id": {"type": "string"}}, "required": ["email_id"]},
        },
    }
]


def make_attempt(task: str, *replies: str, reward: float = 0.0) -> Trajectory:
    """A trajectory at `task` whose assistant turns say `replies`, with a code reward."""
    messages = [SYSTEM, {"role": "user", "content": task}]
    messages += [{"role": "assistant", "content": r} for r in replies]
    return Trajectory(messages=messages, tools=TOOLS, reward=reward)


@pytest.fixture
def attempt() -> Callable[..., Trajectory]:
    return make_attempt
