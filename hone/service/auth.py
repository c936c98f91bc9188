"""The service's gate: API keys, request body size, and each tenant's requests in flight.

One pure ASGI middleware, in front of every route when the app runs as a service:
1. `GET /health` passes untouched; every other request needs `Authorization: Bearer KEY` for a
   key that exists and is not revoked (else 401). The tenant goes into `request.state.tenant`.
   Keys are looked up in SQLite off the event loop, and a key seen in the last second is not
   looked up again (so a revoked key stops working within a second). A *scoped* key (what
   `scoped_key` recognises: a rollout's key, handed to agent code) acts for its tenant on the
   paths under its prefix only; elsewhere it is a 403.
2. A tenant with `max_concurrent_requests` requests already in flight gets a 429.
3. The body is read here, counting bytes, before the app sees any of it: a declared
   Content-Length over the limit, or more bytes actually streamed than the limit, is a 413 and
   the app never runs. The app then gets the body replayed from memory.

Knows keys and byte counts; knows nothing of models or routes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from typing import Any, Awaitable, Callable

from hone.service.store import Store, Tenant, hash_key

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/health"})
AUTH_CACHE_S = 1.0  # how long a looked-up key is trusted before SQLite is asked again


class ServiceMiddleware:
    def __init__(
        self,
        app: Any,
        store: Store,
        max_body_bytes: int,
        max_concurrent_requests: int,
        scoped_key: Callable[[str], tuple[str, str] | None] | None = None,  # key -> (tenant name, path prefix)
    ):
        self.app = app
        self.scoped_key = scoped_key
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.max_concurrent_requests = max_concurrent_requests
        self.in_flight: dict[int, int] = defaultdict(int)
        self._known: dict[str, tuple[Tenant | None, float]] = {}  # key digest -> (tenant or None, looked up at)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        # 1) who is asking
        key = _bearer(scope)
        scope_of_key = self.scoped_key(key) if key and self.scoped_key is not None else None
        if scope_of_key is not None:
            tenant_name, prefix = scope_of_key
            if not scope["path"].startswith(prefix):
                message = f"this key belongs to one rollout and reaches only {prefix}...; use the tenant's API key for anything else"
                await _error(send, 403, message, "permission_error", "key_out_of_scope")
                return
            tenant = await asyncio.to_thread(self.store.tenant, tenant_name)
        else:
            tenant = await self._authenticate(key) if key else None
        if tenant is None:
            message = (
                "invalid API key: it is unknown or has been revoked"
                if key
                else "missing API key: send 'Authorization: Bearer KEY' (create one with `hone keys create --tenant NAME`)"
            )
            await _error(send, 401, message, "authentication_error", "invalid_api_key", [(b"www-authenticate", b"Bearer")])
            return
        # 2) how much they already have in flight
        if self.in_flight[tenant.id] >= self.max_concurrent_requests:
            await _error(
                send, 429,
                f"too many requests in flight for this tenant (the limit is {self.max_concurrent_requests}); retry when some finish",
                "rate_limit_error", "too_many_concurrent_requests",
            )  # fmt: skip
            return
        self.in_flight[tenant.id] += 1
        try:
            # 3) the body, whole and within the limit, before the app sees any of it
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body_bytes:
                await _error(send, 413, self._too_large(), "invalid_request_error", "request_too_large")
                return
            body, too_large = await self._read_body(receive)
            if too_large:
                await _error(send, 413, self._too_large(), "invalid_request_error", "request_too_large")
                return
            scope.setdefault("state", {})["tenant"] = tenant
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.in_flight[tenant.id] -= 1

    async def _authenticate(self, key: str) -> Tenant | None:
        digest = hash_key(key)  # the cache holds digests, never keys
        now = time.monotonic()
        known = self._known.get(digest)
        if known is not None and now - known[1] < AUTH_CACHE_S:
            return known[0]
        tenant = await asyncio.to_thread(self.store.authenticate, key)
        if len(self._known) > 10_000:  # a flood of made-up keys must not grow this without bound
            self._known.clear()
        self._known[digest] = (tenant, now)
        return tenant

    def _too_large(self) -> str:
        return f"the request body is larger than this server's limit of {self.max_body_bytes} bytes; send less per request"

    async def _read_body(self, receive: Receive) -> tuple[bytes, bool]:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client hung up
                return b"".join(chunks), False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() or None if scheme.lower() == "bearer" else None
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed header before we see it; count the bytes anyway
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would

    return replayed


async def _error(send: Send, status: int, message: str, type_: str, code: str, headers: list | None = None) -> None:
    body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())] + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})
