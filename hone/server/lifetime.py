"""How long a request's work may run: until its client hangs up, or past the server's time limit.

    samples = await while_client_waits(request, sampler.sample(...))

Either way the work is cancelled, which cancels its engine request (its rows leave the batch at the
next decode step). A hang-up is answered 499 (to a closed connection: nobody reads it), a time-out
504 with one sentence naming the limit (`RequestTimeoutError`); `install_error_handlers` does both.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, TypeVar

from fastapi import Request

from hone.errors import RequestTimeoutError

log = logging.getLogger("hone.server")
T = TypeVar("T")


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


async def while_client_waits(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, unless the client hangs up first (ClientGone) or the app's
    `state.request_timeout_s` passes (RequestTimeoutError); then, or if this route is cancelled
    itself, `work` is cancelled."""
    timeout_s = getattr(request.app.state, "request_timeout_s", None)
    sample = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({sample, gone}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        sample.cancel()  # a no-op once it is done
    if sample in done:
        return sample.result()
    if gone in done:
        gone.result()  # an error reading the connection is a bug, not a hang-up
        log.info("client disconnected; its sample was cancelled")
        raise ClientGone
    log.warning("a request ran past the time limit of %g s; its sample was cancelled", timeout_s)
    raise RequestTimeoutError(
        f"the request ran past this server's time limit of {timeout_s:g} s and was cancelled; "
        "ask for fewer tokens (max_tokens, n) or raise the limit (hone serve --request-timeout-s)"
    )


async def _disconnect(request: Request) -> None:
    """Returns when the client hangs up. The body has been read whole, so the next ASGI message is
    `http.disconnect` (uvicorn, httpx's ASGI transport and the service's body replay all block for it)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
