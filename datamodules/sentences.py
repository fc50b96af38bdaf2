"""A sentence generator over a real English vocabulary, for the synthetic corpus.

Templates over word classes give many distinct, grammatical sentences of
TIMIT-like length (5 to 14 words), so a model cannot memorise a handful.
"""

from __future__ import annotations

import random

DETERMINERS = ("the", "a", "this", "that", "every", "each", "some", "no", "one", "her", "his",
               "our", "their", "my", "your")  # fmt: skip
ADJECTIVES = (
    "old", "young", "bright", "dark", "quiet", "loud", "small", "large", "warm", "cold", "heavy",
    "light", "quick", "slow", "gentle", "rough", "smooth", "sharp", "soft", "strong", "weak",
    "happy", "angry", "tired", "busy", "clever", "careful", "simple", "strange", "famous",
    "yellow", "green", "purple", "golden", "silver", "wooden", "broken", "empty", "crowded",
    "distant", "narrow", "shallow", "deep", "fresh", "bitter", "sweet", "ancient", "modern",
    "polite", "greasy", "muddy", "frozen", "rusty", "shiny", "lucky", "nervous", "brave", "calm",
)  # fmt: skip
NOUNS = (
    "child", "teacher", "farmer", "doctor", "sailor", "driver", "painter", "student", "lawyer",
    "baker", "soldier", "nurse", "judge", "pilot", "singer", "writer", "dog", "cat", "horse",
    "bird", "fish", "rabbit", "wolf", "snake", "garden", "kitchen", "window", "river", "mountain",
    "village", "city", "street", "bridge", "forest", "island", "castle", "market", "library",
    "station", "office", "harbor", "valley", "desert", "ocean", "letter", "basket", "hammer",
    "blanket", "bottle", "candle", "carpet", "engine", "feather", "guitar", "jacket", "ladder",
    "mirror", "needle", "pencil", "pocket", "rocket", "shadow", "shovel", "ticket", "wagon",
    "wallet", "whistle", "umbrella", "sandwich", "orange", "potato", "tomato", "cookie", "cheese",
    "coffee", "butter", "pepper", "sugar", "thunder", "weather", "winter", "summer", "morning",
    "evening", "story", "problem", "question", "answer", "picture", "music", "money", "paper",
)  # fmt: skip
TRANSITIVE_VERBS = (
    "found", "carried", "painted", "watched", "followed", "cleaned", "opened", "closed", "lifted",
    "pushed", "pulled", "visited", "answered", "borrowed", "bought", "sold", "built", "broke",
    "caught", "chose", "drew", "fixed", "held", "kept", "left", "lost", "met", "moved", "needed",
    "noticed", "ordered", "packed", "passed", "picked", "praised", "reached", "repaired",
    "showed", "studied", "touched", "washed", "wanted", "washed", "loved", "hated", "admired",
)  # fmt: skip
INTRANSITIVE_VERBS = (
    "laughed", "smiled", "waited", "slept", "danced", "shouted", "whispered", "arrived",
    "departed", "vanished", "appeared", "trembled", "listened", "wandered", "rested", "worked",
    "sang", "cried", "jumped", "paused", "stumbled", "returned", "escaped", "hesitated",
)  # fmt: skip
PREPOSITIONS = ("near", "under", "behind", "beside", "across", "inside", "along", "toward",
                "around", "through", "above", "below", "beyond", "without", "with", "after",
                "before", "during")  # fmt: skip
ADVERBS = ("quickly", "slowly", "quietly", "suddenly", "carefully", "happily", "rarely",
           "often", "never", "always", "gladly", "barely", "nearly", "gently", "proudly",
           "yesterday", "today", "again", "soon", "later")  # fmt: skip
CONJUNCTIONS = ("and", "but", "because", "while", "although", "so")
NAMES = ("Anna", "Peter", "Maria", "David", "Susan", "George", "Laura", "Michael", "Julia",
         "Thomas", "Helen", "Robert", "Karen", "Daniel", "Alice", "Henry")  # fmt: skip

VOCABULARY_SIZE = len(
    set(DETERMINERS + ADJECTIVES + NOUNS + TRANSITIVE_VERBS + INTRANSITIVE_VERBS + PREPOSITIONS
        + ADVERBS + CONJUNCTIONS + NAMES)
)  # fmt: skip


def _noun_phrase(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return rng.choice(NAMES)
    words = [rng.choice(DETERMINERS)]
    for _ in range(rng.choice((0, 1, 1, 2))):
        words.append(rng.choice(ADJECTIVES))
    words.append(rng.choice(NOUNS))
    return " ".join(words)


def _clause(rng: random.Random) -> str:
    subject = _noun_phrase(rng)
    if rng.random() < 0.6:
        clause = f"{subject} {rng.choice(TRANSITIVE_VERBS)} {_noun_phrase(rng)}"
    else:
        clause = f"{subject} {rng.choice(INTRANSITIVE_VERBS)}"
    if rng.random() < 0.5:
        clause += f" {rng.choice(PREPOSITIONS)} {_noun_phrase(rng)}"
    if rng.random() < 0.3:
        clause += f" {rng.choice(ADVERBS)}"
    return clause


def generate_sentence(rng: random.Random) -> str:
    """One sentence, capitalised and punctuated like a TIMIT prompt."""
    sentence = _clause(rng)
    if rng.random() < 0.25:
        sentence += f", {rng.choice(CONJUNCTIONS)} {_clause(rng)}"
    sentence = sentence[0].upper() + sentence[1:]
    return sentence + ("?" if rng.random() < 0.1 else ".")
