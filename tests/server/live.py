"""Serve an ASGI app with a real uvicorn on a free 127.0.0.1 port, in a thread of this process:
real HTTP and keep-alive, without the start-up of a `hone serve` subprocess."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The base URL of `app` served on 127.0.0.1 until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def local_port(response: httpx.Response) -> int:
    """The client-side port of the connection that carried `response`: the same port on two
    responses means the server kept the connection open between them."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]
