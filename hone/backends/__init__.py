"""Backends: where models live and run. `LocalBackend` runs them in this process; `RemoteBackend`
speaks to `hone serve` over HTTP. Both are a `Backend` (base.py): the same calls, the same types.

Knows models, engines and trainers; knows nothing about rollouts, rewards, environments or tenants.
"""

from hone.backends.base import Backend
from hone.backends.local import LocalBackend
from hone.backends.remote import RemoteBackend

__all__ = ["Backend", "LocalBackend", "RemoteBackend"]
