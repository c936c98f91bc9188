"""Value pools the inbox generator draws from: people, places, vendors, and the text of noise mail.

Plain data, no logic. Slot pools (destinations, vendors, ...) name what a fact is about; every
inbox takes each slot value at most once per pool, so a question names one subject.
"""

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
MEETING_TOPICS = [
    "quarterly budget review", "roadmap planning session", "vendor onboarding call", "security audit kickoff",
    "design critique", "hiring committee", "customer advisory board", "sprint retrospective", "offsite planning",
    "pricing workshop", "data migration sync", "brand refresh review", "compliance training", "partner summit prep",
    "onboarding walkthrough", "capacity planning", "incident postmortem", "annual performance calibration",
]
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
ACTIVITIES = ["swim practice", "piano lesson", "soccer training", "chess club", "art class", "drama club",
              "gymnastics", "robotics club", "ballet class", "tennis lesson"]
DOCTORS = ["Alvarez", "Whitcombe", "Nakashima", "Oyelaran", "Petersen", "Castellano", "Adebayo", "Lindgren"]
RESTAURANTS = ["Osteria Fiore", "The Copper Pot", "Saffron Table", "Kin Izakaya", "La Petite Lune", "Ember & Oak",
               "Mesa Verde", "Noodle Foundry", "The Salt House", "Bistro Marlowe"]
PETS = [("Biscuit", "dog"), ("Pepper", "cat"), ("Mochi", "cat"), ("Rufus", "dog"), ("Juniper", "dog"), ("Olive", "cat")]
RACES = ["Riverside Half Marathon", "Harbour Road Race", "Autumn Trail Run", "City Lights Fun Run", "Coastal Half Marathon"]
GYMS = ["Ironworks Gym", "Pulse Fitness", "Summit Climbing", "Blue Lane Pool", "Forge Athletics"]

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


# paragraphs that pad a long email between the line naming its subject and the line with its fact,
# so a search snippet around the subject does not show the fact: the agent has to read the email
FILLER = [
    "We have made a few changes to how we handle requests this season, mostly behind the scenes. Nothing is needed from you.",
    "Please keep this message for your records. Our team is available by phone on weekdays if anything looks wrong.",
    "A quick reminder that our terms and conditions were updated last month; the full text is on our website.",
    "Thanks again for your patience while we moved to a new system. Some emails may look a little different from before.",
    "If you have accessibility needs or special requests, reply to this email and we will do our best to help.",
    "We are always trying to improve, so you may receive a short survey about your experience afterwards.",
    "Parking nearby is limited at busy times, so please allow a little extra time to arrive.",
    "Our office will be closed on the upcoming public holiday, and replies may take an extra day.",
    "You can manage your preferences and notifications at any time from your account page.",
    "For security reasons we will never ask you for your password by email or phone.",
]
