"""The HTTP face of a backend: OpenAI-compatible chat routes (and, later, training routes).

A thin route map over the backend interface. It renders chat messages to tokens and parses
replies (through `hone.chat`), and it calls the backend for everything else; it holds no model
state of its own.
"""

from hone.server.app import create_app

__all__ = ["create_app"]
