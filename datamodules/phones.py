"""TIMIT phone sets and the standard foldings between them.

TIMIT transcribes with 61 symbols. Acoustic models are trained on 48 classes
and scored on 39 (Lee and Hon, 1989), as in the Kaldi TIMIT recipe
(`conf/phones.60-48-39.map`). The glottal stop `q` has no class in either set:
its frames are ignored for training and scoring (the Kaldi recipe deletes it).
"""

from __future__ import annotations

from collections.abc import Mapping

PHONES_61: tuple[str, ...] = (
    "aa", "ae", "ah", "ao", "aw", "ax", "ax-h", "axr", "ay", "b", "bcl", "ch",
    "d", "dcl", "dh", "dx", "eh", "el", "em", "en", "eng", "epi", "er", "ey",
    "f", "g", "gcl", "h#", "hh", "hv", "ih", "ix", "iy", "jh", "k", "kcl", "l",
    "m", "n", "ng", "nx", "ow", "oy", "p", "pau", "pcl", "q", "r", "s", "sh",
    "t", "tcl", "th", "uh", "uw", "ux", "v", "w", "y", "z", "zh",
)  # fmt: skip

# Symbols of the 61-phone set that have no 48-phone class.
IGNORED_61: frozenset[str] = frozenset({"q"})

_FOLD_61_TO_48_CHANGES: dict[str, str] = {
    "ax-h": "ax", "axr": "er", "bcl": "vcl", "dcl": "vcl", "gcl": "vcl",
    "em": "m", "eng": "ng", "h#": "sil", "pau": "sil", "hv": "hh",
    "kcl": "cl", "pcl": "cl", "tcl": "cl", "nx": "n", "ux": "uw",
}  # fmt: skip

FOLD_61_TO_48: Mapping[str, str] = {
    phone: _FOLD_61_TO_48_CHANGES.get(phone, phone)
    for phone in PHONES_61
    if phone not in IGNORED_61
}

PHONES_48: tuple[str, ...] = tuple(sorted(set(FOLD_61_TO_48.values())))

_FOLD_48_TO_39_CHANGES: dict[str, str] = {
    "ao": "aa", "ax": "ah", "cl": "sil", "vcl": "sil", "epi": "sil",
    "el": "l", "en": "n", "ix": "ih", "zh": "sh",
}  # fmt: skip

FOLD_48_TO_39: Mapping[str, str] = {
    phone: _FOLD_48_TO_39_CHANGES.get(phone, phone) for phone in PHONES_48
}

PHONES_39: tuple[str, ...] = tuple(sorted(set(FOLD_48_TO_39.values())))

# Class index (48-phone set) -> scoring index (39-phone set).
SCORING_MAP_48_TO_39: tuple[int, ...] = tuple(
    PHONES_39.index(FOLD_48_TO_39[phone]) for phone in PHONES_48
)

# Frame label used where a frame has no class (padding, `q`); torch's default.
IGNORE_INDEX = -100


def class_index_48(phone_61: str) -> int:
    """Returns the 48-phone class index of a TIMIT symbol, IGNORE_INDEX for `q`.

    Raises:
        ValueError: if ``phone_61`` is not one of TIMIT's 61 symbols.
    """
    if phone_61 in IGNORED_61:
        return IGNORE_INDEX
    try:
        return PHONES_48.index(FOLD_61_TO_48[phone_61])
    except KeyError:
        raise ValueError(
            f"unknown TIMIT phone symbol {phone_61!r}; allowed: {', '.join(PHONES_61)}"
        ) from None


assert len(PHONES_61) == 61 and len(PHONES_48) == 48 and len(PHONES_39) == 39
