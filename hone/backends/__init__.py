"""Backends: where models live and run. `LocalBackend` runs them in this process; a remote
backend (later) speaks to `hone serve` over HTTP with the same interface.

Knows models, engines and trainers; knows nothing about rollouts, rewards or environments.
"""

from hone.backends.local import LocalBackend

__all__ = ["LocalBackend"]
