"""Continue a sampled conversation token for token.

When an agent sends the next turn of a conversation, its messages repeat the model's earlier reply,
re-serialised by the client: tool-call arguments re-dumped, ids renamed, whitespace stripped.
Rendering that history again gives tokens the model never sampled, so the conversation would train
as two sequences, and the second would hold a reply the model did not write. Instead the new
prompt is the earlier prompt and its sampled completion, verbatim, then a *bridge*: the text the
chat template puts after an assistant turn (closing it, unless the sampled end-of-turn token did),
then the template's text for the messages that came after the reply, up to the generation prompt.

The bridge is read off the template itself: the earlier messages are rendered with a placeholder
reply, and the text after the placeholder is what closes a turn and opens the next. It applies
only when the template renders the reply where the generation prompt ended and leaves the earlier
text unchanged (ChatML, Qwen, SmolLM and the like); otherwise the turn is rendered afresh, and the
caller counts the break.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from hone.chat.render import RenderedPrompt, template_text

PLACEHOLDER = "\u2063hone-reply\u2063"  # text no template writes itself; it stands for the sampled reply


@dataclass(frozen=True)
class SampledCall:
    """What the bridge needs of an earlier call of the conversation."""

    prompt: RenderedPrompt  # its prompt, with what the template was given
    reply: dict[str, Any]  # the reply as the client was sent it (an OpenAI assistant message)
    completion_tokens: list[int]  # what was sampled, verbatim
    finish_reason: str = "stop"  # "stop": the model ended its turn (or a stop string did); "length": cut


def extends(later: RenderedPrompt, earlier: SampledCall) -> bool:
    """Whether `later`'s messages begin with all of `earlier`'s prompt and then more (the reply, at
    least): a later turn of that conversation (its reply may still have been edited; see
    `bridged_tokens`)."""
    count = len(earlier.prompt.messages)
    return later.tools == earlier.prompt.tools and len(later.messages) > count and later.messages[:count] == earlier.prompt.messages


def bridged_tokens(tokenizer: PreTrainedTokenizerBase, later: RenderedPrompt, earlier: SampledCall) -> list[int] | None:
    """The prompt tokens of `later` continuing `earlier`'s sampled tokens, or None where no bridge
    applies: the client changed the reply, or the template does not render turns as a plain
    continuation. (A request that ends with the reply itself asks for another assistant turn
    after it: the bridge closes the reply and opens that turn.)"""
    if not extends(later, earlier):
        return None
    count = len(earlier.prompt.messages)
    if later.messages[count] != earlier.prompt.history_message(earlier.reply):
        return None
    tools = earlier.prompt.tools
    stand_in = {"role": "assistant", "content": PLACEHOLDER}
    with_reply = template_text(tokenizer, [*earlier.prompt.messages, stand_in], tools, generation_prompt=False)
    opening = template_text(tokenizer, earlier.prompt.messages, tools, generation_prompt=True)
    everything = template_text(tokenizer, [*earlier.prompt.messages, stand_in, *later.messages[count + 1 :]], tools, generation_prompt=True)
    if with_reply is None or opening is None or everything is None:
        return None
    at = with_reply.find(PLACEHOLDER)
    if at < 0 or with_reply[:at] != opening or not everything.startswith(with_reply):
        return None  # the template does not continue the generation prompt with the reply
    turn_end = with_reply[at + len(PLACEHOLDER) :]
    closing = _closing(tokenizer, earlier, turn_end)
    if closing is None:
        return None
    bridge = closing + everything[len(with_reply) :]
    return [*earlier.prompt.tokens, *earlier.completion_tokens, *tokenizer.encode(bridge, add_special_tokens=False)]


def _closing(tokenizer: PreTrainedTokenizerBase, earlier: SampledCall, turn_end: str) -> str | None:
    """What still closes the sampled turn: the template's turn end, less the end-of-turn token the
    model sampled itself. None when the model ended with a special token the template does not
    end a turn with."""
    tokens = earlier.completion_tokens
    if earlier.finish_reason != "stop" or not tokens or tokens[-1] not in tokenizer.all_special_ids:
        return turn_end  # cut by the length limit or a stop string: the turn was never closed
    eos_text = tokenizer.decode(tokens[-1:], skip_special_tokens=False)
    return turn_end[len(eos_text) :] if turn_end.startswith(eos_text) else None
