"""Build the FastAPI app of the OpenAI-compatible routes over one Sampler."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from hone.server.errors import WatchedSend, error_response, install_error_handlers
from hone.server.openai_api import build_router
from hone.server.rollout_api import build_rollout_router
from hone.server.rollouts import RolloutBook
from hone.server.sampler import Sampler

log = logging.getLogger("hone.server")


def create_app(sampler: Sampler, request_timeout_s: float | None = None, rollouts: RolloutBook | None = None) -> FastAPI:
    """The OpenAI routes over `sampler`, and the rollout routes recording calls into `rollouts` (a
    new book if None; kept as `app.state.rollouts`). `request_timeout_s`: a chat request still
    sampling after this long is cancelled and answered 504 (None = no limit; kept as
    `app.state.request_timeout_s`)."""
    app = FastAPI(title="hone", version="0.1.0")
    app.state.request_timeout_s = request_timeout_s
    app.state.rollouts = rollouts if rollouts is not None else RolloutBook()
    install_error_handlers(app)
    app.include_router(build_router(sampler))
    app.include_router(build_rollout_router(lambda request: sampler, app.state.rollouts, owner_of=lambda request: None))
    add_health_route(app)
    return app


def add_health_route(app: FastAPI) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}


class AnswerCutRequests:
    """For the outermost layer under uvicorn: a request the server cancels (uvicorn, when its
    shutdown drain runs out) is answered with a JSON 503 the client may retry, not uvicorn's
    plain-text 500 and a CancelledError traceback in the log.

    The cancellation ends here: uvicorn, which cancelled the request's task, never awaits it. Not
    for in-process apps, where the task is the caller's own and its cancellation must go on up."""

    def __init__(self, app: ASGIApp, drain_s: float) -> None:
        self.app = app
        self.drain_s = drain_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watched = WatchedSend(send)
        try:
            await self.app(scope, receive, watched)
        except asyncio.CancelledError:
            log.warning("%s %s was cut: still running when the shutdown drain of %g s ran out", scope["method"], scope["path"], self.drain_s)
            if not watched.started:  # a stream already under way can only be cut short
                message = f"the server shut down before this request finished (its drain of {self.drain_s:g} s ran out); retry it"
                await error_response(503, message, "server_error", code="server_shutting_down")(scope, receive, send)
