"""OpenAI clients that reach an ASGI app in this process: no port, no network.

The async client uses httpx's ASGI transport directly. The sync client runs the app on a
private event loop in a daemon thread and hands each request to it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import openai

ORIGIN = "http://hone.local"
BASE_URL = ORIGIN + "/v1"


def async_client(app: Any, api_key: str = "local", path: str = "/v1", **kwargs: Any) -> openai.AsyncOpenAI:
    """`path`: where the client's routes start (`/v1`, or a rollout's `/v1/rollouts/ID`)."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ORIGIN + path, timeout=None)
    return openai.AsyncOpenAI(base_url=ORIGIN + path, api_key=api_key, http_client=http, **kwargs)


def sync_client(app: Any, api_key: str = "local", path: str = "/v1", **kwargs: Any) -> openai.OpenAI:
    http = httpx.Client(transport=_SyncASGITransport(app), base_url=ORIGIN + path, timeout=None)
    return openai.OpenAI(base_url=ORIGIN + path, api_key=api_key, http_client=http, **kwargs)


class _SyncASGITransport(httpx.BaseTransport):
    def __init__(self, app: Any):
        self._inner = httpx.ASGITransport(app=app)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hone-asgi", daemon=True)
        self._thread.start()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        future = asyncio.run_coroutine_threadsafe(self._send(request, body), self._loop)
        status, headers, content = future.result()
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def _send(self, request: httpx.Request, body: bytes) -> tuple[int, list, bytes]:
        async_request = httpx.Request(request.method, request.url, headers=request.headers, content=body)
        response = await self._inner.handle_async_request(async_request)
        content = await response.aread()
        return response.status_code, list(response.headers.multi_items()), content

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
