"""Bounds on the work one request may ask for, shared by the chat and the responses routes; over
one, the answer is a 400 naming the parameter."""

from __future__ import annotations

from typing import Any

from hone.errors import InvalidRequestError

MAX_N = 64
MAX_TOKENS = 32_768  # per choice; the engine's max_seq_len is usually the tighter bound
MAX_TOTAL_TOKENS = 64 * 4096  # n × max_tokens: at most 262,144 tokens sampled for one request
MAX_STOPS = 16
MAX_STOP_CHARS = 256  # stop strings are matched against the decoded tail on every step
MAX_TOP_K = 1 << 20  # beyond any vocabulary (the sampler clamps to it); larger would overflow its tensors
MAX_TOP_LOGPROBS = 20
SEED_LIMIT = 2**63  # seeds are 0 <= seed < 2**63, as the engine's own
MAX_LOGIT_BIAS_ENTRIES = 1024


def refuse_unsupported(extra: dict[str, Any], refused: dict[str, tuple[tuple[Any, ...], str]]) -> None:
    """A 400 naming the first parameter of `refused` (name -> (its no-op values, the sentence)) that
    `extra` (a request's undeclared fields) sets to something else. The no-op values pass: clients
    send them as defaults. None entries of an object are dropped before comparing."""
    for name, (no_ops, sentence) in refused.items():
        value = extra.get(name)
        if isinstance(value, dict):
            value = {key: v for key, v in value.items() if v is not None}
        if value not in no_ops:
            raise InvalidRequestError(sentence, param=name)
