"""Vocabulary and templates of the task families (Marks et al.'s agreement sets and IOI).

Every word here is one token, with its leading space, under the GPT-NeoX tokenizer that
Pythia uses (a test checks this), so the generated datasets work on Pythia-70M as well as
on the bundled model whose word-level vocabulary is built from these lists.
"""

NOUNS = [  # (singular, plural)
    ("author", "authors"), ("athlete", "athletes"), ("teacher", "teachers"),
    ("doctor", "doctors"), ("friend", "friends"), ("manager", "managers"),
    ("farmer", "farmers"), ("pilot", "pilots"), ("senator", "senators"),
    ("lawyer", "lawyers"), ("student", "students"), ("officer", "officers"),
    ("guard", "guards"), ("dancer", "dancers"), ("painter", "painters"),
    ("singer", "singers"), ("writer", "writers"), ("driver", "drivers"),
    ("nurse", "nurses"), ("judge", "judges"), ("customer", "customers"),
    ("client", "clients"), ("father", "fathers"), ("mother", "mothers"),
    ("chef", "chefs"), ("banker", "bankers"), ("player", "players"),
    ("actor", "actors"), ("worker", "workers"), ("soldier", "soldiers"),
    ("engineer", "engineers"), ("minister", "ministers"), ("parent", "parents"),
    ("boy", "boys"), ("girl", "girls"), ("man", "men"), ("woman", "women"),
    ("child", "children"), ("king", "kings"),
]

AUXILIARIES = [("is", "are"), ("has", "have"), ("was", "were"), ("does", "do")]

RC_VERBS = [  # (agrees with a singular subject, with a plural one)
    ("likes", "like"), ("loves", "love"), ("hates", "hate"), ("knows", "know"),
    ("sees", "see"), ("helps", "help"), ("meets", "meet"), ("trusts", "trust"),
    ("calls", "call"),
]

PREPOSITIONS = ["near", "behind", "beside", "above", "below", "with", "from"]

NAMES = ["Mary", "John", "Tom", "James", "Dan", "Sarah", "Anna", "Michael", "David", "Paul",
         "Mark", "Kate", "Lisa", "Alice", "Emma", "Jack", "Peter", "Robert", "Linda", "Susan",
         "George", "Frank", "Rose", "Grace", "Ben", "Sam", "Alex", "Max", "Laura", "Amy"]

PLACES = ["store", "school", "park", "office", "hospital", "restaurant", "station", "garden",
          "house", "beach", "market", "church", "library", "museum"]

OBJECTS = ["ball", "book", "drink", "gift", "ring", "bone", "kiss", "letter", "basketball",
           "computer", "bag", "key", "card", "pen", "cake", "apple"]

# The seed paper's IOI templates: [B] is the subject, [A] the indirect object (the answer).
IOI_TEMPLATES = {
    "then": "Then, {B} and {A} went to the {PLACE}. {B} gave a {OBJECT} to",
    "when": "When, {B} and {A} went to the {PLACE}. {B} gave a {OBJECT} to",
    "after": "After {B} and {A} went to the {PLACE}, {B} gave a {OBJECT} to",
}

AGREEMENT_FAMILIES = ("simple", "nounpp", "rc", "within_rc")
FAMILIES = AGREEMENT_FAMILIES + ("ioi",)


def all_words() -> set[str]:
    """Every word the generator can put in a prompt or an answer (for tokenizer checks)."""
    words = {w for pair in NOUNS + AUXILIARIES + RC_VERBS for w in pair}
    words |= set(PREPOSITIONS) | set(NAMES) | set(PLACES) | set(OBJECTS)
    words |= {"The", "the", "that", "a", "and", "went", "to", "gave", "Then", "When", "After"}
    return words


def family_size(family: str) -> int:
    """How many distinct (clean prefix, clean answer) examples `family` can produce, both
    splits together (generation stops there instead of sampling for ever)."""
    nouns, auxes, verbs = 2 * len(NOUNS), len(AUXILIARIES), len(RC_VERBS)
    sizes = {
        "simple": nouns * auxes,
        "nounpp": nouns * len(PREPOSITIONS) * nouns * auxes,
        "rc": nouns * nouns * verbs * auxes,
        "within_rc": nouns * nouns * verbs,
        "ioi": len(IOI_TEMPLATES) * len(NAMES) * (len(NAMES) - 1) * len(PLACES) * len(OBJECTS),
    }
    return sizes[family]
