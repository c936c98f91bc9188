"""The facts an inbox holds and how emails and questions word them, split into two template sides.

A `FactKind` is one type of fact (a flight's departure time, an invoice's amount, ...) with:
  - `slot`: what the fact is about (a destination, a vendor): named in the emails and in the
    question, so search can find it, and unique within an inbox;
  - `value`: a fresh answer of the kind's answer type (answers.AnswerKind);
  - wordings, each a `Sides` pair (train, held_out): email subjects, bodies (an intro line naming
    the slot, then a fact line with {value}), superseding updates, and questions.

Held-out inboxes use only the held_out wordings and train inboxes only the train ones, so no email
template or question wording of the test set is ever trained on; HELD_OUT_KINDS appear only in
held-out inboxes. Questions paraphrase: they name the slot but never copy the subject line.
Placeholders: {first} (the inbox owner's first name), {value}, {decoy} (another value of the same
type, e.g. the arrival time beside the departure), {day} (a date near the fact), and the slot's keys.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Callable

from hone.envs.inbox.answers import AnswerKind
import hone.envs.inbox.pools as pools


@dataclass(frozen=True)
class Sides:
    train: tuple
    held_out: tuple

    def of(self, held_out: bool) -> tuple:
        return self.held_out if held_out else self.train


class FactContext:
    """Per-inbox random state and the slot values and codes already used, so facts never collide."""

    def __init__(self, rng: random.Random, today: dt.date, currency: str):
        self.rng = rng
        self.today = today
        self.currency = currency
        self._taken: dict[str, set] = {}
        self._values: set[str] = set()

    def take(self, pool_name: str, pool: list):
        taken = self._taken.setdefault(pool_name, set())
        choice = self.rng.choice([p for p in pool if p not in taken])
        taken.add(choice)
        return choice

    def fresh(self, make: Callable[[random.Random], str]) -> str:
        """A value not used anywhere else in this inbox (so no two facts share an answer)."""
        while True:
            value = make(self.rng)
            if value not in self._values:
                self._values.add(value)
                return value

    def future(self, lo: int = 3, hi: int = 40) -> dt.date:
        return self.today + dt.timedelta(days=self.rng.randint(lo, hi))

    def person(self) -> str:
        return f"{self.rng.choice(pools.FIRST_NAMES)} {self.rng.choice(pools.LAST_NAMES)}"


# --------------------------------------------------------------------------- values


def clock_text(hour: int, minute: int) -> str:
    return f"{hour % 12 or 12}:{minute:02d} {'am' if hour < 12 else 'pm'}"


def date_text(day: dt.date) -> str:
    return f"{day:%A}, {day:%B} {day.day}"


def _time(lo: int, hi: int) -> Callable[[FactContext], str]:
    return lambda ctx: ctx.fresh(lambda r: clock_text(r.randint(lo, hi), r.choice([0, 15, 30, 45])))


def _date(lo: int, hi: int) -> Callable[[FactContext], str]:
    return lambda ctx: ctx.fresh(lambda r: date_text(ctx.future(lo, hi)))


def _money(lo: int, hi: int) -> Callable[[FactContext], str]:
    return lambda ctx: ctx.fresh(lambda r: f"{ctx.currency}{r.randint(lo, hi) + r.choice([0, 0.5, 0.99, 0.25]):,.2f}")


def _digits(n: int, prefix: str = "") -> Callable[[FactContext], str]:
    return lambda ctx: ctx.fresh(lambda r: prefix + str(r.randint(10 ** (n - 1), 10**n - 1)))


def _alnum(n: int) -> Callable[[FactContext], str]:
    letters, digits = "ABCDEFGHJKLMNPQRSTUVWXYZ", "23456789"

    def make(r: random.Random) -> str:
        chars = [r.choice(letters + digits) for _ in range(n - 1)] + [r.choice(digits)]  # always a digit: it is a code
        r.shuffle(chars)
        return "".join(chars)

    return lambda ctx: ctx.fresh(make)


def _flight_number(ctx: FactContext) -> str:
    return ctx.fresh(lambda r: f"{r.choice(pools.AIRLINES)[1]} {r.randint(100, 9899)}")


# --------------------------------------------------------------------------- kinds


@dataclass(frozen=True)
class FactKind:
    name: str
    answer_kind: AnswerKind
    slot: Callable[[FactContext], dict[str, str]]
    value: Callable[[FactContext], str]
    what: str  # the fact's subject as a phrase, for mentions: "your flight to {dest}"
    sender: str
    subjects: Sides
    bodies: Sides  # (intro naming the slot, fact line with {value})
    updates: Sides  # a later email that replaces {value}
    questions: Sides


def _one(key: str, pool: list) -> Callable[[FactContext], dict[str, str]]:
    return lambda ctx: {key: ctx.take(key, pool)}


KINDS: list[FactKind] = [
    FactKind(
        "flight_departure", "time", _one("dest", pools.DESTINATIONS), _time(6, 21), "your flight to {dest}",
        "Skyline Travel <bookings@skylinetravel.com>",
        Sides(("Your trip to {dest} is booked", "E-ticket: {dest}"), ("Itinerary update for {dest}",)),
        Sides(
            (("Hi {first}, your flight to {dest} is confirmed.", "Departure: {value}. Arrival: {decoy} local time."),
             ("Booking complete for {dest}.", "The plane lands at {decoy}; it leaves at {value}, so be at the gate early.")),
            (("{first}, here are the details of your journey to {dest}.", "Wheels up at {value}; you arrive around {decoy}."),),
        ),
        Sides(("Schedule change for your {dest} flight: it now departs at {value} instead.",),
              ("Our apologies: the {dest} departure moved. New departure time {value}.",)),
        Sides(("What time does my flight to {dest} take off?", "When do I fly out to {dest}?"),
              ("At what time does the plane to {dest} leave?", "Remind me of the departure time for {dest}.")),
    ),
    FactKind(
        "flight_number", "code", _one("dest", pools.DESTINATIONS), _flight_number, "your trip to {dest}",
        "Skyline Travel <bookings@skylinetravel.com>",
        Sides(("Ticket confirmation: {dest}", "You're going to {dest}"), ("Travel documents: {dest}",)),
        Sides(
            (("Dear {first}, thank you for booking your {dest} trip.", "You are on flight {value}. Seat 14C."),
             ("All set for {dest}!", "Flight number {value}, boarding closes 30 minutes before departure.")),
            (("{first}, your {dest} travel documents are attached.", "Operated as flight {value}; check the board at the airport."),),
        ),
        Sides(("Your {dest} booking was moved to flight {value}. Sorry for the change.",),
              ("Rebooking notice for {dest}: you now travel on {value}.",)),
        Sides(("Which flight number am I on for {dest}?", "What's the flight I'm taking to {dest}?"),
              ("Tell me the flight code for the {dest} journey.", "Which flight gets me to {dest}?")),
    ),
    FactKind(
        "hotel_checkin", "date", _one("city", pools.DESTINATIONS), _date(5, 60), "the hotel in {city}",
        "StayFinder <confirmations@stayfinder.com>",
        Sides(("Reservation confirmed: {city}", "Your stay in {city}"), ("{city}: we look forward to welcoming you",)),
        Sides(
            (("Hello {first}, your room in {city} is reserved.", "Check-in: {value}. Check-out: {decoy}."),
             ("Thank you for choosing us in {city}.", "You arrive on {value} and leave on {decoy}.")),
            (("Dear guest, your {city} booking is complete.", "Arrival date {value}; departure {decoy}."),),
        ),
        Sides(("We changed your {city} reservation as asked: you now check in on {value}.",),
              ("Your {city} stay has new dates. Arrival is now {value}.",)),
        Sides(("What day do I check in at the hotel in {city}?", "When does my {city} hotel stay start?"),
              ("On which date do I arrive at my {city} hotel?", "When am I due at the hotel in {city}?")),
    ),
    FactKind(
        "hotel_reference", "code", _one("city", pools.DESTINATIONS), _alnum(6), "the hotel in {city}",
        "StayFinder <confirmations@stayfinder.com>",
        Sides(("Booking receipt: {city}", "Hotel booked in {city}"), ("Your {city} accommodation",)),
        Sides(
            (("Hi {first}, your hotel in {city} is paid for.", "Confirmation number: {value}. Show it at the front desk."),
             ("Your accommodation in {city} is secured.", "Quote reference {value} when you arrive.")),
            (("{first}, thanks for staying with us in {city}.", "The desk will ask for code {value} at check-in."),),
        ),
        Sides(("We reissued your {city} booking. The new confirmation number is {value}.",),
              ("Replacement reference for {city}: {value}. The old one no longer works.",)),
        Sides(("What is the confirmation number of my hotel in {city}?", "Which reference do I give at the {city} hotel?"),
              ("What code does the {city} hotel front desk need?", "Give me the booking code for my {city} room.")),
    ),
    FactKind(
        "meeting_time", "time", _one("topic", pools.MEETING_TOPICS), _time(8, 17), "the {topic}",
        "Calendar <calendar@workspace.app>",
        Sides(("Invitation: {topic}", "{topic} - please join"), ("Agenda and timing: {topic}",)),
        Sides(
            (("Hi all, I'm setting up the {topic}.", "We start at {value} and should finish by {decoy}."),
             ("{first}, you are invited to the {topic}.", "Start time {value}; lunch is at {decoy}.")),
            (("Team, a note about the {topic}.", "Please be in the room at {value}; we wrap up at {decoy}."),),
        ),
        Sides(("Moving the {topic}: it now begins at {value}. Same room.",),
              ("Heads up, the {topic} got rescheduled to {value}.",)),
        Sides(("When does the {topic} start?", "What time should I show up for the {topic}?"),
              ("What's the start time of the {topic}?", "At what hour does the {topic} begin?")),
    ),
    FactKind(
        "invoice_amount", "money", _one("vendor", pools.VENDORS), _money(40, 2400), "the {vendor} invoice",
        "{vendor} <billing@accounts.example>",
        Sides(("Invoice from {vendor}", "{vendor}: your bill is ready"), ("Statement of account - {vendor}",)),
        Sides(
            (("Dear {first}, please find your {vendor} invoice attached.", "Amount due: {value}. Previous balance: {decoy}."),
             ("Thank you for your business with {vendor}.", "This month's total is {value}; last month was {decoy}.")),
            (("Hello {first}, {vendor} here with your latest statement.", "Please pay {value} (you paid {decoy} last time)."),),
        ),
        Sides(("Correction from {vendor}: the amount due is {value}, not what we sent before.",),
              ("{vendor} billing error fixed. Your corrected total is {value}.",)),
        Sides(("How much do I owe {vendor}?", "What is the total on the {vendor} bill?"),
              ("What amount is {vendor} asking me to pay?", "How much is the {vendor} charge?")),
    ),
    FactKind(
        "invoice_due", "date", _one("vendor", pools.VENDORS), _date(5, 45), "the {vendor} invoice",
        "{vendor} <billing@accounts.example>",
        Sides(("{vendor} invoice", "Payment request from {vendor}"), ("{vendor}: payment reminder",)),
        Sides(
            (("Hi {first}, your {vendor} invoice is ready.", "Please pay by {value}. Issued on {decoy}."),
             ("{vendor} account notice.", "Payment is due on {value}; the service period ended {decoy}.")),
            (("Dear customer, {vendor} would like to remind you of an open invoice.", "The deadline for payment is {value}."),),
        ),
        Sides(("{vendor} extended your deadline: payment is now due {value}.",),
              ("Good news from {vendor}, you have until {value} to pay.",)),
        Sides(("When is the {vendor} payment due?", "By what date must I pay {vendor}?"),
              ("What's the deadline for the {vendor} invoice?", "When do I have to settle the {vendor} bill?")),
    ),
    FactKind(
        "delivery_tracking", "code", _one("item", pools.ITEMS), _digits(10), "your {item} order",
        "Northbay Orders <orders@northbay.com>",
        Sides(("Your {item} has shipped", "Shipping update: {item}"), ("{item}: on its way",)),
        Sides(
            (("Good news {first}, the {item} you ordered is on its way.", "Tracking number: {value}."),
             ("We packed your {item} this morning.", "Follow the parcel with tracking ID {value}.")),
            (("Hi {first}, your {item} left our warehouse.", "Use {value} on the courier's site to follow it."),),
        ),
        Sides(("Your {item} was re-sent in a new parcel. New tracking number {value}.",),
              ("The courier reissued your {item} shipment: tracking {value}.",)),
        Sides(("What is the tracking number for my {item}?", "How can I track the {item} I bought?"),
              ("Which tracking code do I use for the {item} parcel?", "Give me the tracking number of the {item} delivery.")),
    ),
    FactKind(
        "door_code", "code", _one("office", pools.OFFICE_CITIES), _digits(4), "the {office} office",
        "Facilities <facilities@officeops.example>",
        Sides(("Access to the {office} office", "{office} office: getting in"), ("Visiting {office}",)),
        Sides(
            (("Hi {first}, welcome to the {office} office next week.", "The front door code is {value}."),
             ("Notes for your visit to {office}.", "Key in {value} at the side entrance.")),
            (("{first}, some practical notes for {office}.", "The keypad by the entrance takes {value}."),),
        ),
        Sides(("We changed the {office} door code this week. It is now {value}.",),
              ("Security update for {office}: the entry code is {value} from today.",)),
        Sides(("What's the door code for the {office} office?", "How do I get into the {office} office?"),
              ("Which code opens the {office} office?", "What do I type at the {office} office door?")),
    ),
    FactKind(
        "dinner_time", "time", _one("restaurant", pools.RESTAURANTS), _time(18, 21), "dinner at {restaurant}",
        "{restaurant} <bookings@tablefor.app>",
        Sides(("Table booked at {restaurant}", "{restaurant}: see you soon"), ("Your reservation, {restaurant}",)),
        Sides(
            (("Thanks {first}, we have a table for you at {restaurant}.", "Your booking is for {value}; the kitchen closes at {decoy}."),
             ("{restaurant} is happy to host you.", "We'll see you at {value}.")),
            (("Dear {first}, your evening at {restaurant} is confirmed.", "Arrive for {value}; last orders at {decoy}."),),
        ),
        Sides(("Your {restaurant} table was moved to {value}, as requested.",),
              ("{restaurant} update: we can now seat you at {value}.",)),
        Sides(("What time is our table at {restaurant}?", "When is the {restaurant} dinner booking?"),
              ("For what time did I reserve at {restaurant}?", "What hour is the {restaurant} reservation?")),
    ),
    FactKind(
        "dentist_date", "date", _one("doctor", pools.DOCTORS), _date(3, 40), "your appointment with Dr. {doctor}",
        "Smile Dental <appointments@smiledental.com>",
        Sides(("Appointment reminder: Dr. {doctor}", "Dental check-up with Dr. {doctor}"), ("Dr. {doctor}: your visit",)),
        Sides(
            (("Dear {first}, this is Dr. {doctor}'s office.", "Your appointment is on {value} at our main clinic."),
             ("Hello {first}, Dr. {doctor} will see you for a check-up.", "Please come in on {value}.")),
            (("{first}, a reminder from Dr. {doctor}'s team.", "We have you down for {value}."),),
        ),
        Sides(("Dr. {doctor} had to reschedule you. Your new appointment is {value}.",),
              ("Change of plan from Dr. {doctor}'s office: please come on {value} instead.",)),
        Sides(("When is my appointment with Dr. {doctor}?", "What day do I see Dr. {doctor}?"),
              ("On what date is the visit to Dr. {doctor}?", "When am I booked in with Dr. {doctor}?")),
    ),
    FactKind(
        "race_bib", "code", _one("race", pools.RACES), _digits(4), "the {race}",
        "RaceDay Entries <entries@raceday.run>",
        Sides(("{race}: you're registered", "Entry confirmed - {race}"), ("{race} race pack",)),
        Sides(
            (("Congratulations {first}, you're in the {race}!", "Your bib number is {value}."),
             ("Thanks for entering the {race}.", "Collect bib {value} at the expo.")),
            (("{first}, race week for the {race} is here.", "You'll be wearing number {value}."),),
        ),
        Sides(("We reassigned numbers for the {race}. Yours is now {value}.",),
              ("{race} correction: please use bib {value} instead.",)),
        Sides(("What is my bib number for the {race}?", "Which number do I wear in the {race}?"),
              ("What race number did I get for the {race}?", "Tell me my {race} bib.")),
    ),
    FactKind(
        "pickup_time", "time", _one("activity", pools.ACTIVITIES), _time(15, 18), "{activity} pickup",
        "Family <home@family.example>",
        Sides(("{activity} this week", "Re: {activity}"), ("Who collects after {activity}?",)),
        Sides(
            (("Hey {first}, can you do the {activity} pickup this week?", "It finishes at {value}; drop-off is {decoy}."),
             ("Quick one about {activity}.", "Pickup is at {value}, please don't be late.")),
            (("{first}, about {activity} on Thursday.", "Be at the gate by {value}."),),
        ),
        Sides(("{activity} runs late this week, pickup is now {value}.",),
              ("Change for {activity}: collect at {value}.",)),
        Sides(("What time is the {activity} pickup?", "When do I collect the kids from {activity}?"),
              ("At what time does {activity} end for pickup?", "When should I be at {activity} to collect?")),
    ),
    # ---- held-out kinds: only in held-out inboxes, never trained on
    FactKind(
        "parking_permit", "code", _one("venue", pools.GYMS), _alnum(7), "parking at {venue}",
        "Parking Services <permits@parkwise.example>",
        Sides((), ("Parking permit for {venue}", "{venue} car park")),
        Sides((), (("Hi {first}, your parking at {venue} is approved.", "Display permit number {value} on the dashboard."),
                   ("{venue} parking registration complete.", "Your permit ID is {value}."))),
        Sides((), ("A new permit was issued for {venue}: {value}. Please bin the old one.",)),
        Sides((), ("What's my parking permit number at {venue}?", "Which permit do I show when parking at {venue}?")),
    ),
    FactKind(
        "repair_quote", "money", _one("appliance", pools.ITEMS), _money(60, 900), "the {appliance} repair",
        "FixIt Repairs <quotes@fixit.example>",
        Sides((), ("Repair quote: {appliance}", "{appliance} repair estimate")),
        Sides((), (("Hello {first}, we had a look at your {appliance}.", "The repair will cost {value}; a new one is {decoy}."),
                   ("Thanks for bringing in the {appliance}.", "Our quote for the fix is {value}."))),
        Sides((), ("Revised {appliance} quote after the parts arrived: {value}.",)),
        Sides((), ("How much will fixing the {appliance} cost?", "What is the repair quote for the {appliance}?")),
    ),
    FactKind(
        "vet_time", "time", _one("pet", [p for p, _ in pools.PETS]), _time(9, 17), "{pet}'s vet visit",
        "Parkside Vets <care@parksidevets.com>",
        Sides((), ("Vet appointment for {pet}", "{pet}'s check-up")),
        Sides((), (("Hi {first}, {pet} is due for a check-up.", "We booked {pet} in at {value}."),
                   ("Appointment confirmed for {pet}.", "Please arrive at {value}; the clinic closes at {decoy}."))),
        Sides((), ("We moved {pet}'s appointment to {value}.",)),
        Sides((), ("What time is {pet}'s vet appointment?", "When do I take {pet} to the vet?")),
    ),
]
HELD_OUT_KINDS = frozenset({"parking_permit", "repair_quote", "vet_time"})
TRAIN_KINDS = [k for k in KINDS if k.name not in HELD_OUT_KINDS]
KIND_BY_NAME = {k.name: k for k in KINDS}

# someone mentions the subject but not the fact
MENTIONS = Sides(
    ("Looking forward to {what}! I'll send the details when I have them.", "Did you sort out {what} yet? Let me know.",
     "Reminder to self: check {what} this week."),
    ("Any news on {what}? Nothing from them yet.", "Just flagging {what} - details still to come."),
)
# the same kind of fact, for someone else: a reader can tell it is not the owner's
FORWARDS = Sides(
    ("Forwarding {other}'s details so you have them (this is theirs, not yours):",),
    ("FYI, {other} asked me to pass this on. It's for them, not for you:",),
)
