"""A relative LLM judge: every attempt of a group scored in one call, against any OpenAI-compatible endpoint.

1. One call per group: the judge sees all attempts side by side and scores them relative to each
   other (RULER-style), which is easier and more consistent than absolute grading one by one.
2. The judge is any chat-completions endpoint: OpenAI, vLLM, a model served by `hone serve`, or an
   in-process hone backend (pass its `openai_client()` to `Judge`).
3. The answer's form is asked for with a JSON schema of exactly this group's scores (each id once, in
   order; a short explanation; a score from 0 to 1 in steps of 0.1). A server that enforces
   response_format (hone's own, vLLM, OpenAI) cannot answer outside it. Answers are still checked
   (every id exactly once, scores in [0, 1]); an unusable one is sent back to the judge with what was
   wrong, at most `max_retries` times, then JudgeError.
4. Good answers are cached on disk under sha256(model, rubric, prompt): a repeated group costs no
   call. Tokens, seconds, retries and cache hits come back in JudgeResult and in step metrics.
5. A JudgeError is a rollout failure, not a crash: `judge_groups` moves a group whose judging
   failed into failures and checks the same budget `gather_groups` uses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import openai

from hone.traffic import UNLOGGED_HEADERS
from hone.errors import JudgeError, TooManyFailuresError
from hone.files import write_file_atomically
from hone.rewards.prompt import (
    DEFAULT_RUBRIC,
    JudgeAnswerError,
    JudgePrompt,
    build_judge_prompt,
    parse_scores,
    retry_messages,
)
from hone.rl.gather import GatherConfig, failure_budget
from hone.rl.trajectory import Trajectory, TrajectoryGroup
from hone.types import FailureRecord

CACHE_VERSION = 1  # bump when the prompt or the cached record changes meaning
MAX_EXPLANATION_CHARS = 100  # 6 attempts stay well inside a few hundred tokens
SCORE_STEPS = [round(0.1 * k, 1) for k in range(11)]  # 0.0, 0.1, ..., 1.0


@dataclass(frozen=True)
class JudgeConfig:
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "smollm2-135m"
    api_key_env: str = "HONE_JUDGE_API_KEY"  # falls back to OPENAI_API_KEY, then a dummy key for local servers
    max_retries: int = 2  # extra calls after an unusable answer or a failed request
    temperature: float = 0.0
    max_tokens: int = 1024
    timeout: float = 120.0  # seconds per request
    http_retries: int = 2  # the openai client's own retries (connection errors, 429, 5xx), with backoff
    # how the answer's form is asked for: "json_schema" sends a schema of exactly this group's scores
    # (a hone server enforces it, so every answer parses); "json_object" any JSON; "none" nothing
    answer_format: Literal["json_schema", "json_object", "none"] = "json_schema"
    max_tool_chars: int = 600  # tool outputs longer than this are clipped in the prompt
    cache: bool = True
    cache_dir: str | None = None  # None = $HONE_HOME/judge-cache (HONE_HOME defaults to ~/.cache/hone)

    def api_key(self) -> str:
        return os.environ.get(self.api_key_env) or os.environ.get("OPENAI_API_KEY") or "hone-local"

    def cache_path(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        return Path(os.environ.get("HONE_HOME", Path.home() / ".cache" / "hone")) / "judge-cache"


@dataclass
class JudgeResult:
    """Scores for one group, in trajectory order, and what the judging cost."""

    scores: list[float]
    explanations: list[str]
    unique_attempts: int = 0  # attempts the judge saw (identical ones are sent once)
    calls: int = 0  # HTTP requests made (0 on a cache hit)
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cache_hit: bool = False

    def usage(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("scores", "explanations")}


# --------------------------------------------------------------------------- the judge
class Judge:
    """A judge endpoint with its client and cache; reuse one across groups and steps."""

    def __init__(self, config: JudgeConfig, client: openai.AsyncOpenAI | None = None):
        self.config = config
        self._own_client = client is None
        self.client = client or openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=config.api_key(),
            timeout=config.timeout,
            max_retries=config.http_retries,
            default_headers=UNLOGGED_HEADERS,  # a judge served by hone: its calls are not the judge model's traffic
        )
        self.cache = _DiskCache(config.cache_path()) if config.cache else None

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.close()

    async def __aenter__(self) -> "Judge":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def score(self, trajectories: Sequence[Trajectory], rubric: str | None = None) -> JudgeResult:
        """Score `trajectories` relative to each other; raise JudgeError if the judge fails."""
        started = time.perf_counter()
        if not trajectories:
            return JudgeResult(scores=[], explanations=[])
        rubric = rubric or DEFAULT_RUBRIC
        prompt = build_judge_prompt(trajectories, rubric, self.config.max_tool_chars)
        result = JudgeResult(scores=[], explanations=[], unique_attempts=len(prompt.ids))

        # 1) the cache: a hit makes no request
        key = _cache_key(self.config.model, rubric, prompt.messages)
        parsed = None
        cached = self.cache.get(key) if self.cache else None
        if cached is not None:
            try:
                parsed = parse_scores(cached, prompt.ids)
                result.cache_hit = True
            except JudgeAnswerError:
                parsed = None  # a stale or foreign record: judge afresh

        # 2) ask, check, and ask again with what was wrong
        if parsed is None:
            try:
                text, parsed = await self._ask(prompt, result)
            finally:
                result.seconds = time.perf_counter() - started
            if self.cache:
                self.cache.put(key, text)

        # 3) every trajectory takes its attempt's score
        for index in prompt.attempt_of:
            score, explanation = parsed[prompt.ids[index]]
            result.scores.append(score)
            result.explanations.append(explanation)
        result.seconds = time.perf_counter() - started
        return result

    async def _ask(self, prompt: JudgePrompt, result: JudgeResult) -> tuple[str, dict[str, tuple[float, str]]]:
        messages = prompt.messages
        problem = ""
        for attempt in range(self.config.max_retries + 1):
            result.retries = attempt
            try:
                text = await self._complete(messages, prompt.ids, result)
            except openai.APIStatusError as exc:
                problem = f"the request failed with HTTP {exc.status_code}: {_short(exc.message)}"
                if exc.status_code in (400, 401, 403, 404, 422):  # asking again cannot help
                    break
                continue
            except openai.APIError as exc:  # connection refused, timeout
                problem = f"the request failed: {_short(str(exc))}"
                continue
            try:
                return text, parse_scores(text, prompt.ids)
            except JudgeAnswerError as exc:
                problem = f"its answer was unusable ({exc}): {_short(text, 160)!r}"
                messages = retry_messages(prompt, text, str(exc))
        raise JudgeError(
            f"the judge {self.config.model} at {self.client.base_url} gave no usable scores "
            f"in {result.calls} calls; the last problem: {problem}",
            result,
        )

    async def _complete(self, messages: list[dict[str, str]], ids: Sequence[str], result: JudgeResult) -> str:
        extra: dict[str, Any] = {}
        if self.config.answer_format == "json_schema":
            extra["response_format"] = {"type": "json_schema", "json_schema": {"name": "scores", "schema": scores_schema(ids)}}
        elif self.config.answer_format == "json_object":
            extra["response_format"] = {"type": "json_object"}
        result.calls += 1
        response = await self.client.chat.completions.create(
            model=self.config.model,
            messages=messages,
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            **extra,
        )
        if response.usage is not None:
            result.prompt_tokens += response.usage.prompt_tokens or 0
            result.completion_tokens += response.usage.completion_tokens or 0
        if not response.choices:
            return ""
        return response.choices[0].message.content or ""


def scores_schema(ids: Sequence[str]) -> dict[str, Any]:
    """The JSON schema of a judge's answer for attempts `ids`: `{"scores": [...]}` with one entry per
    id, in order. Bounded everywhere (explanation length, score steps), so a small judge under a
    grammar cannot wander until it runs out of tokens."""

    def entry(attempt_id: str) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "id": {"const": attempt_id},
                "explanation": {"type": "string", "maxLength": MAX_EXPLANATION_CHARS},
                "score": {"enum": SCORE_STEPS},
            },
            "required": ["id", "explanation", "score"],
            "additionalProperties": False,
        }

    entries = [entry(i) for i in ids]
    scores = {"type": "array", "prefixItems": entries, "items": False, "minItems": len(entries), "maxItems": len(entries)}
    return {"type": "object", "properties": {"scores": scores}, "required": ["scores"], "additionalProperties": False}


# --------------------------------------------------------------------------- groups
async def judge_group(
    group: TrajectoryGroup, judge: JudgeConfig | Judge, rubric: str | None = None, *, set_reward: bool = True
) -> JudgeResult:
    """Score every trajectory of `group` in one judge call and write the scores onto them.

    Each trajectory gets `metrics["judge_score"]` and `metadata["judge_explanation"]`; with
    `set_reward` its `reward` becomes the score (the reward it had is kept in
    `metadata["code_reward"]`, where `combine_rewards` finds it). The group gets
    `metadata["judge"]`, the call's usage. Raises JudgeError if the judge fails.
    """
    if isinstance(judge, JudgeConfig):
        async with Judge(judge) as own:
            result = await own.score(group.trajectories, rubric)
    else:
        result = await judge.score(group.trajectories, rubric)
    for trajectory, score, explanation in zip(group.trajectories, result.scores, result.explanations):
        trajectory.metrics["judge_score"] = score
        trajectory.metadata["judge_explanation"] = explanation
        if set_reward:
            trajectory.metadata.setdefault("code_reward", trajectory.reward)
            trajectory.reward = score
    group.metadata["judge"] = result.usage()
    return result


async def judge_groups(
    groups: list[TrajectoryGroup],
    judge: JudgeConfig | Judge,
    rubric: str | None = None,
    *,
    set_reward: bool = True,
    gather_config: GatherConfig = GatherConfig(),
    concurrency: int = 4,
) -> dict[str, float]:
    """Judge every group; a group whose judging fails becomes failures within the gather budget.

    A failed group's trajectories are dropped from training and one FailureRecord per dropped
    trajectory is appended to its `exceptions`, so a judge failure counts exactly like the
    rollouts it loses. If rollout and judge failures together exceed the budget of
    `gather_config` (pass the one given to `gather_groups`), raise TooManyFailuresError.
    Returns the step metrics `judge/...` (tokens, seconds, calls, retries, cache hits, failures).
    """
    started = time.perf_counter()
    total = sum(len(g.trajectories) + len(g.exceptions) for g in groups)  # every rollout started
    semaphore = asyncio.Semaphore(concurrency)
    results: list[JudgeResult] = []
    judge_failures: list[FailureRecord] = []
    shared = Judge(judge) if isinstance(judge, JudgeConfig) else judge

    async def one(group: TrajectoryGroup) -> None:
        if not group.trajectories:
            return
        async with semaphore:
            try:
                results.append(await judge_group(group, shared, rubric, set_reward=set_reward))
            except JudgeError as exc:
                if exc.result is not None:
                    results.append(exc.result)  # its tokens were spent all the same
                record = FailureRecord.from_exception(exc)
                group.exceptions.extend(record.model_copy() for _ in group.trajectories)
                group.metadata["judge_error"] = str(exc)
                group.trajectories = []
                judge_failures.append(record)

    try:
        await asyncio.gather(*(one(g) for g in groups))
    finally:
        if shared is not judge:
            await shared.aclose()

    failures = [f for g in groups for f in g.exceptions]
    budget = failure_budget(gather_config, total)
    if len(failures) > budget:
        first = judge_failures[0] if judge_failures else failures[0]
        raise TooManyFailuresError(
            f"{len(failures)} of {total} rollouts failed or could not be judged, more than the budget of {budget} "
            f"(max_exceptions={gather_config.max_exceptions}); the first: {first.type}: {first.message}"
        )
    return {
        "judge/calls": float(sum(r.calls for r in results)),
        "judge/retries": float(sum(r.retries for r in results)),
        "judge/cache_hits": float(sum(r.cache_hit for r in results)),
        "judge/prompt_tokens": float(sum(r.prompt_tokens for r in results)),
        "judge/completion_tokens": float(sum(r.completion_tokens for r in results)),
        "judge/groups_failed": float(len(judge_failures)),
        "time/judge": time.perf_counter() - started,
    }


# --------------------------------------------------------------------------- cache
def _cache_key(model: str, rubric: str, messages: list[dict[str, str]]) -> str:
    payload = json.dumps({"v": CACHE_VERSION, "model": model, "rubric": rubric, "messages": messages}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class _DiskCache:
    """One small JSON file per judged prompt, written atomically (a killed run leaves no torn file)."""

    def __init__(self, root: Path):
        self.root = root

    def get(self, key: str) -> str | None:
        path = self.root / key[:2] / f"{key}.json"
        try:
            return json.loads(path.read_text())["answer"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, answer: str) -> None:
        write_file_atomically(self.root / key[:2] / f"{key}.json", json.dumps({"answer": answer}))


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
