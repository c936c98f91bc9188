"""hone's exceptions: one tree, each class one HTTP status, translated at the boundaries.

    HoneError                       anything hone raises on purpose; its message is one sentence   400
    ├── InvalidRequestError         a request that cannot be served as asked                      400
    │   ├── SequenceTooLongError    a sequence longer than the configured maximum                 400
    │   ├── ConflictError           the request clashes with the model's state (exists, no grads) 409
    │   ├── RequestTooLargeError    a body or a unit of work over the server's limit              413
    │   └── LimitError              a tenant's limit that waiting will not lift (models)          429
    ├── AuthenticationError         a missing, unknown or revoked API key                         401
    ├── ModelNotFoundError          a model name, path or hub id that cannot be found or loaded   404
    ├── CheckpointError             a checkpoint that is missing, unreadable or of another model  400
    ├── TooManyFailuresError        a step whose rollouts failed beyond the user's budget         500
    ├── RequestTimeoutError         a request's work ran past the server's time limit             504
    ├── JudgeError                  the judge endpoint gave no usable answer                      502
    └── RemoteError                 hone serve could not be reached, or failed                    502

The server answers a HoneError with `http_status` and its sentence (`hone.server.errors`);
`RemoteBackend` turns a status back into the class `error_class(status)` names. A HoneError is
a user's mistake or an environment's limit: print its message, no traceback. Anything else that
escapes is a bug in hone.
"""

from __future__ import annotations

from typing import Any


class HoneError(Exception):
    """Base class for every error hone raises on purpose."""

    http_status = 400  # a HoneError of no narrower class is the caller's to fix
    error_type = "invalid_request_error"  # OpenAI's error.type for this status
    code: str | None = None  # OpenAI's error.code, where one says more than the status


class InvalidRequestError(HoneError):
    """A request that cannot be served as asked; `param` names the field at fault, if one is."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param

    @property
    def status_code(self) -> int:
        return self.http_status


class SequenceTooLongError(InvalidRequestError):
    """A sequence longer than the configured maximum, caught before any compute."""


class ConflictError(InvalidRequestError):
    """The request clashes with the model's current state: a name that exists, no gradients to apply."""

    http_status = 409


class RequestTooLargeError(InvalidRequestError):
    """A request body, or the work one request asks for, over the server's limit."""

    http_status = 413


class LimitError(InvalidRequestError):
    """A tenant's limit that waiting will not lift (models per tenant). Its type stays
    invalid_request_error so clients do not retry it; the gate's 429 for requests in flight is a
    rate_limit_error, which they do."""

    http_status = 429


class AuthenticationError(HoneError):
    """A missing, unknown or revoked API key."""

    http_status = 401
    error_type = "authentication_error"

    def __init__(self, message: str, status_code: int | None = 401):
        super().__init__(message)
        self.status_code = status_code


class ModelNotFoundError(HoneError):
    """The model name, path or hub id cannot be found or loaded."""

    http_status = 404


class CheckpointError(HoneError):
    """A checkpoint that is missing, cannot be read, or was saved by a differently configured model."""


class TooManyFailuresError(HoneError):
    """More rollouts failed than the user's failure budget allows."""

    http_status = 500
    error_type = "server_error"


class RequestTimeoutError(HoneError):
    """A request's work ran past the server's time limit and was cancelled; asking again costs as long."""

    http_status = 504
    error_type = "server_error"
    code = "request_timeout"


class JudgeError(HoneError):
    """The judge gave no usable answer within its retries (or cannot be reached).

    `result` holds what the failed judging cost (a hone.rewards.JudgeResult: calls, retries, tokens, seconds)."""

    http_status = 502
    error_type = "server_error"

    def __init__(self, message: str, result: Any = None):
        super().__init__(message)
        self.result = result


class RemoteError(HoneError):
    """hone serve could not be reached, kept failing, or answered with a server error."""

    http_status = 502
    error_type = "server_error"

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code  # what the server answered; None: no answer came back


# the class a client raises for a status it was answered with; other 4xx are InvalidRequestError
_BY_STATUS: dict[int, type[HoneError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    404: ModelNotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    429: LimitError,
}


def error_class(status: int) -> type[HoneError]:
    """The error a client raises for an HTTP error `status` (4xx by meaning, 5xx: RemoteError)."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return InvalidRequestError if 400 <= status < 500 else RemoteError
