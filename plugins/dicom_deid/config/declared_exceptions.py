"""A project's declared exceptions: the attributes it deliberately keeps, which the
verification gate then does not search for.

Apart from :mod:`~dicom_deid.deid.gate` (which loads pydicom's reader and the IOD tables)
so that validating a project file needs only the data dictionary and PS3.15's table.
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches

from pydicom.datadict import keyword_dict, tag_for_keyword

from dicom_deid.errors import ConfigError

from .model import Option, unsupported_option
from .ps3_15 import ActionCode, load_table

__all__ = ["expand_exceptions"]


def expand_exceptions(entries: Iterable[str]) -> frozenset[str]:
    """Declared exceptions as keywords: a DICOM keyword stands for itself; a PS3.15
    option name (``RetainUIDs``, ``RetainDeviceIdentity``...) for every attribute that
    option keeps (``K`` in its column of Table E.1-1). Anything else: :class:`ConfigError`."""
    out: set[str] = set()
    for entry in entries:
        if tag_for_keyword(entry) is not None or entry == "PersonName":
            out.add(entry)
            continue
        try:
            option = Option.parse(entry)
        except ConfigError:
            unsupported = unsupported_option(entry)
            if unsupported:
                raise ConfigError(unsupported) from None
            close = get_close_matches(entry, keyword_dict, n=1, cutoff=0.8)
            raise ConfigError(
                f"exception {entry!r} is neither a DICOM keyword nor a PS3.15 option"
                + (f" (did you mean {close[0]}?)" if close else "")) from None
        out.update(row.keyword for row in load_table().exact.values()
                   if row.keyword and dict(row.option_codes).get(option) is ActionCode.K)
    return frozenset(out)
