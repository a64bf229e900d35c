"""Coding scheme designators the standard registers (``data/coding_schemes.txt``).

A code's scheme designator names a terminology, never a person; one the standard
registers (or a private "99" one) is not searched for identifying values, whatever a
patient is called. Anything else written there is text like any other.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["is_scheme_designator", "is_scheme_version"]


@cache
def _registered() -> frozenset[str]:
    text = resources.files(__package__).joinpath("data/coding_schemes.txt").read_text()
    return frozenset(line.strip().upper() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


def is_scheme_designator(value: str) -> bool:
    """Whether ``value`` (as written, padding aside) reads as a coding scheme designator:
    registered, private ("99..."), or as short as most are (4 characters or fewer:
    "TEST" in pydicom's own test SR, whose patient is also called TEST)."""
    value = value.strip(" \x00").upper()
    return len(value) <= 4 or value.startswith("99") or value in _registered()


def is_scheme_version(value: str) -> bool:
    """Whether ``value`` reads as a coding scheme's version ("2.64", "01", "3.0.1"): no
    letter and fewer than 6 digits (a date or an ID written there is searched)."""
    value = value.strip(" \x00")
    return not any(c.isalpha() for c in value) and sum(c.isdigit() for c in value) < 6
