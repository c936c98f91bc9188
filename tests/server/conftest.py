import pytest

from hone.backends import LocalBackend


@pytest.fixture(scope="module")
def backend():
    backend = LocalBackend()
    backend.add_model("tiny", "tiny")
    yield backend
    backend.close()
