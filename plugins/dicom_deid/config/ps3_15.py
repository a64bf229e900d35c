"""PS3.15 Annex E Table E.1-1 and E.3.10-1, read from the vendored CSV files.

The standard's table is data (``data/ps3_15/``), never code: this module parses it
once per process and answers "which action code applies to this attribute under
these options". Compound codes are resolved here too (see :func:`resolve_compound`), and
plain removals of attributes the IOD requires (:func:`resolve_required`).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources

from .iod import AttributeType
from .model import Option

TABLE_EDITION = "2026c"


class ActionCode(StrEnum):
    """Action codes of PS3.15 Table E.1-1a."""

    D = "D"
    """Replace with a non-zero length dummy value consistent with the VR."""
    Z = "Z"
    """Replace with a zero length value (or a dummy)."""
    X = "X"
    """Remove."""
    K = "K"
    """Keep (unchanged for non-sequences; sequences are cleaned recursively)."""
    C = "C"
    """Clean: replace with values of similar meaning known not to identify."""
    U = "U"
    """Replace with a non-zero length UID, consistent within the set of instances."""
    X_Z = "X/Z"
    X_D = "X/D"
    X_Z_D = "X/Z/D"
    Z_D = "Z/D"
    X_Z_U = "X/Z/U*"


def resolve_compound(code: ActionCode, attribute_type: AttributeType | None = None
                     ) -> ActionCode:
    """The simple code for a compound one, given the attribute's Type in this instance's
    IOD at its place (None when the IOD or the attribute there is unknown).

    As Table E.1-1a defines them: ``X/Z`` removes a Type 3 attribute and empties a Type 2
    one; ``X/D`` removes a Type 3 attribute and writes a dummy otherwise; ``X/Z/D`` removes,
    empties or dummies a Type 3, 2 or 1 attribute; ``Z/D`` dummies a Type 1 attribute and
    empties others. Conditional Types count as their unconditional ones (the conditions are
    prose). Unknown: the choice that is conformant whatever the Type and still removes the
    value (``X/Z`` -> Z, ``X/D``, ``X/Z/D``, ``Z/D`` -> D). ``X/Z/U*`` -> U always: new UIDs
    keep references intact.
    """
    t = attribute_type
    optional = t is AttributeType.T3
    required = t is AttributeType.T1 or t is AttributeType.T1C
    if code is ActionCode.X_Z:
        return ActionCode.X if optional else ActionCode.Z
    if code is ActionCode.X_D:
        return ActionCode.X if optional else ActionCode.D
    if code is ActionCode.X_Z_D:
        if optional:
            return ActionCode.X
        return ActionCode.D if required or t is None else ActionCode.Z
    if code is ActionCode.Z_D:
        return ActionCode.D if required or t is None else ActionCode.Z
    if code is ActionCode.X_Z_U:
        return ActionCode.U
    return code


def resolve_required(code: ActionCode, attribute_type: AttributeType | None) -> ActionCode:
    """A plain ``X`` (remove) or ``Z`` (empty) where the IOD needs the attribute at its place
    resolves as ``X/Z/D`` and ``Z/D`` do (:func:`resolve_compound`): Type 1 or 1C -> D (a
    fixed dummy), ``X`` on Type 2 or 2C -> Z. Table E.1-1 gives a plain code to some
    attributes that some IODs require (Presentation Creation Date in every Presentation
    State); removing them there would write an invalid instance. Type 3 or unknown: as
    given (removal stays the choice where nothing requires the attribute)."""
    if attribute_type is None or attribute_type is AttributeType.T3:
        return code
    if code is ActionCode.X:
        return resolve_compound(ActionCode.X_Z_D, attribute_type)
    if code is ActionCode.Z:
        return resolve_compound(ActionCode.Z_D, attribute_type)
    return code


@dataclass(frozen=True)
class ProfileRow:
    """One row of Table E.1-1: the Basic Profile code and what each option changes."""

    tag_text: str
    name: str
    keyword: str
    retired: bool
    basic: ActionCode
    option_codes: tuple[tuple[Option, ActionCode], ...]

    def code_for(self, options: frozenset[Option]) -> tuple[ActionCode, Option | None]:
        """The code under ``options`` and the option that decided it (None = Basic Profile).

        When several selected options touch the row, Clean wins over Keep: it keeps the
        information while still removing identifiers, which is what both options ask for.
        """
        chosen: tuple[ActionCode, Option | None] = (self.basic, None)
        for option, code in self.option_codes:
            if option not in options:
                continue
            if code is ActionCode.C:
                return code, option
            chosen = (code, option)
        return chosen


@dataclass(frozen=True)
class MaskedRow:
    """A row whose tag has ``x`` digits, matched by mask/value on the 32-bit tag."""

    row: ProfileRow
    mask: int
    value: int


@dataclass(frozen=True)
class ProfileTable:
    """Table E.1-1 split into exact tags, masked tags and the private-attributes row."""

    exact: dict[int, ProfileRow]
    masked: tuple[MaskedRow, ...]
    private: ProfileRow

    def row_for(self, tag: int) -> ProfileRow | None:
        """The row for a standard tag, exact rows first, then masked rows."""
        row = self.exact.get(tag)
        if row is not None:
            return row
        for masked in self.masked:
            if tag & masked.mask == masked.value:
                return masked.row
        return None


_TAG_RE = re.compile(r"^\(([0-9A-Fa-fx]{4}),([0-9A-Fa-fx]{4})\)$")


def _mask_of(tag_text: str) -> tuple[int, int] | None:
    """(mask, value) for a ``(GGxx,EEEE)`` pattern; None when it is not a tag pattern."""
    m = _TAG_RE.match(tag_text)
    if not m:
        return None
    digits = (m.group(1) + m.group(2)).lower()
    mask = int("".join("0" if c == "x" else "f" for c in digits), 16)
    value = int(digits.replace("x", "0"), 16)
    return mask, value


@cache
def load_table() -> ProfileTable:
    """Parse the vendored Table E.1-1 (cached per process)."""
    text = resources.files(__package__).joinpath("data/ps3_15/basic_profile.csv").read_text(
        encoding="utf-8"
    )
    exact: dict[int, ProfileRow] = {}
    masked: list[MaskedRow] = []
    private: ProfileRow | None = None
    for rec in csv.DictReader(text.splitlines()):
        option_codes = tuple(
            (opt, ActionCode(rec[opt.value])) for opt in Option if rec[opt.value]
        )
        row = ProfileRow(
            tag_text=rec["tag"],
            name=rec["name"],
            keyword=rec["keyword"],
            retired=rec["retired"] == "Y",
            basic=ActionCode(rec["basic"]),
            option_codes=option_codes,
        )
        if "odd" in rec["tag"]:
            private = row
            continue
        mask_value = _mask_of(rec["tag"])
        if mask_value is None:
            raise ValueError(f"basic_profile.csv: unreadable tag {rec['tag']!r}")
        mask, value = mask_value
        if mask == 0xFFFFFFFF:
            exact[value] = row
        else:
            # Repeating groups are even groups (PS3.5 7.6): 50xx/60xx with an even low byte.
            masked.append(MaskedRow(row, mask | 0x00010000, value))
    if private is None:
        raise ValueError("basic_profile.csv: no private-attributes row")
    return ProfileTable(exact=exact, masked=tuple(masked), private=private)


@cache
def load_safe_private() -> frozenset[tuple[int, str, int]]:
    """Table E.3.10-1 as (group, private creator, element byte) keys."""
    text = resources.files(__package__).joinpath("data/ps3_15/safe_private.csv").read_text(
        encoding="utf-8"
    )
    keys: set[tuple[int, str, int]] = set()
    for rec in csv.DictReader(text.splitlines()):
        m = re.match(r"^\(([0-9A-Fa-f]{4}),xx([0-9A-Fa-f]{2})\)$", rec["tag"].strip())
        if not m:
            raise ValueError(f"safe_private.csv: unreadable tag {rec['tag']!r}")
        keys.add((int(m.group(1), 16), rec["private_creator"].strip(), int(m.group(2), 16)))
    return frozenset(keys)


@cache
def safe_private_vrs() -> dict[tuple[int, str, int], str]:
    """Table E.3.10-1's VR of each safe private attribute, by (group, creator, element
    byte): what a kept private value read without its VR (implicit VR, or UN) holds."""
    text = resources.files(__package__).joinpath("data/ps3_15/safe_private.csv").read_text(
        encoding="utf-8"
    )
    vrs: dict[tuple[int, str, int], str] = {}
    for rec in csv.DictReader(text.splitlines()):
        m = re.match(r"^\(([0-9A-Fa-f]{4}),xx([0-9A-Fa-f]{2})\)$", rec["tag"].strip())
        if m and rec["vr"].strip():
            vrs[(int(m.group(1), 16), rec["private_creator"].strip(), int(m.group(2), 16))] = \
                rec["vr"].strip()
    return vrs


@cache
def method_codes() -> dict[str, tuple[str, str]]:
    """CID 7050 De-identification Method codes by option name: (code value, meaning)."""
    text = resources.files(__package__).joinpath("data/deidentification_methods.csv").read_text(
        encoding="utf-8")
    return {r["option"]: (r["code_value"], r["code_meaning"])
            for r in csv.DictReader(text.splitlines())}
