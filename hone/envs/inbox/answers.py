"""Answers by type, and the strict check: a reply is correct when it names the fact and nothing else.

Each question's answer has a type: a clock time, a calendar date, an amount of money, or a code
(anything with digits: flight numbers, references, door codes, combinations). `candidates(text,
kind)` finds every value of that type a reply names, normalised so that equal facts compare equal:

    time   "3:15 pm", "3.15pm", "15:15"       -> minutes after midnight (915); am/pm is kept:
           "9:00 pm" is not "9:00 am", and "3:15" or "10:30" with no am/pm names no time at all
    date   "March 4", "4 March", "Tuesday, March 4", "2025-03-04"   -> (month, day)
    money  "€1,240.00", "1240 EUR", "1,240"    -> the amount as a number (1240.0)
    code   "BA 2491", "BA2491", "TRK-5521"      -> upper case, spaces and hyphens dropped;
           digit groups compare as numbers ("0481" is "481", "12-05-33" is "12-5-33")

`is_correct` is the strict checker: the reply is short (at most MAX_REPLY_WORDS words) and names
exactly one value of the answer's type, equal to the gold one. So pasting a search hit, listing
several guesses, or "9:00 pm" for "9:00 am" is wrong, while "The shift starts at 9am." is right. (A short snippet that
holds the answer and no other value of its type does pass: it names the fact alone.)
"""

from __future__ import annotations

import calendar
import re
from typing import Literal

from hone.envs.inbox.pools import AIRLINES

AnswerKind = Literal["time", "date", "money", "code"]
ANSWER_KINDS: tuple[AnswerKind, ...] = ("time", "date", "money", "code")
MAX_REPLY_WORDS = 16

_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}
_MONTHS.update({m.lower(): i for i, m in enumerate(calendar.month_abbr) if m})
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))

_TIME_12 = re.compile(r"\b(1[0-2]|0?[1-9])(?:[:.]([0-5]\d))?\s*([ap])\.?\s*m\b\.?", re.I)
# 24-hour only where it cannot be a 12-hour time missing its am/pm: "09:30", "15:15", not "10:30"
_TIME_24 = re.compile(r"\b(0\d|1[3-9]|2[0-3]):([0-5]\d)\b(?!\s*[ap]\.?\s*m\b)", re.I)
_DATE_MD = re.compile(rf"\b({_MONTH})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b", re.I)
_DATE_DM = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({_MONTH})\b", re.I)
_DATE_ISO = re.compile(r"\b\d{4}-(\d{2})-(\d{2})\b")
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\w])")
# a token with a digit ("4821", "K7QX2M", "12-5-33"), joined to an airline's code before it ("BA 2491")
_AIRLINE_CODES = "|".join(code for _, code, _ in AIRLINES)
_CODE = re.compile(rf"\b(?:({_AIRLINE_CODES})[\s-])?((?=[A-Za-z-]*\d)[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)\b", re.I)


def _time_candidates(text: str) -> set[int]:
    found = set()
    for hour, minute, half in _TIME_12.findall(text):
        h = int(hour) % 12 + (12 if half.lower() == "p" else 0)
        found.add(h * 60 + int(minute or 0))
    for hour, minute in _TIME_24.findall(text):
        found.add(int(hour) * 60 + int(minute))
    return found


def _date_candidates(text: str) -> set[tuple[int, int]]:
    found = set()
    for month, day in _DATE_MD.findall(text):
        found.add((_MONTHS[month.lower()], int(day)))
    for day, month in _DATE_DM.findall(text):
        found.add((_MONTHS[month.lower()], int(day)))
    for month, day in _DATE_ISO.findall(text):
        found.add((int(month), int(day)))
    return {(m, d) for m, d in found if 1 <= d <= 31}


def _without(text: str, *patterns: re.Pattern[str]) -> str:
    for pattern in patterns:
        text = pattern.sub(" ", text)
    return text


def _money_candidates(text: str) -> set[float]:
    # times and dates hold numbers that are not amounts
    rest = _without(text, _TIME_12, _TIME_24, _DATE_ISO, _DATE_MD, _DATE_DM)
    return {float(whole.replace(",", "") + ("." + frac if frac else "")) for whole, frac in _NUMBER.findall(rest)}


def normalise_code(code: str) -> str:
    compact = re.sub(r"\s", "", code).upper()
    if re.fullmatch(r"\d+(-\d+)*", compact):  # a combination keeps its groups: 12-5-33 is not 12-53-3
        return "-".join(str(int(group)) for group in compact.split("-"))
    return compact.replace("-", "")


def _code_candidates(text: str) -> set[str]:
    rest = _without(text, _TIME_12, _TIME_24, _DATE_ISO, _DATE_MD, _DATE_DM)
    return {normalise_code(prefix + code) for prefix, code in _CODE.findall(rest)}


def candidates(text: str, kind: AnswerKind) -> set:
    """Every value of type `kind` that `text` names, normalised (see the module docstring)."""
    if kind == "time":
        return _time_candidates(text)
    if kind == "date":
        return _date_candidates(text)
    if kind == "money":
        return _money_candidates(text)
    if kind == "code":
        return _code_candidates(text)
    raise ValueError(f"unknown answer kind {kind!r}; expected one of {', '.join(ANSWER_KINDS)}")


_PATTERNS = {"time": (_TIME_12, _TIME_24), "date": (_DATE_MD, _DATE_DM, _DATE_ISO), "money": (_NUMBER,), "code": (_CODE,)}


def first_value(text: str, kind: AnswerKind) -> str | None:
    """The first span of `text` that names a value of `kind`, as written there."""
    if kind in ("money", "code"):  # their digits also occur inside times and dates
        for pattern in (*_PATTERNS["time"], *_PATTERNS["date"]):
            text = pattern.sub(lambda m: " " * len(m.group(0)), text)
    spans = [m for pattern in _PATTERNS[kind] for m in pattern.finditer(text)]
    if not spans:
        return None
    return min(spans, key=lambda m: m.start()).group(0).strip()


def gold_value(answer: str, kind: AnswerKind):
    """The one normalised value a gold answer names; ValueError when it names none or several."""
    found = candidates(answer, kind)
    if len(found) != 1:
        raise ValueError(f"gold answer {answer!r} names {len(found)} values of kind {kind!r}, not 1")
    return next(iter(found))


def is_correct(reply: str | None, answer: str, kind: AnswerKind) -> bool:
    """The strict check: a short reply naming exactly one value of `kind`, the gold one."""
    if not reply or len(reply.split()) > MAX_REPLY_WORDS:
        return False
    return candidates(reply, kind) == {gold_value(answer, kind)}
