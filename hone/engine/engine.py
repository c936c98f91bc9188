"""The torch sampler: many concurrent `sample` calls in, batched KV-cached decoding in one worker thread.

How a request travels:
1. `sample` checks it (one-sentence `InvalidRequestError` before any compute), queues it and
   awaits a future.
2. The worker thread, idle, waits `batch_window_s` for company, then admits what fits in
   `max_batch_size` rows; while decoding it admits new arrivals between steps (continuous batching).
3. Admission prefills each distinct prompt once (right-padded batch) and copies its cache into
   the n slots of its samples; the first tokens are drawn from the shared prefill logits.
4. Each decode step feeds every active row one token; finished rows leave and their slots are
   refilled by compaction. Samples of one prompt read its keys and values from one of their slots
   (the attention kernel), so a group of RL attempts reads its prompt from memory once a step.
   When all n samples of a request are done its future is resolved (asyncio futures are resolved
   on their own loop via `call_soon_threadsafe`).
5. An exception while computing fails the requests in flight, not the worker: it goes on serving.
   A request whose caller cancels (its `sample` task, e.g. a server whose client hung up) is
   dropped: queued, it is never admitted; decoding, its rows leave the batch at the next step.
6. A request for a LoRA adapter takes that adapter's current matrices at admission and keeps them
   to its end: `set_adapter` swaps in new matrices without waiting for the decode to drain.
7. A request with a grammar (`SamplingParams.grammar`; the engine needs `grammars`) is compiled in
   `sample`, and each of its rows matches on its own copy: every step the rows' masks are computed
   together and applied to a copy of the logits, with logit biases and penalties. Rows without
   any of these are sampled from the logits untouched, in the same batch.
8. A caller that passes `on_tokens` hears each row's tokens as they are decoded (from the worker
   thread; it must only hand them on). With stop strings, the newest tokens are held back until no
   stop string can still cut them, so nothing heard is ever taken back.
9. With speculation on (`speculation=SpeculationConfig()`; off by default until it pays in batched
   and constrained sampling too, see hone.engine.speculation), a step may feed a row its newest token and a
   guess at the next few, copied from where the sequence's newest n-gram occurred before; the row
   keeps the guessed tokens its own draws agree with. Every token is drawn as in a plain step, so
   outputs and logprobs are unchanged; rows of one step advance by different numbers of tokens.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import hashlib
import logging
import math
import random
import secrets
import threading
import time
import weakref
from array import array
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Sequence

import torch
from transformers import PreTrainedModel

from hone.engine.grammar import GrammarMatchers, describe_grammar_error
from hone.engine.fallback import TransformersRunner
from hone.engine.prefix_cache import PrefixCache, PrefixEntry, shared_starts
from hone.engine.llama import LlamaRunner, LoraAdapter, check_supported
from hone.engine.sampling import Draw, RowSettings, find_stop_cut, sample_rows, stop_window
from hone.engine.speculation import DraftPolicy, NgramIndex, SpeculationConfig
from hone.errors import HoneError, InvalidRequestError, SequenceTooLongError
from hone.hardware import preferred_dtype
from hone.memory import release_freed_memory
from hone.types import OnTokens, SampledSequence, SamplingParams, TokenDelta

log = logging.getLogger(__name__)

MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 100.0  # OpenAI's bounds on logit_bias values and on the two penalties
MAX_PENALTY = 2.0
_RESERVE_AHEAD = 512  # cache positions reserved past a prompt at admission; later growth is geometric
_PREFILL_TOKEN_BUDGET = 8192  # padded prompt tokens per prefill forward; bounds activation memory
# rows x new tokens x positions per batch continuing cached prefixes; x heads x 4 bytes of attention
# scores (150 MB for the 135M model's 9 heads)
_CONTINUE_SCORE_BUDGET = 1 << 22


@dataclass
class _Request:
    prompt: list[int]
    n: int
    params: SamplingParams
    seed: int
    future: concurrent.futures.Future
    results: list[SampledSequence | None]
    remaining: int
    stop_ids: frozenset[int]
    adapter: str | None = None  # LoRA adapter name; None = the base weights
    lora: LoraAdapter | None = None  # that adapter's matrices, fixed at admission
    failed: bool = False
    matcher: Any = None  # the compiled grammar (an llguidance matcher); each row matches on a copy
    on_tokens: OnTokens | None = None


@dataclass
class _Row:
    """One sampled sequence in flight; its index in the engine's row list is its cache slot."""

    request: _Request
    index: int  # which of the request's n samples
    settings: RowSettings
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[list[tuple[int, float]]] | None = None
    done: bool = False
    matcher: Any = None  # this row's grammar state, when the request has a grammar
    forced: list[bool] | None = None  # per token, under a grammar: whether it was the only one allowed
    counts: dict[int, int] | None = None  # sampled token -> times, when a penalty needs them
    heard: int = 0  # tokens already passed to the request's on_tokens
    speculates: bool = False  # may draft (the engine speculates and the request allows it)
    ngrams: NgramIndex | None = None  # prompt and tokens so far, indexed once the row first may draft
    drafted: int = 0  # draft tokens verified for this row, and how many of them were kept
    accepted: int = 0
    # (prefill id, prompt length) for samples of one prompt admitted together, whose caches are
    # copies of one prefill up to the prompt's end: a decode step reads that part from one of them
    share: tuple[int, int] | None = None

    @property
    def position(self) -> int:
        """Cache position of the newest sampled token, which the next decode step feeds."""
        return len(self.request.prompt) + len(self.tokens) - 1


class Engine:
    """Batched sampler over its own copy of a Llama-family model. Token ids in, tokens + fp32 logprobs out.

    LoRA adapters (`set_adapter`) are served over the one copy of the base weights, unmerged: a
    request names its adapter, the base matmuls of a decode step run over every row (the same
    weights for all), and each adapter's low-rank delta over its own rows only; a prefill batch
    holds one adapter's prompts. Rows of different adapters never share a matmul with different
    weights.

    `dtype=None` picks bf16 where this machine multiplies faster in it, else fp32. The LM head and
    log-softmax always run in `lm_head_dtype` (fp32 by default, from an fp32 copy of the head);
    `lm_head_dtype=torch.bfloat16` trades logprob accuracy for speed: a bf16 copy of the head, and
    where hone's bf16 kernel runs it (AVX2 without native bf16) fp32 activations and sums, so only
    the head's weights are rounded; elsewhere a bf16 matmul whose logits are rounded to bf16. The
    softmax is fp32 either way.

    CPU threads: the compute runs in the worker thread with `num_threads` OpenMP threads. If the
    process's main thread has already run multi-threaded torch ops, libgomp sees more threads
    than cores and stops spinning between ops, and the worker runs ~30-40% slower on a 2-core
    machine (measured). Processes that sample on a small CPU should start with OMP_NUM_THREADS=1
    and pass `num_threads` here (bench/engine.py does).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        eos_token_ids: Sequence[int],
        decode: Callable[[list[int]], str] | None = None,  # only needed for stop strings
        dtype: torch.dtype | None = None,  # None = bf16 where faster on this machine, fp32 otherwise
        max_batch_size: int = 64,
        batch_window_s: float = 0.005,
        max_seq_len: int = 4096,
        lm_head_dtype: torch.dtype = torch.float32,
        num_threads: int | None = None,  # torch intra-op threads of the worker; None = the creating thread's
        grammars: GrammarMatchers | None = None,  # grammar support; requests with a grammar need it
        prefix_cache_bytes: int = 1 << 30,  # finished sequences' keys and values kept for reuse; 0 = none
        speculation: SpeculationConfig | None = None,  # n-gram drafts verified in the decode step; None = off (opt-in for now)
        serve_only: bool = False,  # weights never change: keep only their packed copies (load_weights refused); free the KV cache when idle
    ):
        self.dtype = dtype if dtype is not None else preferred_dtype(model.config.hidden_size, model.config.intermediate_size)
        self.lm_head_dtype = lm_head_dtype
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_s
        self.max_seq_len = max_seq_len
        self.eos_token_ids = frozenset(int(t) for t in eos_token_ids)
        self.decode = decode
        self.grammars = grammars
        self.serve_only = serve_only
        self.vocab_size = model.config.vocab_size
        self._runner = _make_runner(model, dtype=self.dtype, head_dtype=lm_head_dtype, max_slots=max_batch_size, max_seq_len=max_seq_len)
        self.attention_impl = self._runner.attention_impl  # "cpp" or "torch" (native), "transformers" (the fallback)
        reusable = prefix_cache_bytes > 0 and getattr(self._runner, "reuses_prefixes", False)
        self.prefix_cache = PrefixCache(prefix_cache_bytes) if reusable else None
        drafts = speculation is not None and getattr(self._runner, "verifies_drafts", False)
        self.drafting = DraftPolicy(speculation) if drafts else None
        if isinstance(self._runner, TransformersRunner):
            self.dtype = torch.float32  # the fallback computes in fp32 (see hone.engine.fallback)
        self.stats: dict[str, int] = {
            "requests": 0,  # accepted by sample()
            "sequences": 0,  # rows finished (n per request)
            "batches": 0,  # admission rounds: requests that joined the decode together
            "prefill_forwards": 0,
            "prefill_tokens": 0,  # rows x positions run through prefill, padding included
            "prefix_hits": 0,  # prompts that continued a cached prefix
            "prefix_tokens_reused": 0,  # positions copied from the prefix cache instead of computed
            "decode_steps": 0,
            "shared_prefix_rows": 0,  # rows of decode steps that read their prompt's cache from another sample's slot
            "tokens_sampled": 0,
            "tokens_constrained": 0,  # drawn under a grammar's mask
            "tokens_forced": 0,  # of those, the only token the grammar allowed
            "spec_steps": 0,  # decode steps that verified draft tokens
            "draft_tokens": 0,  # draft tokens verified, and those kept
            "draft_tokens_accepted": 0,
            "failed_batches": 0,
            "failed_requests": 0,
            "cancelled_requests": 0,  # cancelled by their caller before they finished
            "weight_loads": 0,
        }
        self._queue: deque[_Request] = deque()
        self._rows: list[_Row] = []
        self._cv = threading.Condition()
        self._prefills = 0  # ids for rows' `share`
        self._paused = 0  # weight loads waiting for the decode to drain
        self._busy = False  # the worker holds rows (or is admitting): weights must not change
        self._closed = False
        self._load_lock = threading.Lock()
        self._repack_needed = False
        # torch's intra-op thread count is per OS thread: the worker adopts the creator's unless told
        self._threads = num_threads or torch.get_num_threads()
        self._adapters: dict[str, LoraAdapter] = {}  # name -> current matrices; swapped whole, never edited
        self._worker = threading.Thread(target=self._run, name="hone-engine", daemon=True)
        self._worker.start()
        _open_engines.add(self)

    # ------------------------------------------------------------------------ public API
    async def sample(
        self, prompt_tokens: list[int], n: int, params: SamplingParams, adapter: str | None = None, on_tokens: OnTokens | None = None
    ) -> list[SampledSequence]:
        """Draw `n` completions of `prompt_tokens`; the prompt is prefilled once and shared by all n.

        `adapter` names a LoRA adapter set by `set_adapter` (None = the base weights). `on_tokens`,
        if given, is called from the worker thread with each row's tokens as they are decoded."""
        future = self._submit(prompt_tokens, n, params, adapter, on_tokens)
        # wrap_future resolves the asyncio future on its loop with call_soon_threadsafe, and
        # cancelling it cancels the request, whose rows then leave the batch at the next step
        return await asyncio.wrap_future(future)

    def sample_sync(
        self, prompt_tokens: list[int], n: int, params: SamplingParams, adapter: str | None = None
    ) -> list[SampledSequence]:
        """Blocking `sample`, for scripts and tests; safe from any thread except the engine's own."""
        return self._submit(prompt_tokens, n, params, adapter).result()

    def set_adapter(self, name: str, state_dict: dict[str, torch.Tensor], scale: float) -> None:
        """Serve LoRA adapter `name` (a PEFT adapter state; `scale` = lora_alpha / r) over the base
        weights, unmerged; replaces an adapter of that name. An empty state serves the base exactly.

        Does not wait: rows already admitted finish on the matrices they started with (no sequence
        is sampled from two sets of weights); requests admitted from now on get the new ones."""
        lora = self._runner.make_adapter(state_dict, scale)  # copies: the caller may go on training
        with self._cv:
            old = self._adapters.get(name)
            self._adapters[name] = lora
            self.stats["weight_loads"] += 1
        if old is not None and self.prefix_cache is not None:
            self.prefix_cache.drop(old)

    def remove_adapter(self, name: str) -> None:
        """Stop serving adapter `name`; its queued requests fail at admission, rows in flight finish."""
        with self._cv:
            old = self._adapters.pop(name, None)
        if old is not None and self.prefix_cache is not None:
            self.prefix_cache.drop(old)

    def has_adapter(self, name: str) -> bool:
        return name in self._adapters

    @property
    def active_rows(self) -> int:
        """Sequences being decoded now (slots in use); 0 when the engine is idle."""
        return len(self._rows)

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy new weights (plain Hugging Face names, any dtype) into the engine's own copy.

        Waits for the sequences being decoded to finish (new requests queue meanwhile), so no
        sequence is sampled from two sets of weights; a partial state dict updates only its names.
        """
        if self.serve_only:
            raise HoneError("this engine serves fixed weights (serve_only=True) and cannot load new ones; make an engine without serve_only to update weights")
        self._runner.check_state_dict(state_dict)
        if threading.current_thread() is self._worker:
            raise HoneError("load_weights cannot be called from the engine's worker thread")
        with self._load_lock:
            with self._cv:
                self._paused += 1
                self._cv.notify_all()
                while self._busy and not self._closed:
                    self._cv.wait()
            try:
                self._runner.load_state_dict(state_dict, repack=False)
                if self.prefix_cache is not None:
                    self.prefix_cache.clear()  # computed with the old weights
                self._repack_needed = True  # the worker repacks, in its own thread, before computing
                self.stats["weight_loads"] += 1
            finally:
                with self._cv:
                    self._paused -= 1
                    self._cv.notify_all()

    def close(self) -> None:
        """Stop the worker; requests still queued or in flight fail with a HoneError."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if threading.current_thread() is not self._worker:
            self._worker.join()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------ requests
    def _submit(
        self, prompt_tokens: list[int], n: int, params: SamplingParams, adapter: str | None = None, on_tokens: OnTokens | None = None
    ) -> concurrent.futures.Future:
        prompt = self._validate(prompt_tokens, n, params)
        matcher = self.grammars.compile(params.grammar) if params.grammar is not None else None
        if adapter is not None and adapter not in self._adapters:
            raise InvalidRequestError(f"this engine has no adapter named '{adapter}'", param="adapter")
        future: concurrent.futures.Future = concurrent.futures.Future()
        request = _Request(
            prompt=prompt,
            n=n,
            params=params,
            seed=params.seed if params.seed is not None else secrets.randbits(63),
            future=future,
            results=[None] * n,
            remaining=n,
            stop_ids=self.eos_token_ids | frozenset(params.stop_token_ids),
            adapter=adapter,
            matcher=matcher,
            on_tokens=on_tokens,
        )
        with self._cv:
            if self._closed:
                raise HoneError("the engine is closed; create a new one to sample")
            self._queue.append(request)
            self.stats["requests"] += 1
            self._cv.notify_all()
        return future

    def _validate(self, prompt_tokens: list[int], n: int, params: SamplingParams) -> list[int]:
        """Every reason a request cannot be served, as one sentence, before any compute."""
        prompt = [int(t) for t in prompt_tokens]
        if not prompt:
            raise InvalidRequestError("the prompt is empty; sampling needs at least one prompt token", param="prompt_tokens")
        if any(t < 0 or t >= self.vocab_size for t in prompt):
            bad = next(t for t in prompt if t < 0 or t >= self.vocab_size)
            raise InvalidRequestError(
                f"prompt token {bad} is outside this model's vocabulary (0..{self.vocab_size - 1})", param="prompt_tokens"
            )
        if not 1 <= n <= self.max_batch_size:
            raise InvalidRequestError(f"n must be between 1 and max_batch_size ({self.max_batch_size}); got {n}", param="n")
        if params.max_tokens < 1:
            raise InvalidRequestError(f"max_tokens must be at least 1; got {params.max_tokens}", param="max_tokens")
        if len(prompt) > self.max_seq_len:
            raise SequenceTooLongError(
                f"the prompt has {len(prompt)} tokens, more than this engine's max_seq_len of {self.max_seq_len}",
                param="prompt_tokens",
            )
        if len(prompt) + params.max_tokens > self.max_seq_len:
            raise SequenceTooLongError(
                f"the prompt ({len(prompt)} tokens) plus max_tokens ({params.max_tokens}) exceeds this engine's "
                f"max_seq_len of {self.max_seq_len}; lower max_tokens or shorten the prompt",
                param="max_tokens",
            )
        if not (params.temperature >= 0.0 and math.isfinite(params.temperature)):
            raise InvalidRequestError(f"temperature must be a finite number >= 0; got {params.temperature}", param="temperature")
        if not 0.0 < params.top_p <= 1.0:
            raise InvalidRequestError(f"top_p must be in (0, 1]; got {params.top_p}", param="top_p")
        if params.top_k < 0:
            raise InvalidRequestError(f"top_k must be >= 0 (0 = off); got {params.top_k}", param="top_k")
        if not 0 <= params.top_logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidRequestError(
                f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}; got {params.top_logprobs}", param="top_logprobs"
            )
        if any(not isinstance(s, str) or not s for s in params.stop):
            raise InvalidRequestError("stop strings must be non-empty strings", param="stop")
        if params.stop and self.decode is None:
            raise InvalidRequestError(
                "stop strings need a decode function; create the Engine with decode=tokenizer.decode", param="stop"
            )
        if any(not 0 <= t < self.vocab_size for t in params.stop_token_ids):
            raise InvalidRequestError("stop_token_ids must be ids in this model's vocabulary", param="stop_token_ids")
        self._validate_shaping(params)
        return prompt

    def _validate_shaping(self, params: SamplingParams) -> None:
        if params.grammar is not None and self.grammars is None:
            raise InvalidRequestError(
                "this engine has no grammar support; create it with grammars=GrammarMatchers(tokenizer, vocab_size)", param="grammar"
            )
        for token, bias in params.logit_bias:
            if not 0 <= token < self.vocab_size:
                raise InvalidRequestError(f"logit_bias names token {token}, outside this model's vocabulary (0..{self.vocab_size - 1})", param="logit_bias")
            if not -MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS:
                raise InvalidRequestError(f"logit_bias values must be between {-MAX_LOGIT_BIAS:g} and {MAX_LOGIT_BIAS:g}; got {bias} for token {token}", param="logit_bias")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(params, name)
            if not -MAX_PENALTY <= value <= MAX_PENALTY:
                raise InvalidRequestError(f"{name} must be between {-MAX_PENALTY:g} and {MAX_PENALTY:g}; got {value}", param=name)

    # ------------------------------------------------------------------------ worker
    def _run(self) -> None:
        torch.set_num_threads(self._threads)
        with torch.inference_mode():
            self._runner.repack()  # packed for this thread's thread count (see LlamaRunner.repack)
            if self.serve_only and hasattr(self._runner, "keep_packed_only"):
                self._runner.keep_packed_only()
                release_freed_memory()
            while True:
                if self.serve_only and not self._rows and not self._queue and getattr(self._runner, "slots", 0):
                    # idle: a serving process gives its KV cache back (it grew for the last burst);
                    # its tensors go by reference counting: no cycle collection, which held the
                    # GIL ~250 ms in `hone serve` (~400k live objects), a pause for the next request
                    self._runner.release_cache()
                    release_freed_memory(collect_cycles=False)
                admitted = self._take_requests()
                if admitted is None:
                    break
                try:
                    if self._repack_needed:  # new weights arrived while we were idle
                        self._repack_needed = False
                        self._runner.repack()
                    if admitted:
                        self._admit(admitted)
                    if self._rows:
                        self._step()
                except Exception as exc:  # a bug or a bad input in compute: fail this batch, keep serving
                    self.stats["failed_batches"] += 1
                    self._fail_rows(exc, admitted)
        self._shutdown()

    def _take_requests(self) -> list[_Request] | None:
        """Requests to admit now: blocks while idle, waits a batch window for company. None = closed."""
        with self._cv:
            while not self._closed and not self._rows and (not self._queue or self._paused):
                if self._busy:
                    self._busy = False
                    self._cv.notify_all()  # a waiting load_weights may go ahead
                self._cv.wait()
            if self._closed:
                return None
            if self._paused:
                return []  # finish the rows in flight first; admit after the weights change
            if not self._rows:  # starting a new batch: give concurrent callers a moment to join
                deadline = time.monotonic() + self.batch_window_s
                while not self._closed and not self._paused and self._queued_rows() < self.max_batch_size:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cv.wait(remaining)
                if self._closed:
                    return None
                if self._paused:
                    return []
            if any(request.future.cancelled() for request in self._queue):  # callers that gave up while queued
                waiting = deque(request for request in self._queue if not request.future.cancelled())
                self.stats["cancelled_requests"] += len(self._queue) - len(waiting)
                self._queue = waiting
            free = self.max_batch_size - len(self._rows)
            taken: list[_Request] = []
            while self._queue and self._queue[0].n <= free:
                request = self._queue.popleft()
                taken.append(request)
                free -= request.n
            if taken:
                self._busy = True
            return taken

    def _queued_rows(self) -> int:
        return sum(r.n for r in self._queue)

    def _admit(self, requests: list[_Request]) -> None:
        """Prefill each distinct prompt once per adapter, give every sample its own slot, draw the first tokens."""
        self.stats["batches"] += 1
        by_adapter: dict[int, tuple[LoraAdapter | None, dict[tuple[int, ...], list[_Request]]]] = {}
        for request in requests:
            if request.adapter is not None:
                request.lora = self._adapters.get(request.adapter)
                if request.lora is None:  # removed while the request queued
                    self._fail_request(request, InvalidRequestError(f"the adapter '{request.adapter}' was removed"))
                    continue
            key = id(request.lora) if request.lora is not None else 0
            by_adapter.setdefault(key, (request.lora, {}))[1].setdefault(tuple(request.prompt), []).append(request)
        for lora, distinct in by_adapter.values():  # one adapter's prompts per prefill batch
            self._admit_prompts(distinct, lora)
        self._compact()

    def _admit_prompts(self, distinct: dict[tuple[int, ...], list[_Request]], lora: LoraAdapter | None) -> None:
        fresh, continued = self._lookup_prefixes(list(distinct), lora)
        if self._cache_shared_starts(fresh, lora):
            fresh, more = self._lookup_prefixes(fresh, lora)
            continued.update(more)
        for group in _continue_groups(list(continued), {p: shared for p, (_, shared) in continued.items()}):
            self._admit_group(group, distinct, lora, continued)
        for group in _prefill_groups(fresh):
            self._admit_group(group, distinct, lora)

    def _lookup_prefixes(
        self, prompts: list[tuple[int, ...]], lora: LoraAdapter | None
    ) -> tuple[list[tuple[int, ...]], dict[tuple[int, ...], tuple[PrefixEntry, int]]]:
        """The prompts with nothing cached to continue, and the others with their entry and shared length."""
        fresh, continued = [], {}
        for prompt in prompts:
            found = self.prefix_cache.lookup(list(prompt), lora) if self.prefix_cache is not None else None
            if found is None:
                fresh.append(prompt)
            else:
                continued[prompt] = found
        return fresh, continued

    def _cache_shared_starts(self, fresh: list[tuple[int, ...]], lora: LoraAdapter | None) -> bool:
        """Prefill once, into the prefix cache, the start that prompts arriving together share but
        find nothing cached for (an evaluation's first turns: one system prompt and tool list, many
        questions), so each then continues it like a cached conversation. Whether any was cached."""
        if self.prefix_cache is None:
            return False
        starts = shared_starts(fresh)
        for start in starts:
            scratch = len(self._rows)  # a free slot; this admission overwrites it
            self._runner.reserve(scratch + 1, len(start))
            self._runner.prefill([list(start)], [scratch], lora)
            self.prefix_cache.insert(list(start), lora, *self._runner.read_slot(scratch, len(start)))
            self.stats["prefill_forwards"] += 1
        return bool(starts)

    def _admit_group(
        self, group: list[tuple[int, ...]], distinct: dict[tuple[int, ...], list[_Request]], lora: LoraAdapter | None,
        continued: dict[tuple[int, ...], tuple[PrefixEntry, int]] | None = None,
    ) -> None:
        """Prefill `group`'s prompts (or, given `continued`, each prompt's rest after its cached prefix:
        the entry and the shared length) and admit their rows."""
        # 1) slots: the samples of the requests sharing a prompt take consecutive slots
        first_slot, sources, copies, new_rows = [], [], [], []
        for prompt in group:
            first_slot.append(len(self._rows) + len(new_rows))
            self._prefills += 1
            for request in distinct[prompt]:
                for i in range(request.n):
                    slot = len(self._rows) + len(new_rows)
                    if slot != first_slot[-1]:
                        sources.append(first_slot[-1])
                        copies.append(slot)
                    new_rows.append(self._new_row(request, i))
                    new_rows[-1].share = (self._prefills, len(prompt))
        # room for every slot's prompt and (up to a limit) its completion: fewer regrowths later
        room = max(len(r.request.prompt) + min(r.request.params.max_tokens, _RESERVE_AHEAD) for r in new_rows)
        self._runner.reserve(len(self._rows) + len(new_rows), room)
        # 2) prefill the distinct prompts once, right-padded into one batch (or their rests after their cached prefixes)
        if continued is None:
            logits = self._runner.prefill([list(p) for p in group], first_slot, lora)  # (P, V) fp32
        else:
            starts = [continued[p][1] for p in group]
            for slot, prompt, start in zip(first_slot, group, starts):
                self._runner.write_slot(slot, continued[prompt][0].keys, continued[prompt][0].values, start)
            logits = self._runner.prefill_after(first_slot, [list(p[start:]) for p, start in zip(group, starts)], starts, lora)
            self.stats["prefix_hits"] += len(group)
            self.stats["prefix_tokens_reused"] += sum(starts)
        self.stats["prefill_forwards"] += 1
        self.stats["prefill_tokens"] = self._runner.prefill_tokens
        # 3) replicate each prompt's cache into the slots of its other samples
        self._runner.copy_slots(sources, copies, max(len(p) for p in group))
        # 4) first tokens, drawn from the shared prefill logits
        which = [j for j, prompt in enumerate(group) for request in distinct[prompt] for _ in range(request.n)]
        logits_rows = logits[torch.tensor(which)]  # (R, V)
        self._rows.extend(new_rows)
        self._record(new_rows, self._draw(logits_rows, new_rows))

    def _step(self) -> None:
        """One decode step for every active row."""
        self._drop_cancelled()
        if not self._rows:
            return
        start, sampled, batch = time.perf_counter(), self.stats["tokens_sampled"], len(self._rows)
        drafts = self._drafts() if self.drafting is not None and self.drafting.should_draft(batch) else None
        drafted = drafts is not None and any(drafts)
        if drafted:
            fed = self._verify(drafts)
        else:
            tokens = torch.tensor([row.tokens[-1] for row in self._rows])
            positions = torch.tensor([row.position for row in self._rows])
            self._runner.reserve(len(self._rows), int(positions.max()) + 1)
            shared = self._shared_prefixes()
            extra = {"shared": shared} if shared is not None else {}
            logits = self._runner.decode(tokens, positions, self._lora_rows(self._rows), **extra)  # (B, V) fp32
            self._record(self._rows, self._draw(logits, self._rows))
            fed = len(self._rows)
        self.stats["decode_steps"] += 1
        if self.drafting is not None:
            seconds = time.perf_counter() - start
            self.drafting.record_step(fed, seconds)
            self.drafting.record_outcome(batch, drafted, seconds, self.stats["tokens_sampled"] - sampled)
        self._compact()

    def _shared_prefixes(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For `decode(shared=)`: each row's owner (the first live sample of its prompt) and how many
        of its first positions it reads there; None when no two live rows share a prompt's prefill."""
        if not getattr(self._runner, "shares_prefixes", False):
            return None
        first: dict[int, int] = {}
        owners, lengths = [], []
        for b, row in enumerate(self._rows):
            owner = first.setdefault(row.share[0], b) if row.share is not None else b
            owners.append(owner)
            lengths.append(row.share[1] if owner != b else 0)
        sharing = sum(1 for n in lengths if n)
        if not sharing:
            return None
        self.stats["shared_prefix_rows"] += sharing
        return torch.tensor(owners), torch.tensor(lengths)

    def _drafts(self) -> list[list[int]]:
        """Each row's guess at its next tokens (often none), as long as the policy finds worth verifying."""
        policy, batch = self.drafting, len(self._rows)
        row_cost = policy.row_cost(batch)  # one least-squares fit per step, not per row
        drafts = []
        for row in self._rows:
            if not row.speculates or row.done:
                drafts.append([])
                continue
            if row.ngrams is None:  # indexed only when first in a step that may draft: big batches never pay for it
                row.ngrams = NgramIndex(policy.config, row.request.prompt + row.tokens)
            room = min(self.max_seq_len - 1 - row.position, row.request.params.max_tokens - len(row.tokens) - 1)
            limit = min(room, policy.draft_length(policy.row_rate(row.drafted, row.accepted), row_cost))
            draft = row.ngrams.draft(limit) if limit > 0 else []
            if row.matcher is not None and limit > 0:
                # under a grammar, tokens it forces are a draft that is always right; either is cut
                # where the grammar would refuse it (the draw could never equal it)
                draft = draft or row.matcher.compute_ff_tokens()[:limit]
                draft = draft[: row.matcher.validate_tokens(draft)] if draft else draft
            drafts.append(draft)
        return drafts

    def _verify(self, drafts: list[list[int]]) -> int:
        """One decode step that feeds each row its newest token and its draft; each row keeps the
        draft tokens its draws agree with, and the first draw that differs. Returns the rows fed."""
        rows = self._rows
        tokens, positions, slots, starts = [], [], [], [0]
        for b, (row, draft) in enumerate(zip(rows, drafts)):
            fed = [row.tokens[-1], *draft]
            tokens += fed
            positions += range(row.position, row.position + len(fed))
            slots += [b] * len(fed)
            starts.append(len(tokens))
        self._runner.reserve(len(rows), max(positions) + 1)
        fed_rows = [rows[b] for b in slots]
        logits = self._runner.decode(
            torch.tensor(tokens), torch.tensor(positions), self._lora_rows(fed_rows), runs=(torch.tensor(slots), torch.tensor(starts))
        )  # (N, V) fp32
        # draw position by position: a row's draw at its j-th fed token is its token j + 1, drawn
        # exactly as in a plain step (grammar, penalties and random stream advanced by the ones before)
        active, j, accepted = list(range(len(rows))), 0, 0
        while active:
            step_rows = [rows[b] for b in active]
            draw = self._draw(logits[torch.tensor([starts[b] + j for b in active])], step_rows)
            self._record(step_rows, draw)
            kept = []  # rows whose draw equals their draft token: their next fed token was right
            for token, b in zip(draw.tokens, active):
                if j < len(drafts[b]) and token == drafts[b][j]:
                    rows[b].accepted += 1
                    accepted += 1
                    if not rows[b].done:
                        kept.append(b)
            active, j = kept, j + 1
        drafted = sum(len(d) for d in drafts)
        for row, draft in zip(rows, drafts):
            row.drafted += len(draft)
        self.stats["spec_steps"] += 1
        self.stats["draft_tokens"] += drafted
        self.stats["draft_tokens_accepted"] += accepted
        self.drafting.record_drafts(drafted, accepted)
        return len(tokens)

    def _draw(self, logits_R_V: torch.Tensor, rows: list[_Row]) -> Draw:
        """Sample one token per row. Rows with a grammar, biases or penalties draw from a shaped
        copy of the logits; every row reports the model's own logprob (see hone.engine.sampling)."""
        settings = [row.settings for row in rows]
        shaped = [b for b, row in enumerate(rows) if not row.done and (row.matcher is not None or row.request.params.shapes_logits)]
        if not shaped:
            return sample_rows(logits_R_V, settings)
        drawn_from = logits_R_V.clone()
        for b in shaped:
            _shift_logits(drawn_from[b], rows[b])
        constrained = [b for b in shaped if rows[b].matcher is not None]
        if constrained:
            allowed_C_V = self.grammars.allowed([rows[b].matcher for b in constrained])
            index = torch.tensor(constrained)
            drawn_from[index] = drawn_from[index].masked_fill(~allowed_C_V, float("-inf"))
            for b, count in zip(constrained, allowed_C_V.sum(dim=1).tolist()):
                rows[b].forced.append(count == 1)  # _record appends the token itself
                if count == 0 or rows[b].matcher.is_error():  # a grammar that compiled but matches nothing more
                    drawn_from[b] = logits_R_V[b]
                    reason = describe_grammar_error(rows[b].matcher.get_error()) if rows[b].matcher.is_error() else "it allows no token here"
                    self._fail_request(rows[b].request, InvalidRequestError(f"the grammar cannot be followed: {reason}", param="grammar"))
        return sample_rows(drawn_from, settings, raw_B_V=logits_R_V, shaped=shaped)

    def _lora_rows(self, fed: list[_Row]) -> list[tuple[LoraAdapter, torch.Tensor | None]]:
        """(adapter, its rows) for each adapter among the rows fed; rows None when it holds every row."""
        rows: dict[int, tuple[LoraAdapter, list[int]]] = {}
        for b, row in enumerate(fed):
            lora = row.request.lora
            if lora is not None and not lora.empty:
                rows.setdefault(id(lora), (lora, []))[1].append(b)
        return [
            (lora, None if len(index) == len(fed) else torch.tensor(index, device=self._runner.device))
            for lora, index in rows.values()
        ]

    def _new_row(self, request: _Request, index: int) -> _Row:
        p = request.params
        # Each sample's stream is derived from (seed, prompt, sample index): reproducible, and two
        # prompts sent with the same seed do not share random numbers (inverse-CDF sampling would
        # otherwise correlate their draws).
        prompt_digest = hashlib.blake2b(array("q", request.prompt).tobytes(), digest_size=8).hexdigest()
        rng = random.Random(f"{request.seed}/{prompt_digest}/{index}")
        settings = RowSettings(
            temperature=p.temperature, top_p=p.top_p, top_k=p.top_k, top_logprobs=p.top_logprobs, rng=rng
        )
        row = _Row(request=request, index=index, settings=settings, top=[] if p.top_logprobs else None)
        if request.matcher is not None:
            row.matcher, row.forced = request.matcher.deep_copy(), []
        if p.presence_penalty or p.frequency_penalty:
            row.counts = {}
        row.speculates = self.drafting is not None and p.speculate
        return row

    def _record(self, rows: list[_Row], draw) -> None:
        """Append each row's new token and finish the rows that stop here."""
        self.stats["tokens_sampled"] += len(rows)
        for b, row in enumerate(rows):
            if row.done:
                continue
            token = draw.tokens[b]
            row.tokens.append(token)
            row.logprobs.append(draw.logprobs[b])
            if row.top is not None:
                row.top.append(draw.top_logprobs[b])
            if row.counts is not None:
                row.counts[token] = row.counts.get(token, 0) + 1
            if row.ngrams is not None:
                row.ngrams.extend((token,))
            params = row.request.params
            try:
                if row.matcher is not None:
                    self.stats["tokens_constrained"] += 1
                    self.stats["tokens_forced"] += row.forced[-1]
                    self.grammars.advance(row.matcher, token)
                if token in row.request.stop_ids:
                    self._finish(row, "stop")
                elif params.stop and (cut := self._stop_cut(row)) is not None:
                    del row.tokens[cut:], row.logprobs[cut:]
                    if row.top is not None:
                        del row.top[cut:]
                    if row.forced is not None:
                        del row.forced[cut:]
                    self._finish(row, "stop")
                elif len(row.tokens) >= params.max_tokens:
                    self._finish(row, "length")
                else:
                    self._tell(row)
            except Exception as exc:  # e.g. a user's decode function raising: fail only this request
                self._fail_request(row.request, exc)

    def _stop_cut(self, row: _Row) -> int | None:
        stops = row.request.params.stop
        return find_stop_cut(self.decode, row.tokens, stops, stop_window(stops))

    def _tell(self, row: _Row) -> None:
        """Pass the row's new tokens to its request's `on_tokens`, holding back the newest ones
        while a stop string could still cut them."""
        request = row.request
        if request.on_tokens is None or request.failed:
            return
        ready = len(row.tokens)
        if request.params.stop and not row.done:
            ready -= stop_window(request.params.stop)
        if ready <= row.heard:
            return
        span = slice(row.heard, ready)
        row.heard = ready
        request.on_tokens(
            TokenDelta(
                index=row.index,
                tokens=row.tokens[span],
                logprobs=row.logprobs[span],
                forced=row.forced[span] if row.forced is not None else None,
                top_logprobs=row.top[span] if row.top is not None else None,
            )
        )

    def _finish(self, row: _Row, reason: str) -> None:
        row.done = True
        request = row.request
        if request.failed:
            return
        self._tell(row)  # the last tokens are heard before the result resolves
        request.results[row.index] = SampledSequence(
            tokens=row.tokens, logprobs=row.logprobs, finish_reason=reason, top_logprobs=row.top, forced=row.forced
        )
        self.stats["sequences"] += 1
        request.remaining -= 1
        if request.remaining == 0:
            _resolve(request.future, result=list(request.results))

    def _fail_request(self, request: _Request, exc: BaseException) -> None:
        if not request.failed:
            request.failed = True
            self.stats["failed_requests"] += 1
            _resolve(request.future, exc=exc)
        for row in self._rows:
            if row.request is request:
                row.done = True

    def _fail_rows(self, exc: BaseException, admitted: list[_Request]) -> None:
        """Fail every request in flight (and any just admitted); the cache is left as is and reused."""
        for request in {id(r.request): r.request for r in self._rows}.values():
            self._fail_request(request, exc)
        for request in admitted:
            self._fail_request(request, exc)
        self._rows = []

    def _drop_cancelled(self) -> None:
        """Free the slots of requests whose callers cancelled them (a client that hung up)."""
        cancelled = {id(row.request): row.request for row in self._rows if row.request.future.cancelled()}
        if not cancelled:
            return
        for row in self._rows:
            if id(row.request) in cancelled:
                row.done = True
        for request in cancelled.values():
            request.failed = True  # resolves nothing more; a row that finishes meanwhile records nothing
        self.stats["cancelled_requests"] += len(cancelled)
        self._compact()

    def _compact(self) -> None:
        """Keep finished rows' caches for reuse, then move live rows from the end of the batch into their slots."""
        if self.prefix_cache is not None:
            for slot, row in enumerate(self._rows):
                if row.done and not row.request.failed:
                    self._keep_prefix(slot, row)
        live = [b for b, row in enumerate(self._rows) if not row.done]
        n_live = len(live)
        holes = [b for b in range(n_live) if self._rows[b].done]
        movers = [b for b in live if b >= n_live]
        if holes:
            length = max(self._rows[b].position for b in movers) + 1
            self._runner.copy_slots(movers, holes, length)
            for hole, mover in zip(holes, movers):
                self._rows[hole] = self._rows[mover]
        self._rows = self._rows[:n_live]

    def _keep_prefix(self, slot: int, row: _Row) -> None:
        # the newest token was never fed, so its position holds nothing yet
        tokens = (row.request.prompt + row.tokens)[: row.position]
        try:
            keys, values = self._runner.read_slot(slot, len(tokens))
        except MemoryError:  # a cache entry is worth less than the batch in flight
            return
        self.prefix_cache.insert(tokens, row.request.lora, keys, values)

    def _shutdown(self) -> None:
        closed = HoneError("the engine was closed before this request finished")
        with self._cv:
            pending = list(self._queue)
            self._queue.clear()
            self._busy = False
            self._cv.notify_all()
        for request in pending + [row.request for row in self._rows]:
            if not request.failed:
                request.failed = True
                _resolve(request.future, exc=closed)
        self._rows = []
        self._runner.release()


# A daemon worker still inside torch when the interpreter exits (repacking the weights just after
# the engine was made, or in a decode step) is killed there, and the C++ runtime aborts the process
# ("terminate called without an active exception", exit status 134). Closing open engines before
# that lets the worker finish its call and stop.
_open_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _close_open_engines() -> None:
    for engine in list(_open_engines):
        engine.close()


# --------------------------------------------------------------------------- helpers
def _prefill_groups(prompts: list[tuple[int, ...]]) -> list[list[tuple[int, ...]]]:
    """Split prompts into right-padded batches with little padding and a bounded token count."""
    groups: list[list[tuple[int, ...]]] = []
    current: list[tuple[int, ...]] = []
    real = 0
    for prompt in sorted(prompts, key=len):
        padded = (len(current) + 1) * len(prompt)  # sorted, so this prompt is the longest so far
        if current and (padded > 1.25 * (real + len(prompt)) + 16 * len(current) or padded > _PREFILL_TOKEN_BUDGET):
            groups.append(current)
            current, real = [], 0
        current.append(prompt)
        real += len(prompt)
    if current:
        groups.append(current)
    return groups


def _continue_groups(prompts: list[tuple[int, ...]], shared: dict[tuple[int, ...], int]) -> list[list[tuple[int, ...]]]:
    """Split prompts that continue cached prefixes into batches whose attention scores
    (rows x padded new tokens x cache positions) stay within a bound."""
    groups: list[list[tuple[int, ...]]] = []
    current: list[tuple[int, ...]] = []
    for prompt in sorted(prompts, key=lambda p: len(p) - shared[p]):
        trial = current + [prompt]
        rows, new, positions = len(trial), max(len(p) - shared[p] for p in trial), max(len(p) for p in trial)
        if current and (rows * new * positions > _CONTINUE_SCORE_BUDGET or rows * new > _PREFILL_TOKEN_BUDGET):
            groups.append(current)
            trial = [prompt]
        current = trial
    if current:
        groups.append(current)
    return groups


def _shift_logits(logits_V: torch.Tensor, row: _Row) -> None:
    """OpenAI's logit_bias and penalties, in place on one row's copy of the logits:
    logit[j] += bias[j] - frequency_penalty * count[j] - presence_penalty * (count[j] > 0)."""
    params = row.request.params
    if params.logit_bias:
        ids, biases = zip(*params.logit_bias)
        logits_V[torch.tensor(ids)] += torch.tensor(biases, dtype=logits_V.dtype)
    if row.counts:
        ids = torch.tensor(list(row.counts))
        counts = torch.tensor(list(row.counts.values()), dtype=logits_V.dtype)
        logits_V[ids] -= params.frequency_penalty * counts + params.presence_penalty


def _resolve(future: concurrent.futures.Future, result=None, exc: BaseException | None = None) -> None:
    """Complete a future unless its caller already cancelled it."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled by the caller meanwhile; nobody is waiting for this result


def _make_runner(model: PreTrainedModel, **options):
    """The native runner where it reproduces the model exactly; transformers' own forward otherwise."""
    try:
        check_supported(model)
    except HoneError as reason:
        log.warning("hone: %s; sampling through transformers instead (correct, one sequence at a time, several times slower)", reason)
        return TransformersRunner(model, **options)
    return LlamaRunner(model, **options)


@lru_cache(maxsize=None)
def serving_dtype() -> torch.dtype:
    """The compute dtype for a process that only serves: `preferred_dtype`, except bf16 also where
    hone's own kernel multiplies by bf16 weights (x86 with AVX2 but no native bf16, where oneDNN
    cannot pack them). There the bf16 engine sampled 1.5x, 1.35x and 1.15x faster than fp32 at
    batch 1, 8 and 32 (2-core AMD EPYC, bench/llamacpp.py) with half the weights in memory.
    Training keeps `preferred_dtype` (fp32 there): its sampler's logprobs then match the trainer's
    to ~1e-6 instead of bf16's ~0.015 nats."""
    preferred = preferred_dtype()
    return torch.bfloat16 if preferred == torch.float32 and bf16_kernel_runs() else preferred


def serving_options() -> dict[str, torch.dtype]:
    """The Engine dtypes for a process that only serves: `serving_dtype`, and where hone's kernel
    can run it (x86 with AVX2 or AVX-512), a bf16 LM head too, one tensor with a tied embedding.
    The kernel multiplies the bf16 head by the final hidden state with fp32 sums and writes fp32,
    so the logits are not rounded; only the head's weights are. That halves the bytes a batch-1
    step reads for the head (7.9 -> 3.3 ms, 2-core AMD EPYC, AVX2) and moved logprobs by 0.0146
    nats on average against fp32, where the bf16 layers alone move them 0.0142 (greedy chat
    replies, teacher-forced). Elsewhere the head stays fp32: a bf16 matmul there (oneDNN's, a
    GPU's) rounds the logits themselves to bf16."""
    dtype = serving_dtype()
    head = torch.bfloat16 if dtype == torch.bfloat16 and bf16_kernel_runs(head=True) else torch.float32
    return {"dtype": dtype, "lm_head_dtype": head}


def bf16_kernel_runs(head: bool = False) -> bool:
    """Whether bf16 linear layers here run on hone's kernel (x86 with AVX2 where oneDNN cannot pack
    bf16, the kernel built), or with `head`, whether a bf16 LM head does, giving fp32 logits (any
    x86 with AVX2). Asked of `Linear` itself, so this and the layers cannot disagree."""
    if torch.cuda.is_available():
        return False
    from hone.engine.llama import Linear

    return Linear(torch.zeros(8, 8, dtype=torch.bfloat16), fp32_out=head).mode == "kernel"
