"""hone's exception tree: every class answers with one HTTP status, and a client turns that status
back into the class (or the ancestor that status stands for)."""

from __future__ import annotations

import asyncio
import inspect

import httpx
import pytest
from fastapi import FastAPI

import hone.errors as errors
from hone.errors import HoneError, InvalidRequestError, error_class
from hone.server.errors import install_error_handlers

ALL = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, HoneError)]


def test_the_tree_has_every_class_hone_raises_on_purpose():
    names = {cls.__name__ for cls in ALL}
    assert {"RemoteError", "JudgeError", "ConflictError", "LimitError", "AuthenticationError", "CheckpointError"} <= names


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_each_error_is_answered_with_its_status_and_read_back_as_itself_or_its_status_class(cls):
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise cls("what went wrong, in one sentence")

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.get("/boom")

    response = asyncio.run(call())
    assert response.status_code == cls.http_status
    error = response.json()["error"]
    assert error["message"] == "what went wrong, in one sentence" and error["type"] == cls.error_type
    back = error_class(response.status_code)
    if cls.http_status >= 500:  # to a client, any 5xx is the server failing
        assert back is errors.RemoteError
    else:  # 400 stands for InvalidRequestError; HoneError, SequenceTooLongError and CheckpointError answer 400 too
        assert issubclass(cls, back) or (back is InvalidRequestError and cls.http_status == 400)


def test_statuses_a_server_may_send_map_to_one_class_each():
    assert error_class(404) is errors.ModelNotFoundError and error_class(409) is errors.ConflictError
    assert error_class(429) is errors.LimitError and error_class(401) is errors.AuthenticationError
    assert error_class(422) is InvalidRequestError and error_class(500) is errors.RemoteError and error_class(503) is errors.RemoteError
