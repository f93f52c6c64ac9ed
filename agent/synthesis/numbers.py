"""Numbers in story text: extraction ("1,200", "$3.50", "15%", "2.5 million", "twelve") and
matching against an instance's data with percent conversions.

The story checker asks two questions of a text: does every data value appear, and does any number
appear that the data does not explain? Both go through `match_numbers`.

Conventions, each chosen to keep false alarms down without letting invented data through:
* A minus sign counts only when it stands apart ("-5", "(-5"); in "3-5" it is a range.
* Digits glued to a preceding letter ("A1", "Q3", "CO2") are labels, not numbers.
* Ordinals ("3rd") and list item numbers ("1. ..." at the start of a line) are positions, never
  data and never "invented".
* "15%" / "15 percent" matches both 15 and 0.15; a plain "15" matches only 15.
* Number words cover zero..ninety-nine, optionally times hundred/thousand/million.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

RELATIVE_TOLERANCE = 1e-6

_DIGITS = re.compile(
    r"""
    (?P<sign>(?<![\w.,])[-\u2212])?
    (?P<currency>[$\u20ac\u00a3])?
    (?<![A-Za-z\d.,])
    (?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)
    (?P<ordinal>(?:st|nd|rd|th)\b)?
    (?P<percent>\s?(?:%|percent\b|per\s?cent\b))?
    (?P<scale>\s?(?:k\b|thousand\b|million\b|billion\b))?
    """,
    re.VERBOSE | re.IGNORECASE,
)
_SCALES = {"k": 1e3, "thousand": 1e3, "million": 1e6, "billion": 1e9}
_UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_WORDS = re.compile(
    r"\b(?P<tens>"
    + "|".join(_TENS)
    + r")(?:[-\s](?P<unit1>"
    + "|".join(k for k in _UNITS if _UNITS[k] < 10)
    + r"))?\b"
    r"|\b(?P<unit>" + "|".join(sorted(_UNITS, key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)
_WORD_SCALE = re.compile(r"\s(hundred|thousand|million)\b", re.IGNORECASE)
_WORD_PERCENT = re.compile(r"\s?(?:%|percent\b|per\s?cent\b)", re.IGNORECASE)


class ExtractedNumber(BaseModel):
    value: float
    text: str = Field(description="the span as written")
    start: int
    end: int
    percent: bool = False
    kind: Literal["digits", "word", "ordinal"] = "digits"

    def candidates(self) -> tuple[float, ...]:
        """The values this mention may stand for: "15%" is 15 or 0.15."""
        return (self.value, self.value / 100.0) if self.percent else (self.value,)


def _is_enumerator(text: str, start: int, end: int) -> bool:
    """A list item's number: "1. Portland ships 220" or "  2) ..." at the start of a line."""
    line_start = text.rfind("\n", 0, start) + 1
    return (
        not text[line_start:start].strip()
        and end - start <= 2
        and text[end : end + 1] in (".", ")")
        and text[end + 1 : end + 2] in (" ", "\t")
    )


def _digit_numbers(text: str) -> list[ExtractedNumber]:
    found = []
    for match in _DIGITS.finditer(text):
        value = float(match.group("number").replace(",", ""))
        if match.group("sign"):
            value = -value
        scale = (match.group("scale") or "").strip().lower()
        if scale:
            value *= _SCALES[scale]
        enumerator = _is_enumerator(text, match.start(), match.end()) and not match.group("sign")
        kind: Literal["digits", "ordinal"] = "ordinal" if match.group("ordinal") or enumerator else "digits"
        found.append(
            ExtractedNumber(
                value=value,
                text=match.group(0).strip(),
                start=match.start(),
                end=match.end(),
                percent=bool(match.group("percent")),
                kind=kind,
            )
        )
    return found


def _word_numbers(text: str) -> list[ExtractedNumber]:
    found = []
    for match in _WORDS.finditer(text):
        if match.group("tens"):
            value = _TENS[match.group("tens").lower()] + _UNITS.get((match.group("unit1") or "").lower(), 0)
        else:
            value = _UNITS[match.group("unit").lower()]
        end = match.end()
        scale = _WORD_SCALE.match(text, end)
        if scale:
            value *= {"hundred": 100, "thousand": 1000, "million": 1_000_000}[scale.group(1).lower()]
            end = scale.end()
        percent = _WORD_PERCENT.match(text, end)
        if percent:
            end = percent.end()
        found.append(
            ExtractedNumber(
                value=float(value),
                text=text[match.start() : end],
                start=match.start(),
                end=end,
                percent=bool(percent),
                kind="word",
            )
        )
    return found


def extract_numbers(text: str) -> list[ExtractedNumber]:
    """Every number mentioned in `text`, in order of appearance."""
    numbers = _digit_numbers(text) + _word_numbers(text)
    return sorted(numbers, key=lambda n: n.start)


def count_numbers(text: str) -> int:
    """How many numbers the text states (digits and number words; positions excluded)."""
    return len(extract_numbers(text))


def same_value(a: float, b: float, tolerance: float = RELATIVE_TOLERANCE) -> bool:
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=1e-9)


def mentions(number: ExtractedNumber, value: float) -> bool:
    """Does this mention stand for `value`?"""
    return any(same_value(candidate, value) for candidate in number.candidates())


class NumberMatch(BaseModel):
    """Which required values the text lacks, and which of its numbers nothing explains."""

    missing: list[float] = Field(default_factory=list)
    invented: list[ExtractedNumber] = Field(default_factory=list)
    found: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.invented


def match_numbers(
    numbers: Sequence[ExtractedNumber], required: Iterable[float], allowed: Iterable[float] = ()
) -> NumberMatch:
    """Required values absent from `numbers`, and mentions that match neither list.

    Ordinals are never data and never invented. Number words can satisfy a requirement but are
    flagged only when they are not small counts (<= 12): "two factories" is a count of names the
    data already lists, "forty" is data.
    """
    required = list(required)
    known = [*required, *allowed]
    missing = [
        value for value in required if not any(mentions(n, value) for n in numbers if n.kind != "ordinal")
    ]
    invented = [
        n
        for n in numbers
        if n.kind == "digits" or (n.kind == "word" and n.value > 12)
        if not any(mentions(n, value) for value in known)
    ]
    return NumberMatch(missing=missing, invented=invented, found=len(numbers))


def number_signature(text: str) -> set[str]:
    """The distinct numbers of a text as canonical strings (for near-duplicate checks)."""
    return {f"{n.value:.6g}" for n in extract_numbers(text) if n.kind != "ordinal"}


def format_number(value: float) -> str:
    """How the facts write a number: whole numbers without decimals, others with up to 6 digits."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")
