"""One real `hone serve --home` process for the remote tests, and a fresh tenant key per test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from hone.backends.remote import RemoteBackend, RetryPolicy

from ..serving import new_tenant_key, start_hone_serve_home

FAST_RETRY = RetryPolicy(attempts=8, backoff_s=0.1, max_backoff_s=1.0)


@dataclass
class Service:
    home: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def new_key(self, tenant: str | None = None) -> str:
        return new_tenant_key(self.home, tenant)

    def backend(self, key: str | None = None, url: str | None = None) -> RemoteBackend:
        return RemoteBackend(url or self.url, key or self.new_key(), retry=FAST_RETRY)


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    home = tmp_path_factory.mktemp("hone-home")
    process, port = start_hone_serve_home(home)
    yield Service(home, port)
    process.terminate()
    process.wait(timeout=30)
