"""Score one inbox episode the way a user would rank it.

Ordering, best to worst (each tier's range does not overlap the next):

    correct answer          1.0  + 0.1 if it cites the answer email it saw  + up to 0.1 for fewer turns
                                 - 0.05 per malformed tool call (at most 0.2)          -> [0.8, 1.2]
    right fact, not alone   0.4  + the same partial credits as below                  -> [0.2, 0.6]
    no answer / "I don't know" / out of turns
                            0.0  + 0.1 if the answer email showed up in a search  + 0.1 if it was read
                                 - malformed penalty                                   -> [-0.2, 0.2]
    wrong answer           -0.5  + the same partial credits - malformed penalty        -> [-0.7, -0.3]
    only malformed calls   -1.0  (malformed calls and not one valid tool call, and not correct)

The source bonus needs the `answer` tool's `sources`; an agent that answers in plain text (the
demo's) never earns it, so its correct answers score 1.0 to 1.1.

Why: a confident wrong answer costs a user more than an honest "I don't know", and finding and
reading the right email is progress worth a little even when the answer goes wrong. `success`
is reported separately: true iff the strict checker (hone.envs.inbox.answers.is_correct) passes:
a short reply naming exactly one value of the answer's type, the right one. A reply that names
the right value among others, or buried in a long text, is "verbose": a tier of its own between
"I don't know" and correct, so training is pulled first towards the right fact and then towards
saying it alone.

A reply is "I don't know" when it is empty, or says so ("I don't know", "couldn't find that
email", ...) and nothing else: a hedge with a guess ("not sure, maybe 4821") is a wrong answer,
otherwise hedging every guess would be a free way out of the wrong-answer penalty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from hone.envs.inbox.answers import AnswerKind, candidates, gold_value, is_correct

SOURCE_BONUS = 0.1
TURN_BONUS = 0.1
FOUND_CREDIT = 0.1
READ_CREDIT = 0.1
MALFORMED_PENALTY = 0.05
VERBOSE_CREDIT = 0.4  # the right fact among others or in a long reply: better than "I don't know", not a success
MALFORMED_PENALTY_CAP = 0.2

_IDK = re.compile(
    r"\b(i\s+(do\s*n[o']?t|dont|do\s+not)\s+know|not\s+sure|no\s+idea|unknown|unable\s+to\s+(find|answer|determine)|"
    r"(can\s*not|can'?t|could\s*n'?t|could\s+not|did\s*n'?t|did\s+not)\s+find|not\s+found|no\s+(such|relevant|matching)\s+email|"
    r"no\s+(information|results?))\b"
)

# words that may sit around an "I don't know" without making it a guess
_IDK_FILLER = frozenset(
    """sorry unfortunately i im i'm me my you your the a an this that it its there is are was am be to of in on for
    about any anything email emails message messages inbox answer question information info relevant matching
    result results find found search searched looked know sure can cannot could did do not no t s m don couldn
    didn with where what which who when how here""".split()
)

Verdict = Literal["correct", "verbose", "wrong", "no_answer"]


@dataclass(frozen=True)
class EpisodeOutcome:
    gold_answer: str
    gold_message_id: str
    answer: str | None  # final reply text; None when the episode ended without one
    answer_kind: AnswerKind = "code"
    sources: tuple[str, ...] = ()  # message ids the answer cited
    read_ids: frozenset[str] = frozenset()  # ids opened with read_email
    found_ids: frozenset[str] = frozenset()  # ids that appeared in search results
    turns: int = 1  # model calls made
    max_turns: int = 6
    malformed_calls: int = 0  # replies that tried a tool call and could not be parsed
    valid_tool_calls: int = 0  # tool calls that parsed (whatever the tool then said)
    hit_turn_limit: bool = False


@dataclass(frozen=True)
class EpisodeScore:
    reward: float
    success: bool
    verdict: Verdict
    cited_source: bool
    found_answer_email: bool
    read_answer_email: bool
    components: dict[str, float] = field(default_factory=dict)  # the terms that summed to `reward`


# --------------------------------------------------------------------------- answer matching


def _is_idk(reply: str) -> bool:
    text = reply.lower().replace("\u2019", "'")
    if not _IDK.search(text):
        return False
    rest = _IDK.sub(" ", text)
    return all(w in _IDK_FILLER for w in re.findall(r"[a-z0-9']+", rest))


def judge_answer(reply: str | None, gold: str, kind: AnswerKind) -> Verdict:
    if reply is None or not reply.strip():
        return "no_answer"
    if is_correct(reply, gold, kind):
        return "correct"
    if gold_value(gold, kind) in candidates(reply, kind):
        return "verbose"
    return "no_answer" if _is_idk(reply) else "wrong"


# --------------------------------------------------------------------------- reward


def score_episode(outcome: EpisodeOutcome) -> EpisodeScore:
    verdict = judge_answer(outcome.answer, outcome.gold_answer, outcome.answer_kind)
    gold = outcome.gold_message_id
    found = gold in outcome.found_ids
    read = gold in outcome.read_ids
    cited = gold in outcome.sources and (found or read)  # a cited id the model never saw is a guess
    penalty = min(MALFORMED_PENALTY_CAP, MALFORMED_PENALTY * outcome.malformed_calls)

    if verdict == "correct":
        span = max(1, outcome.max_turns - 1)
        speed = min(1.0, max(0.0, (outcome.max_turns - outcome.turns) / span))  # 1 turn -> 1.0, max_turns -> 0.0
        components = {"base": 1.0, "source": SOURCE_BONUS * cited, "turns": TURN_BONUS * speed, "malformed": -penalty}
    elif outcome.malformed_calls > 0 and outcome.valid_tool_calls == 0:
        components = {"base": -1.0}
    else:
        base = {"wrong": -0.5, "verbose": VERBOSE_CREDIT}.get(verdict, 0.0)
        components = {"base": base, "found": FOUND_CREDIT * found, "read": READ_CREDIT * read, "malformed": -penalty}

    return EpisodeScore(
        reward=round(sum(components.values()), 6),
        success=verdict == "correct",
        verdict=verdict,
        cited_source=cited,
        found_answer_email=found,
        read_answer_email=read,
        components=components,
    )
