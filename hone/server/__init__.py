"""The HTTP face of a Sampler: OpenAI-compatible routes, error mapping, and an in-process client.

A thin, stateless route map. It renders chat messages to tokens and parses replies (through
`hone.chat`) and asks a `Sampler` for everything else. It knows nothing of backends, trainers or
tenants: the multi-tenant host of `hone serve --home` is `hone.service`, built on top of this.
"""

from hone.server.app import create_app
from hone.server.sampler import Sampler

__all__ = ["Sampler", "create_app"]
