"""OpenAI-shaped error responses, and the handlers that translate exceptions into them."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hone.errors import HoneError, InvalidRequestError, ModelNotFoundError

log = logging.getLogger("hone.server")


def error_response(status: int, message: str, type_: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": type_, "param": param, "code": code}},
    )


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(location) or None
    detail = first.get("msg", "invalid request")
    if param:
        return f"invalid value for '{param}': {detail}", param
    return f"invalid request body: {detail}", None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(400, message, "invalid_request_error", param=param)

    @app.exception_handler(InvalidRequestError)
    async def _invalid_request(_: Request, exc: InvalidRequestError) -> JSONResponse:
        return error_response(exc.status_code, str(exc), "invalid_request_error", param=exc.param)

    @app.exception_handler(ModelNotFoundError)
    async def _missing_model(_: Request, exc: ModelNotFoundError) -> JSONResponse:
        return error_response(404, str(exc), "invalid_request_error", param="model", code="model_not_found")

    @app.exception_handler(HoneError)
    async def _hone_error(_: Request, exc: HoneError) -> JSONResponse:
        return error_response(400, str(exc), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(exc.status_code, str(exc.detail), type_)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error while serving a request")  # a bug in hone: keep the traceback in the log
        return error_response(500, "internal error in hone; the server log has the details", "server_error")
