"""Chat formats: OpenAI-style messages and tools to prompt token ids, and generated text back
to content and tool calls.

Knows tokenizers and chat templates; knows nothing about sampling or training. The engine
below it sees only token ids; the server above it sees only OpenAI-shaped dicts. `schema`
checks a request's shape up front (pydantic), so rendering never meets a malformed one.
"""

from hone.chat.render import RenderedPrompt, render_chat, render_prompt
from hone.chat.schema import ChatInput, describe_errors
from hone.chat.toolcalls import ParsedReply, parse_reply

__all__ = ["ChatInput", "ParsedReply", "RenderedPrompt", "describe_errors", "parse_reply", "render_chat", "render_prompt"]
