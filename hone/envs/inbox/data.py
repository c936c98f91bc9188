"""Synthetic inboxes that take searching and reading to answer, and their train/validation/test splits.

Everything is drawn from `random.Random` seeded by (seed, inbox id), never the global generator,
so the same (inbox_id, seed) gives the same inbox on every machine and Python version.

An inbox has a persona, ten facts and ~200-300 emails. Each fact (hone.envs.inbox.facts) has one
answer email and, drawn independently, the traps a real inbox sets:
  - superseded: an older email gives another value; a later update replaces it (the newest wins);
  - forwarded: the same kind of fact for someone else, forwarded and marked as theirs;
  - mentioned: an email names the subject but not the fact;
  - long: filler paragraphs between the line naming the subject and the line with the fact, so a
    search snippet around the subject does not show the fact and the email has to be read;
  - decoy: many fact lines hold a second value of the same type (arrival beside departure).
The rest is noise: newsletters, promotions, chat, notifications.

Splits are by inbox and by wording: train and validation inboxes use the train-side email and
question templates; test inboxes use only held-out templates and add fact kinds never trained
on (facts.HELD_OUT_KINDS). Validation is for every choice (steps, learning rate, prompt); the
test split is touched once per run.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from dataclasses import dataclass

import hone.envs.inbox.pools as pools
from hone.envs.inbox.answers import AnswerKind
from hone.envs.inbox.facts import FORWARDS, HELD_OUT_KINDS, KIND_BY_NAME, MENTIONS, TRAIN_KINDS, FactContext, FactKind

FACTS_PER_INBOX = 10
TRAP_RATES = {"superseded": 0.4, "forwarded": 0.3, "mentioned": 0.5, "long": 0.5}

# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Persona:
    name: str
    email: str
    company: str
    city: str


@dataclass(frozen=True)
class Email:
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    date: str  # ISO 8601, e.g. "2024-05-14T09:32:00"
    body: str


@dataclass(frozen=True)
class Question:
    question_id: str
    inbox_id: int
    question: str
    answer: str
    answer_message_id: str
    answer_kind: AnswerKind = "code"
    fact: str = ""  # the FactKind's name
    traps: tuple[str, ...] = ()  # which of TRAP_RATES this fact's emails set
    held_out: bool = False  # from a test inbox (held-out templates)
    seed: int = 0  # the seed of the inbox it belongs to, so a rollout can rebuild the inbox


@dataclass(frozen=True)
class Inbox:
    inbox_id: int
    persona: Persona
    emails: tuple[Email, ...]
    questions: tuple[Question, ...]
    seed: int = 0
    today: str = ""  # ISO date the inbox is "read" on; emails are dated before it
    held_out: bool = False

    def email(self, message_id: str) -> Email:
        for e in self.emails:
            if e.message_id == message_id:
                return e
        raise KeyError(message_id)


@dataclass(frozen=True)
class Splits:
    train: list[Question]
    validation: list[Question]
    test: list[Question]


# --------------------------------------------------------------------------- drafting


@dataclass
class _Draft:
    sender: str
    subject: str
    body: str
    days_ago: int
    question: tuple[str, str, FactKind, tuple[str, ...]] | None = None  # (question, answer, kind, traps)


def _fact_drafts(ctx: FactContext, kind: FactKind, first: str, held_out: bool) -> list[_Draft]:
    rng = ctx.rng
    slots = kind.slot(ctx)
    fill = dict(first=first, **slots)
    value, decoy = kind.value(ctx), kind.value(ctx)
    traps = [t for t, rate in TRAP_RATES.items() if rng.random() < rate]
    sender = kind.sender.format(**fill)
    subject = rng.choice(kind.subjects.of(held_out)).format(**fill)
    subject = subject[0].upper() + subject[1:]

    def body(v: str, d: str, to: str = first) -> tuple[str, bool]:
        intro, fact = rng.choice(kind.bodies.of(held_out))
        has_decoy = "{decoy}" in fact
        middle = rng.sample(pools.FILLER, rng.randint(2, 3)) if "long" in traps else []
        return "\n\n".join([intro, *middle, fact]).format(value=v, decoy=d, **{**fill, "first": to}), has_decoy

    days = rng.randint(8, 60)
    drafts = []
    if "superseded" in traps:  # the first email gives an old value; the update, days later, the answer
        old, _ = body(kind.value(ctx), decoy)
        drafts.append(_Draft(sender, subject, old, days))
        update = rng.choice(kind.updates.of(held_out)).format(value=value, **fill)
        answer_draft = _Draft(sender, rng.choice(["Update: ", "Re: ", "Change: "]) + subject, update, rng.randint(0, days - 1))
        if "long" in traps:  # only the replaced email was padded; the answer is a one-line update
            traps.remove("long")
    else:
        text, has_decoy = body(value, decoy)
        if has_decoy:
            traps.append("decoy")
        answer_draft = _Draft(sender, subject, text, days)
    if "forwarded" in traps:
        other = ctx.person()
        header = rng.choice(FORWARDS.of(held_out)).format(other=other)
        theirs, _ = body(kind.value(ctx), kind.value(ctx), to=other.split()[0])  # addressed to them, not the owner
        drafts.append(_Draft(f"{ctx.person()} <colleague@{first.lower()}-friends.example>", "Fwd: " + subject,
                             header + "\n\n" + theirs, rng.randint(0, 60)))
    if "mentioned" in traps:
        what = kind.what.format(**fill)
        note = rng.choice(MENTIONS.of(held_out)).format(what=what)
        drafts.append(_Draft(f"{ctx.person()} <friend@mail.example>", f"Re: {what}", note, rng.randint(0, 60)))
    question = rng.choice(kind.questions.of(held_out)).format(**fill)
    answer_draft.question = (question, value, kind, tuple(traps))
    return [answer_draft, *drafts]


def _noise(ctx: FactContext, first: str, domain: str) -> _Draft:
    rng = ctx.rng
    kind = rng.choice(["newsletter", "newsletter", "promo", "chat", "chat", "social", "system"])
    days = rng.randint(0, 90)
    if kind == "newsletter":
        name, addr = rng.choice(pools.NEWSLETTERS)
        lines = rng.sample(pools.NEWSLETTER_LINES, 3)
        subject = rng.choice([f"{name}: {lines[0]}", f"{name} - issue {rng.randint(40, 300)}", f"This week in {name}"])
        return _Draft(f"{name} <{addr}>", subject, "\n".join(["In this issue:", *lines, "Unsubscribe anytime."]), days)
    if kind == "promo":
        retailer, shop = rng.choice(pools.RETAILERS)
        subject, body = rng.choice(pools.PROMOS)
        return _Draft(f"{retailer} <deals@{shop}>", subject, body, days)
    if kind == "social":
        subject, addr, body = rng.choice(pools.SOCIAL)
        who = ctx.person()
        return _Draft(addr, subject.format(n=who), body.format(n=who), days)
    if kind == "system":
        subject, addr, body = rng.choice(pools.SYSTEM_NOTES)
        return _Draft(addr, subject, body, days)
    who = ctx.person()
    lines = rng.sample(pools.CHAT_LINES, 2)
    address = f"{who} <{who.split()[0].lower()}@{domain}>"
    return _Draft(address, rng.choice(pools.CHAT_SUBJECTS), f"Hi {first},\n\n" + " ".join(lines) + f"\n\n{who.split()[0]}", days)


# --------------------------------------------------------------------------- inboxes


@functools.lru_cache(maxsize=8)
def _persona_order(seed: int) -> tuple[tuple[str, str], ...]:
    """All (first, last) name pairs in a seed-dependent order: inbox i gets pair i, so personas never repeat."""
    pairs = [(f, last) for f in pools.FIRST_NAMES for last in pools.LAST_NAMES]
    random.Random(seed).shuffle(pairs)
    return tuple(pairs)


def generate_inbox(inbox_id: int, seed: int = 0, held_out: bool = False) -> Inbox:
    """One inbox of ~200-300 emails and FACTS_PER_INBOX questions, the same for the same arguments.

    `held_out` inboxes word everything with held-out templates and include the held-out fact kinds."""
    rng = random.Random(seed * 1_000_003 + inbox_id)
    first, last = _persona_order(seed)[inbox_id % len(_persona_order(seed))]
    company, domain = rng.choice(pools.COMPANIES)
    city, currency = rng.choice(pools.HOME_CITIES)
    persona = Persona(f"{first} {last}", f"{first.lower()}.{last.lower()}@{domain}", company, city)
    today = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 700))
    ctx = FactContext(rng, today, currency)

    held_kinds = [KIND_BY_NAME[name] for name in sorted(HELD_OUT_KINDS)] if held_out else []
    kinds = held_kinds + rng.sample(TRAIN_KINDS, FACTS_PER_INBOX - len(held_kinds))
    drafts = [d for kind in kinds for d in _fact_drafts(ctx, kind, first, held_out)]
    drafts += [_noise(ctx, first, domain) for _ in range(rng.randint(200, 300) - len(drafts))]

    # order by date, oldest first; ids follow that order so they say nothing about the kind
    stamps = [dt.datetime.combine(today - dt.timedelta(days=d.days_ago), dt.time(rng.randint(6, 22), rng.randint(0, 59)))
              for d in drafts]
    order = sorted(range(len(drafts)), key=lambda i: (stamps[i], i))
    emails, questions = [], []
    for k, i in enumerate(order):
        d = drafts[i]
        message_id = f"m{inbox_id}-{k:03d}"
        emails.append(Email(message_id, d.sender, (persona.email,), d.subject, stamps[i].isoformat(timespec="seconds"), d.body))
        if d.question is not None:
            text, answer, kind, traps = d.question
            questions.append((text, answer, message_id, kind, traps))
    rng.shuffle(questions)
    return Inbox(
        inbox_id,
        persona,
        tuple(emails),
        tuple(
            Question(f"q{inbox_id}-{j:02d}", inbox_id, text, answer, mid, kind.answer_kind, kind.name, traps, held_out, seed)
            for j, (text, answer, mid, kind, traps) in enumerate(questions)
        ),
        seed,
        today.isoformat(),
        held_out,
    )


@functools.lru_cache(maxsize=256)
def load_inbox(inbox_id: int, seed: int = 0, held_out: bool = False) -> Inbox:
    """`generate_inbox`, cached: rollouts look their inbox up from a question many times."""
    return generate_inbox(inbox_id, seed, held_out)


def inbox_of(question: Question) -> Inbox:
    return load_inbox(question.inbox_id, question.seed, question.held_out)


def make_splits(seed: int = 0, n_train: int = 40, n_validation: int = 6, n_test: int = 12) -> Splits:
    """Inboxes 0..n_train-1 train, the next n_validation validate (both with train-side templates),
    the next n_test are the held-out test set (held-out templates and fact kinds)."""

    def questions(ids: range, held_out: bool) -> list[Question]:
        return [q for i in ids for q in load_inbox(i, seed, held_out).questions]

    return Splits(
        train=questions(range(n_train), False),
        validation=questions(range(n_train, n_train + n_validation), False),
        test=questions(range(n_train + n_validation, n_train + n_validation + n_test), True),
    )

