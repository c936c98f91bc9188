"""Chat formats: OpenAI-style messages and tools to prompt token ids, and generated text back
to content and tool calls.

Knows tokenizers and chat templates; knows nothing about sampling or training. The engine
below it sees only token ids; the server above it sees only OpenAI-shaped dicts.
"""

from hone.chat.render import RenderedPrompt, render_prompt
from hone.chat.toolcalls import ParsedReply, parse_reply

__all__ = ["ParsedReply", "RenderedPrompt", "parse_reply", "render_prompt"]
