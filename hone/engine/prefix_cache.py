"""Keys and values of finished sequences, kept so a later prompt that starts the same way skips
recomputing them.

An agent's next request repeats everything before it: the system prompt, the question, every
earlier reply and tool result. Measured on the inbox agent's validation episodes (2-core CPU,
embedded 135M model), prefill was 81% of sampling time before this cache. The engine stores the
cache of each sequence it finishes (prompt and completion), and a new prompt copies the longest
matching prefix from it and prefills only the rest. Prompts that arrive together and share a start
nothing cached covers (an evaluation's first questions: one system prompt and tool list) have that
start prefilled once and stored here first, then continue it like any other entry.

What a stored prefix is valid for: the same weights. Entries are keyed by the LoRA adapter object
that computed them (adapters are immutable; new weights are a new object, so old entries simply
stop matching and age out), and the engine clears the cache when its base weights change.

Memory is bounded (`max_bytes`), least recently used first out; an entry that a newer one extends
(the same conversation one turn later) is dropped at once.

Exactness: in fp32 a continued prompt samples what a whole prefill samples (logprobs within 1e-4,
tested). In bf16 the two round differently (logits within 0.18 of each other on a 700-token prompt,
both ~1.6 from fp32), so the same seed can draw another token at a near-tie, and a repeated request
need not repeat bit for bit; `Engine(prefix_cache_bytes=0)` turns the cache off where that matters.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

MIN_REUSE = 32  # shorter shared prefixes are not worth a copy


@dataclass
class PrefixEntry:
    tokens: torch.Tensor  # (n,) int64: the positions cached
    lora: Any  # the LoraAdapter that computed them, None = the base weights
    keys: list[torch.Tensor]  # per cache group, as the runner stores them
    values: list[torch.Tensor]
    nbytes: int


class PrefixCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._entries: OrderedDict[int, PrefixEntry] = OrderedDict()
        self._next_key = 0
        self._lock = threading.Lock()
        # adapters replaced or removed: rows still running on one must not store entries nobody can use
        self._retired: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0

    def drop(self, lora: Any) -> None:
        """Forget what `lora` computed (it was replaced or removed)."""
        with self._lock:
            if lora is not None:
                self._retired[id(lora)] = lora
            for key in [k for k, e in self._entries.items() if e.lora is lora]:
                self.nbytes -= self._entries.pop(key).nbytes

    def lookup(self, prompt: list[int], lora: Any) -> tuple[PrefixEntry, int] | None:
        """The entry sharing the longest prefix with `prompt` under the same weights, and that
        length, capped one short of the prompt (its last position must be run to give logits)."""
        query = torch.tensor(prompt, dtype=torch.long)
        best: tuple[int, int] | None = None
        with self._lock:
            for key, entry in self._entries.items():
                if entry.lora is not lora:
                    continue
                shared = _common_prefix(query, entry.tokens)
                if best is None or shared > best[1]:
                    best = (key, shared)
            if best is None:
                return None
            key, shared = best
            shared = min(shared, len(prompt) - 1)
            if shared < MIN_REUSE:
                return None
            self._entries.move_to_end(key)
            return self._entries[key], shared

    def insert(self, tokens: list[int], lora: Any, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        if len(tokens) < MIN_REUSE:
            return
        nbytes = sum(t.numel() * t.element_size() for t in (*keys, *values))
        if nbytes > self.max_bytes:
            return
        entry = PrefixEntry(torch.tensor(tokens, dtype=torch.long), lora, keys, values, nbytes)
        with self._lock:
            if lora is not None and self._retired.get(id(lora)) is lora:
                return
            for key, old in self._entries.items():
                if old.lora is lora and _extends(old.tokens, entry.tokens):  # already held, maybe longer
                    self._entries.move_to_end(key)
                    return
            for key in [k for k, e in self._entries.items() if e.lora is lora and _extends(entry.tokens, e.tokens)]:
                self.nbytes -= self._entries.pop(key).nbytes  # the same sequence, now longer
            self._entries[self._next_key] = entry
            self._next_key += 1
            self.nbytes += nbytes
            while self.nbytes > self.max_bytes:
                self.nbytes -= self._entries.popitem(last=False)[1].nbytes


def shared_starts(prompts: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Starts of at least MIN_REUSE tokens that two or more of `prompts` share, chosen to save the
    most prompt positions. Prompts sharing a start are neighbours in sorted order, so the choice is
    a split of the sorted prompts into runs, each run's start being what all its prompts share (one
    position short of its shortest prompt, which must run to give logits); a run of k prompts saves
    k - 1 times its start. The best split by dynamic programming (admissions hold tens of prompts)."""
    ordered = sorted(prompts)
    common = [_common_prefix(torch.tensor(a), torch.tensor(b)) for a, b in zip(ordered, ordered[1:])]  # of each prompt and the next
    # best[j]: positions saved by the best split of ordered[:j]; its last run is ordered[first[j]:j], sharing length[j]
    best, first, length = [0] * (len(ordered) + 1), [0] * (len(ordered) + 1), [0] * (len(ordered) + 1)
    for j in range(1, len(ordered) + 1):
        best[j], first[j] = best[j - 1], j - 1  # ordered[j - 1] on its own
        shared = len(ordered[j - 1]) - 1
        for i in range(j - 2, -1, -1):  # the run ordered[i:j]
            shared = min(shared, common[i], len(ordered[i]) - 1)
            if shared < MIN_REUSE:
                break
            if best[i] + (j - i - 1) * shared > best[j]:
                best[j], first[j], length[j] = best[i] + (j - i - 1) * shared, i, shared
    starts, j = [], len(ordered)
    while j > 0:
        if j - first[j] > 1:
            starts.append(ordered[first[j]][: length[j]])
        j = first[j]
    return starts[::-1]


def _common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    n = min(len(a), len(b))
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if len(differ) else n


def _extends(longer: torch.Tensor, shorter: torch.Tensor) -> bool:
    return len(longer) >= len(shorter) and bool(torch.equal(longer[: len(shorter)], shorter))
