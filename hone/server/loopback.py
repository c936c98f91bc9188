"""The in-process app on a real port, for agents that build their own client from a URL and a key.

In-process, hone's own clients reach the app through an httpx ASGI transport: no port. An agent
framework that makes its own client (LangChain's `ChatOpenAI(base_url=...)`, the Agents SDK) needs
a URL it can connect to, so LocalBackend starts this server the first time one is asked for:
uvicorn on 127.0.0.1, on a port the OS picks, in a daemon thread with its own event loop (the
engine hands results to any loop). Only this machine can connect, and every request must carry the
server's random key, so other local users cannot sample or read rollouts.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from hone.server.errors import error_response


class LoopbackServer:
    def __init__(self, app: ASGIApp, start_timeout_s: float = 30.0):
        self.api_key = "hone-local-" + secrets.token_hex(16)
        config = uvicorn.Config(_KeyGate(app, self.api_key), host="127.0.0.1", port=0, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="hone-loopback", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("hone's loopback server did not start on 127.0.0.1; see the log above")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


class _KeyGate:
    """Answers 401 to any HTTP request without `Authorization: Bearer KEY`."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not hmac.compare_digest(dict(scope["headers"]).get(b"authorization", b""), self.expected):
            message = "this is hone's in-process server: send the API key its capture gave you (rollout.api_key)"
            response: Any = error_response(401, message, "authentication_error", code="invalid_api_key")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
