"""Backends: where models live and run. `LocalBackend` runs them in this process; `RemoteBackend`
speaks to `hone serve` over HTTP with the same interface (docs/serve-api.md).

Knows models, engines and trainers; knows nothing about rollouts, rewards or environments.
"""

from hone.backends.local import LocalBackend
from hone.backends.remote import RemoteBackend

__all__ = ["LocalBackend", "RemoteBackend"]
