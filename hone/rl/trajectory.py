"""Trajectories: what one rollout did, kept token-exact for training.

A rollout talks to the model through an OpenAI-style client. Every chat completion hone serves
carries, besides the usual fields, the prompt's token ids (`prompt_token_ids` on the response)
and each choice's sampled token ids (`token_ids`) with their fp32 logprobs (`token_logprobs`). `Trajectory.add_response`
keeps those ids as a `SampledTurn`, so training uses exactly what was sampled and never
re-tokenises the conversation.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from hone.types import FailureRecord


class SampledTurn(BaseModel):
    """One model call: the prompt as the sampler saw it, and what it drew."""

    prompt_tokens: list[int]
    completion_tokens: list[int]
    completion_logprobs: list[float]
    completion_forced: list[bool] | None = None  # per token: the only one a grammar allowed (not trained by default)
    finish_reason: str | None = None  # the sampler's "stop" or "length" (cut by max_tokens; health metrics count these)
    tool_call_error: str | None = None  # why the server rejected a tool-call attempt in this reply, if it did


class Trajectory(BaseModel):
    """One attempt at a task: the messages (for people and judges), the sampled turns (for training)."""

    messages: list[dict[str, Any]] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    turns: list[SampledTurn] = Field(default_factory=list)
    reward: float = 0.0
    metrics: dict[str, float] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    def add_response(self, response: Any, choice_index: int = 0) -> dict[str, Any]:
        """Record one chat completion (an `openai` ChatCompletion or its dict) and return the
        assistant message, in OpenAI dict form, ready to append to the next request's messages."""
        data = response if isinstance(response, dict) else response.model_dump()
        choice = data["choices"][choice_index]
        prompt_tokens = data.get("prompt_token_ids")
        token_ids = choice.get("token_ids")
        if prompt_tokens is None or token_ids is None:
            raise ValueError(
                "this response carries no token ids; trajectories need a hone endpoint "
                "(its responses include prompt_token_ids and token_ids)"
            )
        logprobs = choice.get("token_logprobs")
        if logprobs is None or len(logprobs) != len(token_ids):
            raise ValueError(f"response choice has {len(token_ids)} token ids but no matching token_logprobs")
        forced = choice.get("token_forced")
        if forced is not None and len(forced) != len(token_ids):
            raise ValueError(f"response choice has {len(token_ids)} token ids but {len(forced)} token_forced flags")
        self.turns.append(
            SampledTurn(
                prompt_tokens=list(prompt_tokens),
                completion_tokens=list(token_ids),
                completion_logprobs=logprobs,
                completion_forced=forced,
                finish_reason="length" if choice.get("finish_reason") == "length" else "stop",  # the sampler's: a parsed call ended too
                tool_call_error=choice.get("tool_call_error"),
            )
        )
        message = {k: v for k, v in choice["message"].items() if v is not None}
        message.setdefault("content", "")
        self.messages.append(message)
        return message

    @classmethod
    def from_rollout(cls, record: dict[str, Any]) -> "Trajectory":
        """The trajectory of a closed rollout's record (`hone.server.rollouts`): one turn per call, in
        order; the messages and tools of its last call, with that call's reply."""
        calls = record["calls"]
        turns = [
            SampledTurn(
                prompt_tokens=call["prompt_token_ids"],
                completion_tokens=call["token_ids"],
                completion_logprobs=call["token_logprobs"],
                completion_forced=call["token_forced"],
                finish_reason=call.get("finish_reason"),
            )
            for call in calls
        ]
        last = calls[-1] if calls else {"messages": [], "tools": None, "reply": None}
        messages = [*last["messages"], *([last["reply"]] if last["reply"] else [])]
        metadata = {
            "rollout_id": record["id"],
            "task_id": record.get("task_id"),
            "turns_bridged": record["turns_bridged"],
            "turns_broken": record["turns_broken"],
            **(record.get("metadata") or {}),
        }
        return cls(messages=messages, tools=last["tools"], turns=turns, metadata=metadata)

    def final_text(self) -> str:
        """The last assistant message's text, or '' if there is none."""
        for message in reversed(self.messages):
            if message.get("role") == "assistant":
                return message.get("content") or ""
        return ""


class TrajectoryGroup(BaseModel):
    """Attempts at the same task; advantages are computed within a group."""

    trajectories: list[Trajectory] = Field(default_factory=list)
    exceptions: list[FailureRecord] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def rewards(self) -> list[float]:
        return [t.reward for t in self.trajectories]
