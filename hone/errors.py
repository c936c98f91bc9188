"""hone's exceptions: one base class, translated at the boundaries.

    HoneError                     anything hone raises on purpose; its message is one sentence for a user
    ├── ModelNotFoundError        a model name, path or hub id that cannot be loaded
    ├── InvalidRequestError       a request that cannot be served as asked (maps to HTTP 400)
    │   └── SequenceTooLongError  a sequence longer than the configured maximum
    ├── TooManyFailuresError      a training step whose rollouts failed beyond the user's budget
    └── CheckpointError           a checkpoint that is missing or unreadable

A HoneError is a user's mistake or an environment's limit: print its message, no traceback.
Anything else that escapes is a bug in hone.
"""


class HoneError(Exception):
    """Base class for every error hone raises on purpose."""


class ModelNotFoundError(HoneError):
    """The model name, path or hub id cannot be loaded."""


class InvalidRequestError(HoneError):
    """A request that cannot be served as asked; the server answers it with a 4xx."""

    def __init__(self, message: str, param: str | None = None, status_code: int = 400):
        super().__init__(message)
        self.param = param
        self.status_code = status_code


class SequenceTooLongError(InvalidRequestError):
    """A sequence longer than the configured maximum, caught before any compute."""


class TooManyFailuresError(HoneError):
    """More rollouts failed than the user's failure budget allows."""


class CheckpointError(HoneError):
    """A checkpoint that is missing or cannot be read."""
