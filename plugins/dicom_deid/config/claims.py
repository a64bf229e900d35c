"""What an output may claim about its de-identification (PS3.15 E.1.1, PS3.3 C.7.1.1).

The claims follow what the plan does to the attributes Table E.1-1 (and the beyond-table
list, and the dates neither lists) names, not the names of the options asked for. Each
attribute the configuration treats more weakly than the Basic Profile does (kept where the
profile removes, cleaned where it removes...) must be allowed by an option that says so,
which is then claimed (keeping every date is Retain Longitudinal Full Dates; keeping the
primary UIDs is Retain UIDs); an attribute no option allows (a kept PatientName) means the
patient's identity was not removed: Patient Identity Removed is NO, nothing of the profile
is claimed, and the kept attributes are named in De-identification Method. Longitudinal
Temporal Information Modified says what was done to the dates themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache, lru_cache

from .model import DeidConfig, Option, PrimaryIds, ProfileType
from .plan import (
    DATE_VRS,
    Act,
    Mode,
    Plan,
    beyond_table,
    dictionary_vr,
    shifts_dates,
    unlisted_dates,
)
from .ps3_15 import ActionCode, load_table

_UNCHANGED = frozenset({Act.KEEP, Act.RECURSE})
_CLEANED = frozenset({Act.CLEAN, Act.CLEAN_TEXT, Act.RECURSE_CLEAN, Act.SHIFT})
_LONGITUDINAL = frozenset({Option.RETAIN_LONGITUDINAL_FULL_DATES,
                           Option.RETAIN_LONGITUDINAL_MODIFIED_DATES})
"""The options whose rows are the longitudinal temporal information (PS3.15 E.3.6)."""
_PROFILES_CLAIMED = frozenset({ProfileType.BASIC, ProfileType.MINIMAL_KEEP_LIST})
"""Profiles that remove at least what the Basic Profile removes, when nothing is kept
beyond it (KEEP_ALL and DEIDENTIFY_TAG_CONTENTS keep or merely inspect values)."""


@dataclass(frozen=True)
class Claims:
    """The de-identification attributes every output of one configuration gets."""

    identity_removed: bool
    """Patient Identity Removed: YES only when nothing is kept beyond the profile's options."""
    options: frozenset[Option]
    """The options claimed in the code sequence (with the Basic Profile, when YES)."""
    dates: str
    """Longitudinal Temporal Information Modified: UNMODIFIED, MODIFIED or REMOVED."""
    kept: tuple[str, ...]
    """Keywords kept, or treated more weakly than the profile, that no option allows."""


def _strength(act: Act) -> int:
    """How much of a value an action leaves: 0 all of it, 1 a cleaned or shifted form,
    3 nothing original (removed, emptied, dummied, replaced)."""
    if act in _UNCHANGED:
        return 0
    return 1 if act in _CLEANED else 3


def _code_strength(code: ActionCode) -> int:
    return 0 if code is ActionCode.K else 1 if code is ActionCode.C else 3


@cache
def _attributes() -> tuple[tuple[int, str, str, tuple[tuple[Option, ActionCode], ...]], ...]:
    """(tag, dictionary VR, keyword, option codes) of every attribute the claims judge:
    the table's, the dates it does not list (with the row the plan gives them, so that
    their fate counts in Longitudinal Temporal Information Modified as the table's dates'
    does) and the beyond-table list's."""
    rows = [(tag, dictionary_vr(tag), row.keyword, row.option_codes)
            for tag, row in (*load_table().exact.items(), *unlisted_dates().items())]
    known = {tag for tag, *_ in rows}
    rows += [(tag, dictionary_vr(tag), "", ()) for tag in beyond_table() if tag not in known]
    return tuple(rows)


@lru_cache(maxsize=32)  # each Deidentifier asks; the work is the same per configuration
def claims_of(config: DeidConfig) -> Claims:
    """The claims of ``config``'s outputs (pixel data aside: Clean Pixel Data is claimed
    per instance, for pixels that were examined)."""
    from pydicom.datadict import keyword_for_tag

    plan = Plan(config)
    basic = Plan(DeidConfig())  # the Basic Profile, no option, no action
    asked = Plan(replace(config, actions=(), primary_ids=PrimaryIds.UNSPECIFIED))
    # Retain Safe Private keeps attributes the table has one row for (all private ones):
    # claimed as asked, under the Basic Profile, the one it modifies.
    claimed = {Option.RETAIN_SAFE_PRIVATE} & config.options \
        if config.profile is ProfileType.BASIC else set()
    kept: list[str] = []
    date_fates: set[str] = set()
    for tag, vr, keyword, option_codes in _attributes():
        act = plan.act(tag, vr, Mode.NORMAL)
        strength = _strength(act)
        if vr in DATE_VRS and any(o in _LONGITUDINAL for o, _ in option_codes):
            date_fates.add(_date_fate(act, config))
        if strength >= _strength(basic.act(tag, vr, Mode.NORMAL)):
            continue
        if strength >= _strength(asked.act(tag, vr, Mode.NORMAL)):
            # as the options asked (an action or primaryIds may only have added to it)
            decided = [o for o, _ in option_codes if o in config.options]
            if decided:
                claimed.update(decided)
                continue
        allowing = [(_code_strength(code), opt) for opt, code in option_codes
                    if _code_strength(code) <= strength]
        if allowing:  # the option closest to what was done
            claimed.add(max(allowing, key=lambda a: (a[0], a[1].value))[1])
        else:
            kept.append(keyword or keyword_for_tag(tag) or f"{tag:08X}")
    identity_removed = config.profile in _PROFILES_CLAIMED and not kept
    dates = ("UNMODIFIED" if "UNMODIFIED" in date_fates
             else "MODIFIED" if "MODIFIED" in date_fates else "REMOVED")
    return Claims(identity_removed, frozenset(claimed), dates, tuple(sorted(set(kept))))


def _date_fate(act: Act, config: DeidConfig) -> str:
    """What an action does to a date: kept, shifted (the keyed per-patient shift, or
    Google's dateShiftConfig on the DATE info type) or removed."""
    if act in _UNCHANGED:
        return "UNMODIFIED"
    if act is Act.SHIFT:
        return "MODIFIED"
    if act is Act.CLEAN_TEXT and shifts_dates(config.text):
        return "MODIFIED"
    return "REMOVED"

