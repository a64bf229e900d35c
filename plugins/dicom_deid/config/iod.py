"""The standard's IOD tables, read from ``data/iod/``: which Type an attribute has where.

A PS3.15 compound action (``X/Z``, ``X/D``, ``X/Z/D``, ``Z/D``) means "remove, unless
the IOD needs the attribute": which one is right depends on the attribute's Type (1, 1C,
2, 2C, 3) in the instance's IOD, at the place in the dataset where it is. These tables
answer that, and whether a plain ``X`` or ``Z`` would take away an attribute the IOD
requires (``ps3_15.resolve_required``): SOP Class UID -> IOD -> modules -> each
attribute's Type, keyed by the keyword of the sequence it sits in ("" at the top level).
Where an attribute has several Types in one IOD (several modules, or macros), the
strictest counts. The data is derived from the standard by highdicom (see
``data/iod/SOURCE.md``); it is read once per process, and one IOD's table is assembled
the first time a file of it is seen.

``conditional_dependents.csv`` lists attributes whose presence a condition ties to another
attribute (Type 1C/2C, "Required if X is present"): when the profile removes X, they go
with it, or the output would carry an attribute whose condition no longer holds.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources

from pydicom.datadict import tag_for_keyword

__all__ = ["AttributeType", "ConditionKind", "IodTypes", "dependents_of", "iod_for", "iod_named",
           "load_tables", "module_keywords"]


class AttributeType(StrEnum):
    """Attribute Types of PS3.5 7.4: whether an attribute must be present, and with a value."""

    T1 = "1"
    """Required, with a value."""
    T1C = "1C"
    """Required with a value under a condition (treated as 1: the condition is prose)."""
    T2 = "2"
    """Required, possibly empty (zero length; zero items for a sequence)."""
    T2C = "2C"
    """Required, possibly empty, under a condition (treated as 2)."""
    T3 = "3"
    """Optional; if present a sequence still needs one item or more."""


class ConditionKind(StrEnum):
    """What a conditional dependent's condition asks of the attribute it names."""

    PRESENT = "present"
    HAS_VALUE = "has_value"


@dataclass(frozen=True)
class IodTypes:
    """The Types of the attributes one IOD defines (those dicom-deid needs to know)."""

    name: str
    types: dict[tuple[str, str], AttributeType]

    def type_of(self, parent: str, keyword: str) -> AttributeType | None:
        """The Type of ``keyword`` inside items of the sequence ``parent`` ("" at the top
        level); None when this IOD does not define it there."""
        return self.types.get((parent, keyword))


def _rows(name: str) -> list[list[str]]:
    """The rows of ``data/iod/<name>`` after its header (plain comma-separated values: none
    of these tables quotes a field, which keeps reading them ~5x faster than csv's)."""
    text = resources.files(__package__).joinpath(f"data/iod/{name}").read_text(encoding="utf-8")
    return [line.split(",") for line in text.splitlines()[1:] if line]


@cache
def _sop_class_iods() -> dict[str, str]:
    return {uid: iod for uid, iod in _rows("sop_class_iods.csv")}


@cache
def _iod_modules() -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for iod, module, _usage in _rows("iod_modules.csv"):
        found.setdefault(iod, []).append(module)
    return {iod: tuple(modules) for iod, modules in found.items()}


_RANK = {AttributeType.T1: 0, AttributeType.T1C: 1, AttributeType.T2: 2, AttributeType.T2C: 3,
         AttributeType.T3: 4}


@cache
def _module_types() -> dict[str, tuple[tuple[str, str, AttributeType], ...]]:
    found: dict[str, list[tuple[str, str, AttributeType]]] = {}
    types = {t.value: t for t in AttributeType}
    for module, parent, keyword, kind in _rows("module_attributes.csv"):
        found.setdefault(module, []).append((parent, keyword, types[kind]))
    return {module: tuple(rows) for module, rows in found.items()}


@cache
def iod_named(name: str) -> IodTypes:
    """The IOD ``name`` (a key of ``iod_modules.csv``, e.g. ``ct-image``); an unknown name
    gives an IOD that defines nothing."""
    types: dict[tuple[str, str], AttributeType] = {}
    module_types = _module_types()
    for module in _iod_modules().get(name, ()):
        for parent, keyword, kind in module_types.get(module, ()):
            known = types.get((parent, keyword))
            if known is None or _RANK[kind] < _RANK[known]:
                types[(parent, keyword)] = kind
    return IodTypes(name, types)


@cache
def module_keywords(module: str) -> frozenset[str]:
    """The keywords of the top-level attributes the tables give ``module`` (a key of
    ``module_attributes.csv``, e.g. ``image-pixel``; its Type 3 attributes are left out
    unless Table E.1-1 lists them)."""
    return frozenset(keyword for parent, keyword, _ in _module_types().get(module, ())
                     if not parent)


def iod_for(sop_class_uid: str) -> IodTypes | None:
    """The IOD of a SOP class (None for a SOP class the tables do not know)."""
    name = _sop_class_iods().get(sop_class_uid)
    return None if name is None else iod_named(name)


@cache
def _dependents() -> dict[int, tuple[tuple[int, ConditionKind], ...]]:
    found: dict[int, list[tuple[int, ConditionKind]]] = {}
    text = resources.files(__package__).joinpath("data/iod/conditional_dependents.csv"
                                                  ).read_text(encoding="utf-8")
    for r in csv.DictReader(text.splitlines()):  # quoted citations: the csv module reads it
        condition, dependent = tag_for_keyword(r["condition_attribute"]), tag_for_keyword(
            r["dependent"])
        if condition is None or dependent is None:
            raise ValueError(f"conditional_dependents.csv: unknown keyword in {r}")
        found.setdefault(condition, []).append((dependent, ConditionKind(r["condition"])))
    return {tag: tuple(rows) for tag, rows in found.items()}


def dependents_of(condition_tag: int) -> tuple[tuple[int, ConditionKind], ...]:
    """The attributes whose condition names ``condition_tag`` (with what it asks)."""
    return _dependents().get(condition_tag, ())


def load_tables() -> None:
    """Read the tables now (about 60 ms): a parent process that then forks its workers
    reads them once for all of them."""
    _sop_class_iods()
    _iod_modules()
    _module_types()
    _dependents()
