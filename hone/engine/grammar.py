"""Grammar-constrained decoding: which tokens each constrained row may draw next.

A grammar is llguidance's text form (a Lark-like grammar, which may embed JSON schemas with
`%json {...}`); `hone.chat.grammar` writes the ones chat requests need. llguidance was chosen over
xgrammar and outlines-core by measured mask cost on this project's CPUs (bench/grammar_masks.py).

How the engine uses it:
1. `compile` checks a request's grammar once, before any compute (a bad one is a 400 naming it);
   each of the request's rows then matches on its own copy.
2. Every step, `allowed` computes the next-token masks of all constrained rows in one call
   (llguidance fills them in parallel) and unpacks them to a boolean (R, V) tensor.
3. The drawn token is fed back with `advance`. A row whose mask allows exactly one token had that
   token forced: it is reported as forced, and trainers leave it out of the loss by default.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import llguidance
import llguidance.hf
import torch

from hone.errors import InvalidRequestError

MAX_GRAMMAR_CHARS = 1 << 20  # larger grammars are refused before compiling
_BITS = torch.arange(32, dtype=torch.int32)


class GrammarMatchers:
    """Compiles grammars against one tokenizer and computes the allowed tokens of a batch of rows.

    `hf_tokenizer` must be a fast (Rust) Hugging Face tokenizer; `vocab_size` is the model's,
    which may exceed the tokenizer's (ids past it are never allowed). Building llguidance's view
    of the tokenizer takes about a second, so it happens on the first grammar, not at start-up."""

    def __init__(self, hf_tokenizer: Any, vocab_size: int, eos_token_ids: list[int] | None = None):
        self._hf_tokenizer = hf_tokenizer
        self._eos = eos_token_ids
        self.vocab_size = vocab_size
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._executor: llguidance.LLExecutor | None = None
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = llguidance.hf.from_tokenizer(self._hf_tokenizer, eos_token=self._eos)
                self._executor = llguidance.LLExecutor()
            return self._tokenizer

    def compile(self, grammar: str, param: str = "grammar") -> llguidance.LLMatcher:
        """A fresh matcher for `grammar`; InvalidRequestError (naming `param`) if it does not compile."""
        if len(grammar) > MAX_GRAMMAR_CHARS:
            raise InvalidRequestError(f"the grammar has {len(grammar):,} characters, more than {MAX_GRAMMAR_CHARS:,}", param=param)
        matcher = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise InvalidRequestError(f"the grammar cannot be used: {describe_grammar_error(matcher.get_error())}", param=param)
        return matcher

    def allowed(self, matchers: list[llguidance.LLMatcher]) -> torch.Tensor:
        """(R, V) bool: the tokens each matcher allows next."""
        # llguidance.torch's two helpers, called without importing it: that module compiles a
        # kernel with torch.compile at import, which loads inductor (~40 MB more resident in hone serve, ~1 s)
        words = (self.tokenizer.vocab_size + 31) // 32
        bitmask = torch.full((len(matchers), words), -1, dtype=torch.int32)
        self._executor.unsafe_compute_mask_ptr([(m, i) for i, m in enumerate(matchers)], bitmask.data_ptr(), words * 4, len(matchers))
        allowed = ((bitmask.unsqueeze(-1) >> _BITS) & 1).bool().flatten(1)  # (R, 32 * words), bit j of word w = token 32w + j
        if allowed.shape[1] >= self.vocab_size:
            return allowed[:, : self.vocab_size]
        pad = torch.zeros(len(matchers), self.vocab_size - allowed.shape[1], dtype=torch.bool)
        return torch.cat([allowed, pad], dim=1)

    @staticmethod
    def advance(matcher: llguidance.LLMatcher, token: int) -> None:
        """Feed the drawn token to its row's matcher; the mask allowed it, so this cannot fail
        unless llguidance itself is wrong, which fails only that request."""
        if not matcher.consume_token(token):
            raise InvalidRequestError(f"the grammar refused token {token}: {describe_grammar_error(matcher.get_error())}", param="grammar")


def describe_grammar_error(error: str) -> str:
    """llguidance's error as one line: its message and the reason below it, without the position
    in hone's grammar text and the source lines it echoes."""
    lines = [line.strip() for line in error.strip().splitlines()]
    if not lines or not lines[0]:
        return "unknown error"
    message = re.sub(r"^at \d+\(\d+\): ", "", lines[0])  # a position in the generated grammar, not the user's input
    reasons = [line.removeprefix("error: ") for line in lines[1:] if line.startswith("error: ")]
    if "coerce_one_of" in message:  # advice to set an option no request can set
        message = "oneOf is supported only when its branches cannot overlap; use anyOf, or make the branches exclusive"
    return " ".join([message.rstrip(":") + (":" if reasons else ""), *reasons])[:400]
