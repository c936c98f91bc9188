"""OpenAI-shaped error responses, and the handlers that translate exceptions into them.

Every error is `{"error": {"message", "type", "param", "code"}}`. A 4xx message is one sentence
naming the parameter. An exception nobody expected is a JSON 500, and the connection stays
usable: the client's next request on it is served.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hone.chat import describe_errors
from hone.errors import HoneError, LimitError, ModelNotFoundError, RequestTimeoutError
from hone.server.lifetime import ClientGone

log = logging.getLogger("hone.server")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that hung up

BUG_MESSAGE = "internal error in hone; the server log has the details"


def error_response(status: int, message: str, type_: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    message, param = _printable(message), _printable(param)  # an echoed lone surrogate cannot be encoded as UTF-8
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": type_, "param": param, "code": code}},
    )


def _printable(text: str | None) -> str | None:
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = list(exc.errors())
    in_body = [e for e in errors if tuple(e.get("loc", ()))[:1] == ("body",)]
    if in_body and in_body[0].get("type") == "json_invalid":
        detail = (in_body[0].get("ctx") or {}).get("error", "it cannot be parsed")
        return f"the request body is not valid JSON: {detail}", None
    if in_body:  # named as OpenAI does, from the body down: `tools[0].function.parameters`
        return describe_errors([{**e, "loc": tuple(e["loc"])[1:]} for e in in_body], exc.body)
    first = errors[0] if errors else {}
    param = ".".join(str(p) for p in first.get("loc", ())) or None  # a path or query parameter
    return f"invalid value for '{param}': {first.get('msg', 'invalid request')}", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(400, message, "invalid_request_error", param=param)

    @app.exception_handler(ModelNotFoundError)
    async def _missing_model(_: Request, exc: ModelNotFoundError) -> JSONResponse:
        return error_response(exc.http_status, str(exc), exc.error_type, param="model", code="model_not_found")

    @app.exception_handler(HoneError)
    async def _hone_error(_: Request, exc: HoneError) -> JSONResponse:
        """Each class of hone's tree has its own status (hone/errors.py); the sentence is the message."""
        response = error_response(exc.http_status, str(exc), exc.error_type, param=getattr(exc, "param", None), code=exc.code)
        if isinstance(exc, (RequestTimeoutError, LimitError)):
            # the openai client would resend it twice (for as long again, or into the same limit)
            response.headers["x-should-retry"] = "false"
        return response

    @app.exception_handler(ClientGone)
    async def _client_gone(_: Request, exc: ClientGone) -> Response:
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # to a closed connection: nobody reads it

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(exc.status_code, str(exc.detail), type_)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        # reached only by an error in a middleware outside CatchBugs; Starlette re-raises after
        # this answer, so that connection is closed
        log.exception("unhandled error while serving a request")
        return error_response(500, BUG_MESSAGE, "server_error")

    app.add_middleware(CatchBugs)


class WatchedSend:
    """An ASGI `send` that notes whether the response has started: after that, no other answer can follow."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)


class CatchBugs:
    """Answer an exception that escaped every route handler with a JSON 500, and swallow it.

    Starlette's handler for `Exception` answers and then re-raises, so the server sees the error:
    uvicorn closes the keep-alive connection and httpx's ASGI transport raises in the client.
    Here the error ends with the answer. Once a response has started (a stream), no valid answer
    can follow; then the error goes on up and the connection is closed, as it must be."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watched = WatchedSend(send)
        try:
            await self.app(scope, receive, watched)
        except Exception:
            if watched.started:
                raise
            log.exception("unhandled error while serving a request")  # a bug in hone: keep the traceback in the log
            await error_response(500, BUG_MESSAGE, "server_error")(scope, receive, send)

