import json
from dataclasses import dataclass, field

import httpx
import pytest

from hone.backends import LocalBackend

from .live import local_port, serving


@pytest.fixture(scope="module")
def backend():
    backend = LocalBackend()
    backend.add_model("tiny", "tiny")
    yield backend
    backend.close()


@dataclass
class Live:
    """One keep-alive client on a real uvicorn serving the backend; every answer must come on the
    connection the first one came on (a server that dropped it would make the client open another)."""

    client: httpx.Client
    ports: set[int] = field(default_factory=set)

    def post(self, body: dict | bytes) -> httpx.Response:
        content = body if isinstance(body, bytes) else _json_bytes(body)
        response = self.client.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
        self.ports.add(local_port(response))
        assert len(self.ports) == 1, f"the server dropped the connection before this answer: {response.text[:200]}"
        return response


def _json_bytes(body: dict) -> bytes:
    # json.dumps escapes lone surrogates and writes NaN, as a careless client would send them
    return json.dumps(body).encode("ascii")


@pytest.fixture(scope="module")
def live(backend):
    with serving(backend.app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield Live(client)
