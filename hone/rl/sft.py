"""Supervised fine-tuning on demonstrations: a warm start before RL (the SFT → RL recipe).

    demos = [Demonstration(messages=[...], tools=TOOLS, stop=["</tool_call>"]), ...]
    metrics = await supervised_warm_start(model.backend, model.name, None, demos, epochs=3, learning_rate=1e-4)

A demonstration is a conversation as an agent would have sent it to hone's chat endpoint: OpenAI
messages ending with an assistant message, the tools offered, and the request's `stop` strings.
Each assistant message is trained as the reply the sampler would have had to produce there:

- its prompt is exactly what the server samples from for the messages before it
  (`hone.chat.render.render_prompt`, generation prompt included);
- its completion is the template's text for the message (tool calls written in the prompt's call
  format, as history renders them), cut where the sampler stops: after the end-of-turn token
  (ChatML's `<|im_end|>`; the template's newline after it is not sampled), or, where a `stop`
  string occurs first, after the token that completes it. So under `stop=["</tool_call>"]` a tool
  call trains `<tool_call>{...}</tool_call>` and no end-of-turn token: the model must write the
  stop text for the sampler to stop, but nothing after it is ever sampled. (The server cuts the
  stop text from the reply it returns; the tokens before it are these tokens exactly.)

Later turns see earlier replies as a fresh request renders them (stop text included), as agents
that resend the history, like the inbox agent, are served; a captured rollout's bridge
(`hone.chat.bridge`) instead continues a cut reply without its stop text.

Turns chain into one sequence where the next prompt begins with the sequence so far, as sampled
turns do (`hone.rl.datums`); weight 1 on completions, 0 on prompts, tool results and the template's
text between turns. No sampler logprobs or advantages: the loss is `cross_entropy`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field, model_validator

from hone.backends.base import Backend
from hone.chat.render import render_prompt, template_text
from hone.errors import ConflictError
from hone.rl.datums import merged_sequences  # the chaining rule sampled turns train by
from hone.rl.trajectory import SampledTurn
from hone.types import AdamParams, Datum

ToolChoice = str | dict[str, Any]  # "auto", "none", "required", or {"type": "function", ...}


class Demonstration(BaseModel):
    """One conversation to imitate, as the agent's requests carried it."""

    messages: list[dict[str, Any]]  # OpenAI messages, ending with the assistant message to imitate
    tools: list[dict[str, Any]] | None = None  # OpenAI function schemas offered on every turn
    # one for every turn, or a list with one per assistant message ("none" renders no tools)
    tool_choice: ToolChoice | list[ToolChoice] = "auto"
    stop: list[str] = Field(default_factory=list)  # the requests' stop strings

    @model_validator(mode="after")
    def _check(self) -> Demonstration:
        if not self.messages or self.messages[-1].get("role") != "assistant":
            raise ValueError("a demonstration must end with an assistant message")
        if self.messages[0].get("role") == "assistant":
            raise ValueError("a demonstration must open with a message the assistant answers, not an assistant message")
        turns = len(self.assistant_indices())
        if isinstance(self.tool_choice, list) and len(self.tool_choice) != turns:
            raise ValueError(f"tool_choice lists {len(self.tool_choice)} choices for {turns} assistant messages")
        return self

    def assistant_indices(self) -> list[int]:
        return [k for k, m in enumerate(self.messages) if m.get("role") == "assistant"]

    def tool_choice_of(self, turn: int) -> ToolChoice:
        return self.tool_choice[turn] if isinstance(self.tool_choice, list) else self.tool_choice


# --------------------------------------------------------------------------- datums
def demonstration_datums(tokenizer: Any, demo: Demonstration) -> list[Datum]:
    """The demonstration's training sequences: its assistant replies weighted 1, as the sampler
    would produce them (see the module docstring). ValueError where the template cannot say what
    that is; InvalidRequestError (naming the field) for messages the server would refuse."""
    turns = [_demonstrated_turn(tokenizer, demo, k, demo.tool_choice_of(turn)) for turn, k in enumerate(demo.assistant_indices())]
    return [Datum.from_sequence(tokens, weights) for tokens, weights, _ in merged_sequences(turns, train_forced_tokens=False)]


def _demonstrated_turn(tokenizer: Any, demo: Demonstration, k: int, tool_choice: ToolChoice) -> SampledTurn:
    """Assistant message `k` as a sampled turn: the server's prompt, and the reply's tokens."""
    prompt = render_prompt(tokenizer, demo.messages[:k], tools=demo.tools, tool_choice=tool_choice)
    reply = prompt.history_message(demo.messages[k])
    text = template_text(tokenizer, [*prompt.messages, reply], prompt.tools, generation_prompt=False)
    if text is None:
        raise ValueError(f"the chat template rejected the conversation up to assistant message {k}")
    full = tokenizer.encode(text, add_special_tokens=False)  # as apply_chat_template(tokenize=True) does
    if full[: len(prompt.tokens)] != prompt.tokens:
        raise ValueError(
            f"the chat template is not prefix-stable: rendering assistant message {k} after its prompt changes the "
            "prompt's tokens, so no sampled reply could have produced this conversation"
        )
    completion = _sampled_part(tokenizer, full[len(prompt.tokens) :], demo.stop, k)
    return SampledTurn(prompt_tokens=prompt.tokens, completion_tokens=completion, completion_logprobs=[0.0] * len(completion))


def _sampled_part(tokenizer: Any, turn: list[int], stop: Sequence[str], k: int) -> list[int]:
    """The leading part of `turn` (the template's tokens for the reply, after the generation
    prompt) that the sampler produces before it stops: through the end-of-turn token, the turn's
    last special token; or through the token that completes a stop string, where one comes first."""
    special = set(tokenizer.all_special_ids)
    end = max((i + 1 for i, t in enumerate(turn) if t in special), default=None)
    searched = turn if end is None else turn[:end]

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)  # as the engine reads stop strings

    if stop and any(s in decode(searched) for s in stop):
        cut = next(i for i in range(1, len(searched) + 1) if any(s in decode(searched[:i]) for s in stop))
        if decode(searched[cut:]).strip():
            raise ValueError(
                f"assistant message {k} goes on after a stop string ({list(stop)}); the sampler would stop there, "
                "so this reply could never be sampled (write one tool call per message under stop=['</tool_call>'])"
            )
        return searched[:cut]
    if end is None:
        raise ValueError(
            "the chat template ends an assistant turn with no special token, so there is no end-of-turn token "
            f"the sampler would stop on (assistant message {k})"
        )
    return searched


# --------------------------------------------------------------------------- training
async def supervised_warm_start(
    backend: Backend,
    model_name: str,
    tokenizer: Any | None,
    demos: Sequence[Demonstration],
    *,
    epochs: int = 1,
    learning_rate: float = 1e-4,
    batch_size: int = 8,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Fine-tune `model_name` on `demos` with cross-entropy: each epoch, the demonstrations in a
    seeded shuffle, `batch_size` per optimizer step. Returns each step's metrics (`loss`,
    `tokens` trained, `sequences`, ... and the optimizer's as `optim/...`). `tokenizer` None:
    the backend's for the model."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be at least 1 (got {epochs} and {batch_size})")
    tokenizer = backend.tokenizer(model_name) if tokenizer is None else tokenizer
    datums = [demonstration_datums(tokenizer, demo) for demo in demos]  # every demonstration checked before any step
    adam = AdamParams(learning_rate=learning_rate)
    order = list(range(len(datums)))
    rng = random.Random(seed)
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            batch = [d for i in order[start : start + batch_size] for d in datums[i]]
            try:
                loss_metrics, optim_metrics = await backend.forward_backward_optim_step(model_name, batch, "cross_entropy", None, adam)
            except ConflictError:  # a server restarted between the two calls and lost the gradients: recompute them, once
                loss_metrics, optim_metrics = await backend.forward_backward_optim_step(model_name, batch, "cross_entropy", None, adam)
            history.append(
                {
                    "step": float(len(history)),
                    "epoch": float(epoch),
                    "demonstrations": float(min(batch_size, len(order) - start)),
                    **{k: float(v) for k, v in loss_metrics.items()},
                    **{f"optim/{k}": float(v) for k, v in optim_metrics.items()},
                }
            )
    return history
