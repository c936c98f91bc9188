"""Synthetic inboxes: a persona, a few dozen emails, and questions with one answer email each.

Everything is drawn from `random.Random` seeded by (seed, inbox id), never the global generator,
so the same (inbox_id, seed) gives the same inbox on every machine and Python version.

How an inbox is built:
  1) a persona (name, role, company, city, family, habits) — unique per inbox id for a seed;
  2) "fact" emails (travel, meetings, invoices, deliveries, access codes, family logistics,
     habit-driven ones like race bibs or concert seats), each about a *slot* (a destination, a
     vendor, an item, ...) that no other email in the inbox shares, so a question about that slot
     has exactly one answer email;
  3) distractors that mention a slot without its fact ("your order is confirmed, tracking to
     follow") and plain noise (newsletters, promotions, chat);
  4) questions for a subset of the fact emails, worded naturally and always naming the slot, so
     keyword search from the question can find the answer email.

Splits are by inbox: `make_splits` puts whole inboxes (and so personas) in train or held-out.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import string
from dataclasses import dataclass, field
from typing import Callable

# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Persona:
    name: str
    email: str
    role: str
    company: str
    city: str
    habits: tuple[str, ...]
    partner: str | None = None
    kids: tuple[str, ...] = ()


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
    aliases: tuple[str, ...] = ()  # other forms of the answer that count as correct ("3:15" for "3:15 pm")
    seed: int = 0  # the seed of the inbox it belongs to, so a rollout can rebuild the inbox


@dataclass(frozen=True)
class Inbox:
    inbox_id: int
    persona: Persona
    emails: tuple[Email, ...]
    questions: tuple[Question, ...]
    seed: int = 0
    today: str = ""  # ISO date the inbox is "read" on; emails are dated before it

    def email(self, message_id: str) -> Email:
        for e in self.emails:
            if e.message_id == message_id:
                return e
        raise KeyError(message_id)


# --------------------------------------------------------------------------- pools

FIRST_NAMES = [
    "Maya", "Jonas", "Priya", "Tomás", "Amara", "Lena", "Kwame", "Sofia", "Hiro", "Nadia", "Elliot", "Ines",
    "Rafael", "Greta", "Omar", "Chloe", "Mateo", "Yuki", "Zara", "Felix", "Aisha", "Lucas", "Freya", "Daniel",
    "Leila", "Marco", "Hannah", "Ravi", "Clara", "Theo", "Nia", "Anton", "Isla", "Samuel", "Mei", "Pablo",
    "Ruth", "Kenji", "Alma", "Victor",
]
LAST_NAMES = [
    "Okafor", "Lindqvist", "Raman", "Alves", "Mensah", "Fischer", "Novak", "Haddad", "Tanaka", "Moreau",
    "Kowalski", "Brennan", "Castillo", "Dubois", "Eriksen", "Farouk", "Galloway", "Hughes", "Ivanova", "Jensen",
    "Keller", "Larsen", "Marquez", "Nakamura", "Oduya", "Petrov", "Quinn", "Rossi", "Sandoval", "Thornton",
    "Ueda", "Varga", "Whitfield", "Xu", "Yilmaz", "Zimmer", "Abbott", "Bauer", "Coelho", "Duarte",
]
ROLES = [
    "product manager", "staff nurse", "data analyst", "architect", "high school teacher", "sales director",
    "software engineer", "operations lead", "graphic designer", "account manager", "research scientist",
    "HR business partner", "civil engineer", "marketing manager", "finance controller", "UX researcher",
]
COMPANIES = [
    ("Halcyon Labs", "halcyonlabs.com"), ("Brightwater Health", "brightwater.org"), ("Norrland Systems", "norrland.io"),
    ("Pinecrest Partners", "pinecrest.co"), ("Meridian Freight", "meridianfreight.com"), ("Solace Studio", "solace.studio"),
    ("Kestrel Analytics", "kestrel.ai"), ("Oakhurst School", "oakhurst.edu"), ("Bluefin Energy", "bluefin.energy"),
    ("Tidewater Bank", "tidewaterbank.com"), ("Fernhill Architects", "fernhill.archi"), ("Quarry Robotics", "quarryrobotics.com"),
    ("Lumen Media", "lumenmedia.net"), ("Granite Insurance", "graniteins.com"), ("Cobalt Retail", "cobaltretail.com"),
    ("Willow Biotech", "willowbio.com"),
]
HOME_CITIES = [
    ("London", "£"), ("Manchester", "£"), ("Dublin", "€"), ("Amsterdam", "€"), ("Berlin", "€"), ("Munich", "€"),
    ("Toronto", "$"), ("Chicago", "$"), ("Seattle", "$"), ("Boston", "$"), ("Denver", "$"), ("Austin", "$"),
    ("Melbourne", "$"), ("Copenhagen", "€"), ("Vienna", "€"), ("Edinburgh", "£"),
]
DESTINATIONS = [
    "Lisbon", "Porto", "Madrid", "Barcelona", "Rome", "Milan", "Athens", "Prague", "Budapest", "Krakow",
    "Stockholm", "Oslo", "Helsinki", "Reykjavik", "Zurich", "Geneva", "Marseille", "Nice", "Seville", "Valencia",
    "Istanbul", "Marrakech", "Tokyo", "Singapore", "Montreal", "Vancouver", "Lima", "Bogota", "Nairobi", "Cape Town",
]
OFFICE_CITIES = [
    "Leeds", "Rotterdam", "Hamburg", "Lyon", "Turin", "Gdansk", "Bilbao", "Antwerp", "Glasgow", "Bristol",
    "Frankfurt", "Utrecht", "Gothenburg", "Cork", "Brno", "Graz",
]
AIRLINES = [
    ("British Airways", "BA", "ba.com"), ("Lufthansa", "LH", "lufthansa.com"), ("TAP Air Portugal", "TP", "flytap.com"),
    ("KLM", "KL", "klm.com"), ("Iberia", "IB", "iberia.com"), ("Air France", "AF", "airfrance.fr"),
    ("SAS", "SK", "flysas.com"), ("Aer Lingus", "EI", "aerlingus.com"), ("Finnair", "AY", "finnair.com"),
    ("Delta", "DL", "delta.com"),
]
HOTELS = [
    ("Hotel Lumen", "Lumen"), ("Casa Alba", "Alba"), ("The Larkspur", "Larkspur"), ("Harbourview Inn", "Harbourview"),
    ("Palazzo Verde", "Verde"), ("Hotel Sorrel", "Sorrel"), ("The Ashgrove", "Ashgrove"), ("Quinta Mirador", "Mirador"),
    ("Hotel Cordelia", "Cordelia"), ("The Wren House", "Wren"), ("Albergo Stella", "Stella"), ("Hotel Kastanje", "Kastanje"),
]
TRAIN_LINES = [("ICE", "Deutsche Bahn"), ("TGV", "SNCF"), ("Eurostar", "Eurostar"), ("Frecciarossa", "Trenitalia"), ("AVE", "Renfe")]
MEETING_TOPICS = [
    "quarterly budget review", "roadmap planning session", "vendor onboarding call", "security audit kickoff",
    "design critique", "hiring committee", "customer advisory board", "sprint retrospective", "offsite planning",
    "pricing workshop", "data migration sync", "brand refresh review", "compliance training", "partner summit prep",
    "onboarding walkthrough", "capacity planning", "incident postmortem", "annual performance calibration",
]
ROOMS = [("the Aspen room", "Aspen"), ("Room 4B", "4B"), ("the Fjord room", "Fjord"), ("Boardroom 2", "Boardroom 2"),
         ("the Maple room", "Maple"), ("Room 12C", "12C"), ("the Atrium", "Atrium"), ("the Cedar room", "Cedar"),
         ("the Lighthouse room", "Lighthouse"), ("Room 7A", "7A")]
VENDORS = [
    "Brightline Cleaning", "Northwind Telecom", "Copperleaf Accounting", "Atlas Web Hosting", "Greenway Landscaping",
    "Ironclad Security", "Bluebird Plumbing", "Summit Legal", "Clearpath Insurance", "Riverside Dental",
    "Helio Solar", "Keystone Property", "Orchard Pediatrics", "Lantern Electric", "Fastlane Broadband",
    "Evergreen Pest Control", "Stonegate Storage", "Pioneer Tutoring",
]
ITEMS = [
    "standing desk", "espresso machine", "hiking boots", "noise-cancelling headphones", "air purifier",
    "robot vacuum", "cast iron skillet", "office chair", "electric kettle", "yoga mat", "bike helmet",
    "winter jacket", "mechanical keyboard", "blender", "tent", "desk lamp", "suitcase", "monitor arm",
    "water filter", "rain boots",
]
RETAILERS = [("Northbay", "northbay.com"), ("Crate & Hollow", "crateandhollow.com"), ("Outfield Sports", "outfield.com"),
             ("Gadgetry", "gadgetry.shop"), ("Homestead Goods", "homestead.store"), ("Peakline", "peakline.com")]
CARRIERS = ["UPS", "DHL", "FedEx", "DPD", "GLS", "Royal Mail", "USPS", "PostNL"]
WIFI_PLACES = ["lake cabin", "beach house", "coworking space", "guest apartment", "ski chalet", "studio loft", "farmhouse"]
WIFI_WORDS = ["maple", "harbor", "copper", "falcon", "meadow", "ember", "tidal", "juniper", "orbit", "pebble",
              "cobalt", "willow", "summit", "lantern", "saffron", "glacier"]
SERVICES = ["Bankly", "CloudVault", "Streamly", "PayNest", "TaxDesk", "HealthHub", "Ticketbox", "Shiftly", "Mailstone", "Rentwise"]
ACTIVITIES = ["swim practice", "piano lesson", "soccer training", "chess club", "art class", "drama club",
              "gymnastics", "robotics club", "ballet class", "tennis lesson"]
SCHOOL_EVENTS = ["spring concert", "science fair", "parent-teacher conference", "sports day", "book fair", "school play"]
SCHOOLS = ["Oakridge Primary", "Hillcrest Elementary", "St. Brigid's School", "Brookside Academy", "Lakeview Primary"]
DOCTORS = ["Alvarez", "Whitcombe", "Nakashima", "Oyelaran", "Petersen", "Castellano", "Adebayo", "Lindgren"]
RESTAURANTS = ["Osteria Fiore", "The Copper Pot", "Saffron Table", "Kin Izakaya", "La Petite Lune", "Ember & Oak",
               "Mesa Verde", "Noodle Foundry", "The Salt House", "Bistro Marlowe"]
PETS = [("Biscuit", "dog"), ("Pepper", "cat"), ("Mochi", "cat"), ("Rufus", "dog"), ("Juniper", "dog"), ("Olive", "cat")]
RACES = ["Riverside Half Marathon", "Harbour 10K", "Autumn Trail Run", "City Lights 5K", "Coastal Half Marathon"]
BANDS = ["The Paper Kites", "Glass Animals", "Khruangbin", "Big Thief", "Fleet Foxes", "Parcels", "Phoenix", "Alvvays"]
VENUES = ["the Roundhouse", "the Paradiso", "the Orpheum", "the Apollo", "the Fillmore", "the Forum"]
GYMS = ["Ironworks Gym", "Pulse Fitness", "Summit Climbing", "Blue Lane Pool", "Forge Athletics"]
HABITS = [
    "runs races on weekends", "loves live music", "trains at the gym before work", "volunteers at the food bank",
    "hosts a monthly book club", "cooks for friends on Fridays", "collects vinyl records", "takes weekend photography walks",
]
FOOD_BANKS = ["Eastside Food Bank", "Harbor Community Pantry", "Northgate Food Bank", "St. Anne's Pantry"]

NEWSLETTERS = [
    ("The Morning Brief", "news@morningbrief.com"), ("Product Hunt Daily", "digest@producthunt.com"),
    ("Recipe of the Week", "hello@weeknightkitchen.com"), ("Money Matters", "newsletter@moneymatters.io"),
    ("Design Weekly", "editor@designweekly.co"), ("The Garden Post", "letters@gardenpost.org"),
    ("Local Pulse", "updates@localpulse.news"), ("Dev Digest", "team@devdigest.dev"),
]
NEWSLETTER_LINES = [
    "Five habits that make mornings easier.", "Why sourdough is having a moment again.",
    "Interest rates: what the latest announcement means for savers.", "A quick guide to pruning roses in late summer.",
    "Ten tools our readers swear by this month.", "The best reads of the week, hand-picked by our editors.",
    "How one team cut their meeting load in half.", "Seasonal vegetables and three easy weeknight dinners.",
    "Reader mailbag: your questions about budgeting, answered.", "What we learned from a year of remote work.",
    "The quiet comeback of paper notebooks.", "A beginner's guide to composting on a balcony.",
]
PROMOS = [
    ("Sale ends Sunday: up to 40% off", "Our biggest sale of the season is here. Shop new arrivals and save on favourites."),
    ("You left something in your cart", "Still thinking it over? The items in your cart are waiting for you."),
    ("Members get free shipping this week", "Log in to your account to see member-only prices."),
    ("New arrivals just landed", "Fresh styles for the season. Browse the collection before it sells out."),
    ("Your points are about to expire", "Use your reward points before the end of the month."),
]
CHAT_SUBJECTS = ["Quick question", "Re: notes from today", "Lunch this week?", "Slides for tomorrow", "Catch up soon",
                 "Re: feedback on the draft", "Thanks!", "FYI", "Re: weekend plans", "Photos from Saturday"]
CHAT_LINES = [
    "Thanks for sending that over, I'll take a look tonight.", "Are you free for a coffee sometime next week?",
    "Great catching up earlier. Let's keep the momentum going.", "I added a few comments to the draft, nothing major.",
    "Can we push our chat to later in the week? Things are hectic.", "Loved the photos, thanks for sharing!",
    "No rush on this, whenever you get a chance.", "Let me know if you want me to loop anyone else in.",
]
SOCIAL = [
    ("{n} commented on your post", "notifications@friendbook.com", "{n} left a comment: \"Looks amazing, well done!\""),
    ("{n} wants to connect", "invitations@linkedpro.com", "{n} would like to add you to their professional network."),
    ("You have 3 new notifications", "noreply@friendbook.com", "See what your friends have been up to this week."),
    ("{n} shared an album with you", "photos@cloudsnap.com", "{n} shared 24 photos with you. Tap to view them."),
]
SYSTEM_NOTES = [
    ("Your monthly statement is ready", "statements@tidewaterbank.com", "Your statement for last month is now available in online banking."),
    ("Storage almost full", "alerts@cloudvault.io", "You are using 92% of your storage. Upgrade to keep syncing files."),
    ("Calendar: weekly agenda", "calendar@workspace.app", "Here is a summary of your week ahead. Have a productive week!"),
    ("Software update available", "updates@devicecare.com", "A new update is available for your laptop. Install it tonight."),
    ("Rate your recent order", "feedback@northbay.com", "How did we do? Tell us about your recent shopping experience."),
]


# --------------------------------------------------------------------------- formatting helpers


def _clock(hour: int, minute: int) -> tuple[str, tuple[str, ...]]:
    """'3:15 pm' plus the forms that also count: '15:15', '3:15', and '3 pm' on the hour."""
    h12 = hour % 12 or 12
    ampm = "am" if hour < 12 else "pm"
    text = f"{h12}:{minute:02d} {ampm}"
    aliases = [f"{hour}:{minute:02d}", f"{h12}:{minute:02d}"]
    if minute == 0:
        aliases.append(f"{h12} {ampm}")
    return text, tuple(dict.fromkeys(a for a in aliases if a != text))


def _md(d: dt.date) -> str:
    return f"{d:%B} {d.day}"


def _day(d: dt.date) -> str:
    return f"{d:%A}, {d:%B} {d.day}"


def _date_answer(d: dt.date) -> tuple[str, tuple[str, ...]]:
    return _md(d), (f"{d.day} {d:%B}", d.isoformat())


def _money(symbol: str, amount: float) -> str:
    return f"{symbol}{amount:,.2f}"


# --------------------------------------------------------------------------- generation context


@dataclass
class _Draft:
    sender: str
    subject: str
    body: str
    days_ago: int
    questions: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)  # (question, answer, aliases)
    cc: tuple[str, ...] = ()


class _Ctx:
    """Per-inbox random state plus the slots and codes already used (so facts never collide)."""

    def __init__(self, rng: random.Random, persona: Persona, today: dt.date, currency: str, domain: str):
        self.rng = rng
        self.persona = persona
        self.today = today
        self.currency = currency
        self.domain = domain
        self._taken: dict[str, list] = {}
        self._codes: set[str] = set()

    def take(self, pool_name: str, pool: list):
        """A pool member not yet used in this inbox under `pool_name`."""
        taken = self._taken.setdefault(pool_name, [])
        free = [p for p in pool if p not in taken]
        choice = self.rng.choice(free)
        taken.append(choice)
        return choice

    def code(self, make: Callable[[random.Random], str]) -> str:
        while True:
            value = make(self.rng)
            if value not in self._codes:
                self._codes.add(value)
                return value

    def digits(self, n: int) -> str:
        return self.code(lambda r: str(r.randint(10 ** (n - 1), 10**n - 1)))  # no leading zero

    def alnum(self, n: int) -> str:
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I
        return self.code(lambda r: "".join(r.choice(alphabet) for _ in range(n)))

    def future(self, lo: int = 3, hi: int = 40) -> dt.date:
        return self.today + dt.timedelta(days=self.rng.randint(lo, hi))

    def workday(self, lo: int, hi: int) -> dt.date:
        day = self.future(lo, hi)
        return day + dt.timedelta(days=7 - day.weekday()) if day.weekday() >= 5 else day  # weekend -> Monday

    def clock(self, lo: int = 8, hi: int = 19) -> tuple[str, tuple[str, ...]]:
        return _clock(self.rng.randint(lo, hi), self.rng.choice([0, 15, 30, 45]))

    def person(self) -> str:
        return f"{self.rng.choice(FIRST_NAMES)} {self.rng.choice(LAST_NAMES)}"

    def colleague_address(self, name: str) -> str:
        first, last = name.split(" ", 1)
        return f"{name} <{first.lower()}.{last.lower().replace(' ', '')}@{self.domain}>"

    def pick(self, *options):
        return self.rng.choice(options)


def _ask(ctx: _Ctx, wordings: list[str], answer: str, aliases: tuple[str, ...] = (), **slots) -> tuple[str, str, tuple[str, ...]]:
    return ctx.rng.choice(wordings).format(**slots), answer, aliases


# --------------------------------------------------------------------------- fact emails: travel


def _flight(ctx: _Ctx) -> list[_Draft]:
    dest = ctx.take("dest", DESTINATIONS)
    airline, code, domain = ctx.rng.choice(AIRLINES)
    number = f"{code} {ctx.digits(ctx.rng.choice([3, 4]))}"
    ref = ctx.alnum(6)
    seat = f"{ctx.rng.randint(3, 38)}{ctx.rng.choice('ABCDEF')}"
    when = ctx.future(5, 45)
    dep, dep_aliases = ctx.clock(6, 20)
    origin = ctx.persona.city
    slots = dict(dest=dest, airline=airline, number=number, ref=ref, seat=seat, day=_day(when), dep=dep, origin=origin)
    subject = ctx.pick(
        "Your booking is confirmed: {origin} to {dest}",
        "E-ticket receipt - {dest}, {day}",
        "Booking reference {ref}: your flight to {dest}",
        "Get ready for {dest}! Your flight details",
    ).format(**slots)
    body = ctx.pick(
        "Dear {name},\n\nThank you for booking with {airline}. Your flight to {dest} is confirmed.\n\n"
        "Flight: {number}\nFrom: {origin}\nTo: {dest}\nDeparts: {day} at {dep}\nSeat: {seat}\n"
        "Booking reference: {ref}\n\nOnline check-in opens 24 hours before departure.",
        "Hi {first},\n\nYou're all set for {dest}. Flight {number} leaves {origin} on {day} at {dep}. "
        "We've reserved seat {seat} for you. Keep your booking reference {ref} handy at the airport.\n\n{airline}",
        "Itinerary for {name}\n{origin} -> {dest}\n{day}, departure {dep}\n{airline} flight {number}, seat {seat}\n"
        "Booking reference {ref}. Baggage allowance: 1 cabin bag, 1 checked bag (23 kg).",
    ).format(name=ctx.persona.name, first=ctx.persona.name.split()[0], **slots)
    questions = [
        _ask(ctx, ["What is my flight number to {dest}?", "Which flight am I taking to {dest}?",
                   "What's the flight number for the {dest} trip?"], number, (number.replace(" ", ""),), dest=dest),
        _ask(ctx, ["What is the booking reference for my flight to {dest}?",
                   "What's the booking reference on the {dest} flight?"], ref, dest=dest),
        _ask(ctx, ["What seat do I have on the flight to {dest}?", "Which seat was assigned on my {dest} flight?"], seat, dest=dest),
        _ask(ctx, ["What time does my flight to {dest} depart?", "When does the {dest} flight leave? I need the time."],
             dep, dep_aliases, dest=dest),
    ]
    sender = ctx.pick(f"{airline} <no-reply@{domain}>", f"{airline} Reservations <bookings@{domain}>")
    drafts = [_Draft(sender, subject, body, ctx.rng.randint(3, 40), [ctx.rng.choice(questions)])]
    if ctx.rng.random() < 0.5:  # a reminder that names the trip but carries none of its facts
        drafts.append(_Draft(
            sender,
            ctx.pick("Your trip to {dest} is coming up", "Don't forget: {dest} soon").format(dest=dest),
            f"Your trip to {dest} is just around the corner. Check in online to save time at the airport, "
            "and review our baggage rules before you pack.",
            ctx.rng.randint(0, 3),
        ))
    return drafts


def _hotel(ctx: _Ctx) -> list[_Draft]:
    dest = ctx.take("dest", DESTINATIONS)
    hotel, core = ctx.take("hotel", HOTELS)
    conf = ctx.digits(8)
    checkin = ctx.future(5, 45)
    nights = ctx.rng.randint(2, 6)
    street = f"{ctx.rng.randint(2, 120)} {ctx.rng.choice(['Harbour Street', 'Market Square', 'Station Road', 'Old Town Lane', 'Riverside Walk', 'Garden Row'])}"
    slots = dict(dest=dest, hotel=hotel, conf=conf, day=_day(checkin), nights=nights, street=street)
    subject = ctx.pick(
        "Reservation confirmed at {hotel}, {dest}",
        "Your stay in {dest}: confirmation {conf}",
        "{hotel} - see you on {day}",
    ).format(**slots)
    body = ctx.pick(
        "Hello {first},\n\nWe're delighted to confirm your reservation at {hotel} in {dest}.\n"
        "Check-in: {day} (from 3 pm)\nNights: {nights}\nConfirmation number: {conf}\nAddress: {street}, {dest}\n\n"
        "We look forward to welcoming you.",
        "Dear guest,\n\nyour room at {hotel} ({street}, {dest}) is booked for {nights} nights starting {day}. "
        "Please quote confirmation number {conf} at the front desk.",
        "Booking summary\nHotel: {hotel}\nCity: {dest}\nArrival: {day}\nLength of stay: {nights} nights\n"
        "Confirmation number: {conf}\nFree cancellation until 48 hours before arrival.",
    ).format(first=ctx.persona.name.split()[0], **slots)
    questions = [
        _ask(ctx, ["Which hotel am I staying at in {dest}?", "What's the name of my hotel in {dest}?",
                   "Where am I staying in {dest}? I need the hotel name."], hotel, (core,), dest=dest),
        _ask(ctx, ["What is the confirmation number for my hotel in {dest}?",
                   "What's the hotel confirmation number for the {dest} stay?"], conf, dest=dest),
    ]
    sender = ctx.pick(f"{hotel} <reservations@{core.lower().replace(' ', '')}hotel.com>",
                      "StayFinder <confirmations@stayfinder.com>")
    return [_Draft(sender, subject, body, ctx.rng.randint(3, 40), [ctx.rng.choice(questions)])]


def _train(ctx: _Ctx) -> list[_Draft]:
    dest = ctx.take("dest", DESTINATIONS)
    line, operator = ctx.rng.choice(TRAIN_LINES)
    number = f"{line} {ctx.digits(3)}"
    coach = ctx.rng.randint(2, 14)
    when = ctx.future(4, 30)
    dep, dep_aliases = ctx.clock(6, 19)
    slots = dict(dest=dest, number=number, coach=coach, day=_day(when), dep=dep, operator=operator)
    subject = ctx.pick("Your {operator} ticket to {dest}", "Train ticket: {dest}, {day}").format(**slots)
    body = ctx.pick(
        "Your train ticket is attached.\n\nTrain: {number}\nDestination: {dest}\nDate: {day}\nDeparture: {dep}\n"
        "Coach {coach}, reserved seat. Show the QR code on board.",
        "Thanks for travelling with {operator}. Train {number} to {dest} departs at {dep} on {day}. "
        "You are in coach {coach}.",
    ).format(**slots)
    questions = [
        _ask(ctx, ["What is the train number for my trip to {dest}?", "Which train am I taking to {dest}?"],
             number, (number.replace(" ", ""),), dest=dest),
        _ask(ctx, ["What time does my train to {dest} leave?", "When does the {dest} train depart? Just the time."],
             dep, dep_aliases, dest=dest),
    ]
    return [_Draft(f"{operator} <tickets@{operator.lower().replace(' ', '')}.com>", subject, body, ctx.rng.randint(2, 30),
                   [ctx.rng.choice(questions)])]


# --------------------------------------------------------------------------- fact emails: work


def _meeting(ctx: _Ctx) -> list[_Draft]:
    topic = ctx.take("topic", MEETING_TOPICS)
    room, room_core = ctx.take("room", ROOMS)
    organizer = ctx.person()
    when = ctx.workday(1, 20)
    start, start_aliases = ctx.clock(8, 17)
    slots = dict(topic=topic, Topic=topic[0].upper() + topic[1:], room=room, day=_day(when), start=start,
                 organizer=organizer, first=organizer.split()[0])
    subject = ctx.pick("Invitation: {Topic} ({day})", "{Topic} - {day}", "Updated invitation: {Topic}",
                       "Reminder: {topic} this week").format(**slots)
    body = ctx.pick(
        "Hi all,\n\nI've booked {room} for the {topic} on {day} at {start}. Please bring your notes.\n\nThanks,\n{first}",
        "You have been invited to the {topic}.\nWhen: {day}, {start}\nWhere: {room}\nOrganizer: {organizer}",
        "Team, quick heads-up: the {topic} is on {day}, starting {start} sharp in {room}. Agenda to follow.\n- {first}",
    ).format(**slots)
    questions = [
        _ask(ctx, ["Which room is the {topic} in?", "Where is the {topic} being held?"], room_core, (room,), topic=topic),
        _ask(ctx, ["What time does the {topic} start?", "When does the {topic} begin? I need the time."],
             start, start_aliases, topic=topic),
        _ask(ctx, ["Who is organizing the {topic}?", "Who set up the {topic}?"], organizer, topic=topic),
    ]
    return [_Draft(ctx.colleague_address(organizer), subject, body, ctx.rng.randint(0, 14), [ctx.rng.choice(questions)])]


def _door_code(ctx: _Ctx) -> list[_Draft]:
    city = ctx.take("office", OFFICE_CITIES)
    code = ctx.digits(ctx.rng.choice([4, 5, 6]))
    slots = dict(city=city, code=code, company=ctx.persona.company)
    subject = ctx.pick("New door code for the {city} office", "{city} office access update", "Building access: {city}").format(**slots)
    body = ctx.pick(
        "Hello everyone,\n\nFrom Monday the keypad door code for the {city} office changes to {code}. "
        "Please don't share it outside {company}.\n\nFacilities",
        "Quick note from facilities: the {city} office door code is now {code}. Visitors still sign in at reception.",
        "Access update for the {city} office.\nDoor code: {code}\nThe side entrance stays closed after 7 pm.",
    ).format(**slots)
    q = _ask(ctx, ["What is the door code for the {city} office?", "What's the keypad code to get into the {city} office?",
                   "I forgot the {city} office door code, what is it?"], code, city=city)
    return [_Draft(f"Facilities <facilities@{ctx.domain}>", subject, body, ctx.rng.randint(1, 50), [q])]


def _invoice(ctx: _Ctx) -> list[_Draft]:
    vendor = ctx.take("vendor", VENDORS)
    number = f"INV-{ctx.digits(5)}"
    amount = _money(ctx.currency, ctx.rng.randint(40, 4800) + ctx.rng.choice([0, 0, 0.5, 0.99, 0.25]))
    due = ctx.future(5, 35)
    due_text, due_aliases = _date_answer(due)
    slots = dict(vendor=vendor, number=number, amount=amount, due=due_text, day=_day(due))
    domain = vendor.lower().split()[0] + ".com"
    subject = ctx.pick("Invoice {number} from {vendor}", "{vendor}: your invoice is ready", "Payment due: {vendor} invoice {number}").format(**slots)
    body = ctx.pick(
        "Dear customer,\n\nPlease find attached invoice {number} for {amount}. Payment is due by {day}.\n\n{vendor} billing team",
        "Hi,\n\n{vendor} has issued invoice {number}.\nAmount due: {amount}\nDue date: {due}\n"
        "Pay online or by bank transfer.",
        "Your latest bill from {vendor} is available. Invoice number {number}, total {amount}, due on {due}. Thank you!",
    ).format(**slots)
    questions = [
        _ask(ctx, ["How much do I owe {vendor}?", "What is the amount due on the {vendor} invoice?",
                   "What's the total on the invoice from {vendor}?"], amount, vendor=vendor),
        _ask(ctx, ["When is the {vendor} invoice due?", "What's the due date for the {vendor} bill?"], due_text, due_aliases, vendor=vendor),
        _ask(ctx, ["What is the invoice number from {vendor}?", "Which invoice number did {vendor} send?"],
             number, (number.split("-")[1],), vendor=vendor),
    ]
    drafts = [_Draft(f"{vendor} Billing <billing@{domain}>", subject, body, ctx.rng.randint(1, 25), [ctx.rng.choice(questions)])]
    if ctx.rng.random() < 0.4:  # an older, fact-free note from the same vendor
        drafts.append(_Draft(f"{vendor} <hello@{domain}>", ctx.pick("Thanks for your payment", "Your account with {vendor}").format(vendor=vendor),
                             f"We've received your last payment. Thanks for being a {vendor} customer.", ctx.rng.randint(30, 60)))
    return drafts


# --------------------------------------------------------------------------- fact emails: home


def _delivery(ctx: _Ctx) -> list[_Draft]:
    item = ctx.take("item", ITEMS)
    retailer, rdomain = ctx.rng.choice(RETAILERS)
    carrier = ctx.take("carrier", CARRIERS)
    tracking = ctx.code(lambda r: "1Z" + "".join(r.choice(string.ascii_uppercase + string.digits) for _ in range(14))) \
        if carrier == "UPS" else ctx.digits(ctx.rng.choice([10, 12]))
    eta = ctx.future(1, 6)
    eta_text, eta_aliases = _date_answer(eta)
    slots = dict(item=item, retailer=retailer, carrier=carrier, tracking=tracking, eta=eta_text, day=_day(eta))
    subject = ctx.pick("Your {item} has shipped", "Shipping update: {item}", "On its way: your {retailer} order ({item})").format(**slots)
    body = ctx.pick(
        "Good news! Your {item} is on its way with {carrier}.\nTracking number: {tracking}\nExpected delivery: {day}",
        "Hi,\n\nyour order from {retailer} has left our warehouse. Carrier: {carrier}. "
        "Track your {item} with tracking number {tracking}. It should arrive on {eta}.",
        "Shipment notice\nItem: {item}\nCarrier: {carrier}\nTracking: {tracking}\nEstimated arrival: {day}",
    ).format(**slots)
    questions = [
        _ask(ctx, ["What's the tracking number for my {item}?", "Can you find the tracking number for the {item}?"], tracking, item=item),
        _ask(ctx, ["Which carrier is delivering the {item}?", "Who is shipping my {item}? I need the carrier."], carrier, item=item),
        _ask(ctx, ["When is the {item} expected to arrive?", "What day will my {item} be delivered?"], eta_text, eta_aliases, item=item),
    ]
    drafts = [_Draft(f"{retailer} <shipping@{rdomain}>", subject, body, ctx.rng.randint(0, 6), [ctx.rng.choice(questions)])]
    if ctx.rng.random() < 0.6:  # the order confirmation: names the item, no tracking yet
        drafts.append(_Draft(f"{retailer} <orders@{rdomain}>", ctx.pick("Order confirmed: {item}", "Thanks for your order!").format(item=item),
                             f"Thanks for shopping with {retailer}. We've received your order for the {item} and will "
                             "email you again once it ships.", ctx.rng.randint(6, 12)))
    return drafts


def _wifi(ctx: _Ctx) -> list[_Draft]:
    place = ctx.take("wifi", WIFI_PLACES)
    host = ctx.person()
    words = ctx.rng.sample(WIFI_WORDS, 2)
    password = ctx.code(lambda r: f"{words[0]}-{words[1]}-{r.randint(10, 99)}")
    network = f"{words[0].capitalize()}Net"
    slots = dict(place=place, password=password, network=network, host=host.split()[0])
    subject = ctx.pick("Welcome to the {place}!", "Info for your stay at the {place}", "Re: wifi at the {place}").format(**slots)
    body = ctx.pick(
        "Hi! Everything you need for the {place}: the wifi network is {network} and the wifi password is {password}. "
        "Spare towels are in the hall closet.\n\n{host}",
        "Welcome! A few notes for the {place}.\nWifi: {network}\nPassword: {password}\nCheckout is at 11 am.",
        "Sorry, forgot to mention it earlier - the wifi password at the {place} is {password} (network {network}). Enjoy!\n{host}",
    ).format(**slots)
    q = _ask(ctx, ["What's the wifi password at the {place}?", "What is the wifi password for the {place}?"], password, place=place)
    return [_Draft(ctx.colleague_address(host).replace(ctx.domain, "gmail.com"), subject, body, ctx.rng.randint(1, 40), [q])]


def _verification(ctx: _Ctx) -> list[_Draft]:
    service = ctx.take("service", SERVICES)
    code = ctx.digits(6)
    subject = ctx.pick("Your {service} verification code", "{service} sign-in code", "Verify your {service} account").format(service=service)
    body = ctx.pick(
        "Your {service} verification code is {code}. It expires in 10 minutes. If you didn't request it, ignore this email.",
        "Use {code} to sign in to {service}. This verification code is valid for 15 minutes.",
        "Hello,\n\nenter the verification code {code} to confirm your {service} account.\n\nThe {service} team",
    ).format(service=service, code=code)
    q = _ask(ctx, ["What verification code did {service} send me?", "What is my {service} verification code?",
                   "What's the {service} sign-in code?"], code, service=service)
    return [_Draft(f"{service} <security@{service.lower()}.com>", subject, body, ctx.rng.randint(0, 3), [q])]


def _restaurant(ctx: _Ctx) -> list[_Draft]:
    restaurant = ctx.take("restaurant", RESTAURANTS)
    when = ctx.future(1, 21)
    at, at_aliases = _clock(ctx.rng.randint(18, 21), ctx.rng.choice([0, 15, 30, 45]))
    guests = ctx.rng.randint(2, 8)
    slots = dict(restaurant=restaurant, day=_day(when), at=at, guests=guests)
    subject = ctx.pick("Your table at {restaurant}", "Reservation confirmed: {restaurant}", "See you soon at {restaurant}").format(**slots)
    body = ctx.pick(
        "Thank you for booking {restaurant}. Your table for {guests} is reserved on {day} at {at}.",
        "Reservation details\nRestaurant: {restaurant}\nDate: {day}\nTime: {at}\nParty size: {guests}\n"
        "Please let us know about any allergies.",
    ).format(**slots)
    q = _ask(ctx, ["What time is the dinner reservation at {restaurant}?", "When is our table at {restaurant}? I need the time."],
             at, at_aliases, restaurant=restaurant)
    return [_Draft(f"{restaurant} <bookings@tablefor.app>", subject, body, ctx.rng.randint(1, 15), [q])]


def _family(ctx: _Ctx) -> list[_Draft]:
    p = ctx.persona
    drafts = []
    partner_addr = f"{p.partner} <{p.partner.split()[0].lower()}@gmail.com>" if p.partner else None
    for kid in p.kids:
        activity = ctx.take("activity", ACTIVITIES)
        weekday = ctx.rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"])
        at, at_aliases = ctx.clock(15, 18)
        body = ctx.pick(
            "Can you pick up {kid} from {activity} at {at} on {weekday}? I'm stuck at work until late.",
            "Reminder: {activity} finishes at {at} on {weekday}, so {kid} needs collecting then. Thanks!",
            "Hey, swap this week? You do the {activity} pickup for {kid} ({weekday}, {at}) and I'll do the mornings.",
        ).format(kid=kid, activity=activity, at=at, weekday=weekday)
        sender = partner_addr or f"{activity.title()} <coach@{activity.split()[0]}club.org>"
        q = _ask(ctx, ["What time do I need to pick up {kid} from {activity}?", "When does {kid}'s {activity} finish for pickup?"],
                 at, at_aliases, kid=kid, activity=activity)
        drafts.append(_Draft(sender, ctx.pick("{kid} pickup", "Re: {activity}", "{weekday} pickup").format(
            kid=kid, activity=activity, weekday=weekday), body, ctx.rng.randint(0, 5), [q]))
    if p.kids:
        kid = ctx.rng.choice(p.kids)
        school = ctx.take("school", SCHOOLS)
        event = ctx.take("event", SCHOOL_EVENTS)
        when = ctx.future(5, 40)
        when_text, when_aliases = _date_answer(when)
        body = ctx.pick(
            "Dear parents,\n\nour {event} takes place on {day} in the main hall. {kid}'s class will take part. "
            "We hope to see you there!\n\n{school}",
            "Save the date: the {school} {event} is on {day}. Doors open 30 minutes before the start.",
        ).format(event=event, day=_day(when), kid=kid, school=school)
        q = _ask(ctx, ["When is the {event} at {school}?", "What date is the {school} {event}?"], when_text, when_aliases,
                 event=event, school=school)
        domain = school.lower().replace(".", "").replace("'", "").split()[0] + ".sch.uk"
        drafts.append(_Draft(f"{school} <office@{domain}>", ctx.pick("{Event}", "Save the date: {event}").format(
            event=event, Event=event.capitalize()), body, ctx.rng.randint(2, 20), [q]))
    return drafts


def _dentist(ctx: _Ctx) -> list[_Draft]:
    p = ctx.persona
    who = ctx.rng.choice(p.kids) if p.kids and ctx.rng.random() < 0.6 else None
    doctor = ctx.take("doctor", DOCTORS)
    when = ctx.future(3, 30)
    at, at_aliases = ctx.clock(8, 17)
    patient = f"{who}'s" if who else "your"
    body = ctx.pick(
        "This is a reminder of {patient} dental appointment with Dr. {doctor} on {day} at {at}. Please arrive 10 minutes early.",
        "Appointment confirmation\nPatient: {name}\nDentist: Dr. {doctor}\nDate: {day}\nTime: {at}",
    ).format(patient=patient, doctor=doctor, day=_day(when), at=at, name=who or p.name)
    subject_for = f"{who}'s" if who else "your"
    if who:
        q = _ask(ctx, ["What time is {who}'s dentist appointment?", "When is {who}'s dental appointment? I need the time."],
                 at, at_aliases, who=who)
    else:
        q = _ask(ctx, ["What time is my dentist appointment with Dr. {doctor}?", "Who is my dentist appointment with?"],
                 at, at_aliases, doctor=doctor)
        if q[0].startswith("Who"):
            q = (q[0], f"Dr. {doctor}", (doctor,))
    return [_Draft("Smile Dental Clinic <appointments@smiledental.com>", f"Reminder: {subject_for} dentist appointment",
                   body, ctx.rng.randint(1, 10), [q])]


def _vet(ctx: _Ctx) -> list[_Draft]:
    pet, kind = ctx.take("pet", PETS)
    when = ctx.future(3, 30)
    at, at_aliases = ctx.clock(9, 17)
    body = ctx.pick(
        "{pet} is due for the annual check-up. We've booked {pet} in on {day} at {at}. Bring the vaccination card.",
        "Appointment confirmed for {pet} ({kind}) on {day} at {at} with our vet team.",
    ).format(pet=pet, kind=kind, day=_day(when), at=at)
    q = _ask(ctx, ["What time is {pet}'s vet appointment?", "When is {pet} booked in at the vet? Just the time."], at, at_aliases, pet=pet)
    return [_Draft("Parkside Vets <care@parksidevets.com>", f"Vet appointment for {pet}", body, ctx.rng.randint(1, 14), [q])]


# --------------------------------------------------------------------------- fact emails: habits


def _race(ctx: _Ctx) -> list[_Draft]:
    race = ctx.take("race", RACES)
    bib = ctx.digits(4)
    when = ctx.future(10, 45)
    body = ctx.pick(
        "You're registered for the {race}! Your bib number is {bib}. Race day: {day}. Collect your bib at the expo.",
        "Registration complete.\nEvent: {race}\nDate: {day}\nBib number: {bib}\nWave: {wave}",
    ).format(race=race, bib=bib, day=_day(when), wave=ctx.rng.choice(["A", "B", "C"]))
    q = _ask(ctx, ["What is my bib number for the {race}?", "Which bib number did I get for the {race}?"], bib, race=race)
    return [_Draft("RaceDay Entries <entries@raceday.run>", f"{race}: registration confirmed", body, ctx.rng.randint(5, 50), [q])]


def _concert(ctx: _Ctx) -> list[_Draft]:
    band = ctx.take("band", BANDS)
    venue = ctx.rng.choice(VENUES)
    section = f"{ctx.rng.choice(['Balcony', 'Stalls', 'Circle', 'Floor'])} {ctx.rng.choice('ABCDEFGH')}"
    when = ctx.future(7, 45)
    body = ctx.pick(
        "Your tickets for {band} at {venue} on {day} are confirmed. Section: {section}. Doors open at 7 pm.",
        "Order complete!\nEvent: {band} live\nVenue: {venue}\nDate: {day}\nSeats: section {section}, row {row}",
    ).format(band=band, venue=venue, day=_day(when), section=section, row=ctx.rng.randint(1, 25))
    q = _ask(ctx, ["Which section are my seats in for the {band} concert?", "What section are we sitting in at the {band} show?"],
             section, band=band)
    return [_Draft("Ticketbox <orders@ticketbox.com>", f"Tickets: {band} at {venue}", body, ctx.rng.randint(5, 50), [q])]


def _locker(ctx: _Ctx) -> list[_Draft]:
    gym = ctx.take("gym", GYMS)
    combo = ctx.code(lambda r: "-".join(str(r.randint(1, 39)) for _ in range(3)))
    body = ctx.pick(
        "Welcome to {gym}! Your locker is number {n} and the combination is {combo}.",
        "Membership update: your new locker combination at {gym} is {combo} (locker {n}).",
    ).format(gym=gym, combo=combo, n=ctx.rng.randint(10, 199))
    q = _ask(ctx, ["What's my locker combination at {gym}?", "What is the locker combination for {gym}?"], combo, gym=gym)
    return [_Draft(f"{gym} <members@{gym.lower().replace(' ', '')}.com>", f"Your {gym} locker", body, ctx.rng.randint(5, 60), [q])]


def _food_bank(ctx: _Ctx) -> list[_Draft]:
    bank = ctx.take("foodbank", FOOD_BANKS)
    when = ctx.future(2, 20)
    at, at_aliases = ctx.clock(8, 16)
    body = ctx.pick(
        "Thanks for signing up to volunteer! Your shift at {bank} is on {day}, starting at {at}. Wear closed shoes.",
        "Volunteer rota: you're on the sorting team at {bank}, {day} from {at}.",
    ).format(bank=bank, day=_day(when), at=at)
    q = _ask(ctx, ["What time does my volunteer shift at {bank} start?", "When is my {bank} shift? Just the start time."],
             at, at_aliases, bank=bank)
    return [_Draft(f"{bank} <volunteers@foodbank.org>", "Your volunteer shift", body, ctx.rng.randint(1, 14), [q])]


def _book_club(ctx: _Ctx) -> list[_Draft]:
    title = ctx.take("book", ["The Remains of the Day", "Piranesi", "Station Eleven", "Klara and the Sun", "The Overstory",
                              "Pachinko", "Circe", "A Gentleman in Moscow"])
    host = ctx.person()
    body = ctx.pick(
        "Hi book club! This month we're reading {title}. We'll meet at {host}'s place - see you there.",
        "Next pick for book club: {title}. {host} is hosting this time.",
    ).format(title=title, host=host)
    q = _ask(ctx, ["Who is hosting the book club for {title}?", "Whose place is book club at when we discuss {title}?"],
             host, (host.split()[0],), title=title)
    return [_Draft(f"{host} <{host.split()[0].lower()}@gmail.com>", f"Book club: {title}", body, ctx.rng.randint(1, 30), [q])]


HABIT_KINDS: dict[str, Callable[[_Ctx], list[_Draft]]] = {
    "runs races on weekends": _race,
    "loves live music": _concert,
    "trains at the gym before work": _locker,
    "volunteers at the food bank": _food_bank,
    "hosts a monthly book club": _book_club,
    "cooks for friends on Fridays": _restaurant,
    "collects vinyl records": _delivery,
    "takes weekend photography walks": _wifi,
}


# --------------------------------------------------------------------------- noise


def _noise(ctx: _Ctx) -> _Draft:
    kind = ctx.rng.choice(["newsletter", "newsletter", "promo", "chat", "chat", "social", "system"])
    if kind == "newsletter":
        name, addr = ctx.rng.choice(NEWSLETTERS)
        lines = ctx.rng.sample(NEWSLETTER_LINES, 3)
        subject = ctx.pick(f"{name}: {lines[0]}", f"{name} - issue {ctx.rng.randint(40, 300)}", f"This week in {name}")
        return _Draft(f"{name} <{addr}>", subject, "\n".join(["In this issue:", *lines, "Unsubscribe anytime."]), ctx.rng.randint(0, 60))
    if kind == "promo":
        retailer, domain = ctx.rng.choice(RETAILERS)
        subject, body = ctx.rng.choice(PROMOS)
        return _Draft(f"{retailer} <deals@{domain}>", subject, body, ctx.rng.randint(0, 60))
    if kind == "social":
        subject, addr, body = ctx.rng.choice(SOCIAL)
        who = ctx.person()
        return _Draft(addr, subject.format(n=who), body.format(n=who), ctx.rng.randint(0, 60))
    if kind == "system":
        subject, addr, body = ctx.rng.choice(SYSTEM_NOTES)
        return _Draft(addr, subject, body, ctx.rng.randint(0, 60))
    who = ctx.person()
    lines = ctx.rng.sample(CHAT_LINES, 2)
    return _Draft(ctx.colleague_address(who), ctx.rng.choice(CHAT_SUBJECTS), f"Hi {ctx.persona.name.split()[0]},\n\n"
                  + " ".join(lines) + f"\n\n{who.split()[0]}", ctx.rng.randint(0, 60))


# --------------------------------------------------------------------------- inboxes


@functools.lru_cache(maxsize=8)
def _persona_order(seed: int) -> tuple[tuple[str, str], ...]:
    """All (first, last) name pairs in a seed-dependent order: inbox i gets pair i, so personas never repeat."""
    pairs = [(f, last) for f in FIRST_NAMES for last in LAST_NAMES]
    random.Random(seed).shuffle(pairs)
    return tuple(pairs)


def _persona(rng: random.Random, inbox_id: int, seed: int) -> tuple[Persona, str, str]:
    order = _persona_order(seed)
    first, last = order[inbox_id % len(order)]
    company, domain = rng.choice(COMPANIES)
    city, currency = rng.choice(HOME_CITIES)
    partner = f"{rng.choice([n for n in FIRST_NAMES if n != first])} {last}" if rng.random() < 0.7 else None
    n_kids = rng.choice([0, 1, 1, 2, 2]) if partner else rng.choice([0, 0, 1])
    family = {first, partner.split()[0] if partner else first}
    kids = tuple(rng.sample([n for n in FIRST_NAMES if n not in family], n_kids))
    persona = Persona(
        name=f"{first} {last}",
        email=f"{first.lower()}.{last.lower()}@{domain}",
        role=rng.choice(ROLES),
        company=company,
        city=city,
        habits=tuple(rng.sample(HABITS, rng.randint(2, 3))),
        partner=partner,
        kids=kids,
    )
    return persona, currency, domain


def generate_inbox(inbox_id: int, seed: int = 0) -> Inbox:
    """One inbox with ~30-50 emails and 11-14 questions, the same for the same (inbox_id, seed)."""
    rng = random.Random(seed * 1_000_003 + inbox_id)
    persona, currency, domain = _persona(rng, inbox_id, seed)
    today = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 700))
    ctx = _Ctx(rng, persona, today, currency, domain)

    # 1) fact emails: a base mix every persona gets, then family, then habits
    makers: list[Callable[[_Ctx], list[_Draft]]] = [_flight, _flight, _hotel, _meeting, _meeting, _meeting, _invoice,
                                                    _invoice, _delivery, _door_code, _verification, _wifi]
    makers += rng.sample([_train, _hotel, _meeting, _invoice, _delivery, _verification, _restaurant, _door_code], 4)
    makers += [_family] if persona.kids else [_vet]
    makers += [_dentist]
    makers += [HABIT_KINDS[h] for h in persona.habits]
    drafts = [d for make in makers for d in make(ctx)]

    # 2) noise up to a total of 30-50 emails
    total = rng.randint(max(30, len(drafts) + 8), 50)
    drafts += [_noise(ctx) for _ in range(total - len(drafts))]

    # 3) order by date, oldest first; ids follow that order so they say nothing about the kind
    rng.shuffle(drafts)
    stamps = []
    for d in drafts:
        moment = dt.datetime.combine(today - dt.timedelta(days=d.days_ago), dt.time(rng.randint(6, 22), rng.randint(0, 59)))
        stamps.append(moment)
    order = sorted(range(len(drafts)), key=lambda i: stamps[i])
    emails: list[Email] = []
    asked: list[tuple[str, str, str, tuple[str, ...]]] = []
    for k, i in enumerate(order):
        d = drafts[i]
        message_id = f"m{inbox_id}-{k:02d}"
        emails.append(Email(message_id, d.sender, (persona.email, *d.cc), d.subject, stamps[i].isoformat(timespec="seconds"), d.body))
        for question, answer, aliases in d.questions:
            asked.append((message_id, question, answer, aliases))

    # 4) ask about a subset of the fact emails
    n_questions = min(len(asked), rng.randint(11, 14))
    chosen = sorted(rng.sample(range(len(asked)), n_questions))
    questions = tuple(
        Question(f"q{inbox_id}-{j:02d}", inbox_id, asked[i][1], asked[i][2], asked[i][0], asked[i][3], seed)
        for j, i in enumerate(chosen)
    )
    return Inbox(inbox_id, persona, tuple(emails), questions, seed, today.isoformat())


@functools.lru_cache(maxsize=256)
def load_inbox(inbox_id: int, seed: int = 0) -> Inbox:
    """`generate_inbox`, cached: rollouts look their inbox up from a question many times."""
    return generate_inbox(inbox_id, seed)


def make_splits(seed: int = 0, n_train_inboxes: int = 40, n_eval_inboxes: int = 10) -> tuple[list[Question], list[Question]]:
    """(train questions, held-out questions), split by inbox: inboxes 0..n_train-1 train, the next n_eval held out."""
    train = [q for i in range(n_train_inboxes) for q in load_inbox(i, seed).questions]
    held_out = [q for i in range(n_train_inboxes, n_train_inboxes + n_eval_inboxes) for q in load_inbox(i, seed).questions]
    return train, held_out
