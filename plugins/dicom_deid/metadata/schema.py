"""Arrow schema of the metadata export: a column's type is a pure function of its keyword.

Conventions follow Google Cloud Healthcare API's DICOM -> BigQuery export, so analysts'
SQL carries over. The rules (also in the README):

* one column per standard keyword seen; its type comes from the data dictionary's VR:
  AE/AS/CS/LO/LT/SH/ST/UC/UI/UR/UT/DS/IS -> string, DA -> date32, TM -> time64[us],
  DT -> timestamp[us, UTC], FL/FD -> float64, AT/SL/SS/UL/US/SV/UV -> int64,
  PN -> struct<Alphabetic, Ideographic, Phonetic: string>, SQ -> list<struct<...>>;
* a keyword whose dictionary VM allows more than one value ("1-n", "3", "2-2n", ...) is
  ALWAYS a list of that type, even when a file holds a single value, so the type never
  depends on the data;
* bulk binary (dictionary VR OB/OW/OF/OD/OL/OV/UN, or any ambiguous VR that may be one
  of them, e.g. "OB or OW") is not stored: an int64 column ``<Keyword>_length`` holds its
  byte length (``PixelData_length``), at any nesting level;
* sequence items are structs whose fields are the keywords seen in the items (typed by
  the same rules); a new field is an *addition*, never a type change, so schemas of
  different nights unify (:func:`unify`, DuckDB ``union_by_name``, BigQuery
  ``ALLOW_FIELD_ADDITION``);
* private and unknown elements go to one JSON string column ``private_json``; values the
  typed column cannot hold go, raw, to ``malformed_json`` (see export.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa
from pydicom.datadict import DicomDictionary, RepeatersDictionary, get_entry, keyword_dict

STRING_VRS = frozenset({"AE", "AS", "CS", "LO", "LT", "SH", "ST", "UC", "UI", "UR", "UT"})
INT_VRS = frozenset({"AT", "SL", "SS", "UL", "US", "SV", "UV"})
FLOAT_VRS = frozenset({"FL", "FD"})
BULK_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})

LENGTH_SUFFIX = "_length"
PRIVATE_JSON = "private_json"
MALFORMED_JSON = "malformed_json"

PN_TYPE = pa.struct([
    pa.field("Alphabetic", pa.string()),
    pa.field("Ideographic", pa.string()),
    pa.field("Phonetic", pa.string()),
])
UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")

# Column kind -> Arrow type of one value (sequences and bulk are handled apart).
_SCALAR_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(), "ds": pa.string(), "is": pa.string(), "da": pa.date32(),
    "tm": pa.time64("us"), "dt": UTC_TIMESTAMP, "float": pa.float64(), "int": pa.int64(),
    "pn": PN_TYPE,
}

PROVENANCE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("size_bytes", pa.int64(), nullable=False),
    pa.field("mtime", UTC_TIMESTAMP),
    pa.field("content_sha256", pa.string(), nullable=False),
    pa.field("ingest_run_id", pa.string(), nullable=False),
    pa.field("ingest_date", pa.date32(), nullable=False),
    pa.field("transfer_syntax_uid", pa.string()),
    pa.field("sop_class_uid", pa.string()),
)
TRAILING_FIELDS: tuple[pa.Field, ...] = (
    pa.field(PRIVATE_JSON, pa.string()),
    pa.field(MALFORMED_JSON, pa.string()),
)
_FIXED_NAMES = frozenset(f.name for f in PROVENANCE_FIELDS + TRAILING_FIELDS)


@dataclass(frozen=True)
class ColumnSpec:
    """How one standard keyword is stored: its kind (type family) and whether it is a list."""

    keyword: str
    tag: int
    vr: str
    kind: str  # str ds is da tm dt float int pn sq bulk
    multi: bool


def _kind(vr: str) -> str:
    """Type family of a dictionary VR; ambiguous VRs ("US or SS or OW") resolve safely."""
    options = [v.strip() for v in vr.split(" or ")]
    if any(v in BULK_VRS for v in options):
        return "bulk"
    if all(v in INT_VRS for v in options):
        return "int"
    first = options[0]
    if first in STRING_VRS:
        return "str"
    if first in FLOAT_VRS:
        return "float"
    return {"DS": "ds", "IS": "is", "DA": "da", "TM": "tm", "DT": "dt", "PN": "pn",
            "SQ": "sq"}.get(first, "bulk")


def _multi(vm: str) -> bool:
    """True when the dictionary VM allows more than one value (anything but "1")."""
    return vm.strip() not in ("1", "0", "")


@lru_cache(maxsize=8192)
def spec_for_tag(tag: int) -> ColumnSpec | None:
    """The column of a standard tag (repeating groups map to their base keyword), else None."""
    if tag >> 16 & 1 or tag & 0xFFFF == 0:
        return None  # private, or a group length
    try:
        vr, vm, _name, _retired, keyword = get_entry(tag)
    except KeyError:
        return None
    if not keyword:
        return None
    return ColumnSpec(keyword, tag, vr, _kind(vr), _multi(vm))


@lru_cache(maxsize=8192)
def spec_for_keyword(keyword: str) -> ColumnSpec | None:
    """The column of a standard keyword, or None when pydicom's dictionary does not know it."""
    tag = keyword_dict.get(keyword)
    if tag is not None and tag in DicomDictionary:
        vr, vm, _name, _retired, kw = DicomDictionary[tag]
        return ColumnSpec(kw, tag, vr, _kind(vr), _multi(vm))
    repeater = _REPEATER_KEYWORDS.get(keyword)  # 50xx/60xx groups: the base group's tag
    if repeater is None:
        return None
    mask, (vr, vm, _name, _retired, kw) = repeater
    return ColumnSpec(kw, int(mask.replace("x", "0"), 16), vr, _kind(vr), _multi(vm))


_REPEATER_KEYWORDS = {entry[4]: (mask, entry) for mask, entry in RepeatersDictionary.items()}


def arrow_type_for(keyword: str, item_fields: Iterable[pa.Field] = ()) -> pa.DataType:
    """Arrow type of a keyword's column; ``item_fields`` are the struct fields of an SQ's items.

    Raises KeyError for an unknown keyword. A bulk keyword has no column of its own (its
    ``<Keyword>_length`` column is int64).
    """
    if keyword.endswith(LENGTH_SUFFIX):
        return pa.int64()
    spec = spec_for_keyword(keyword)
    if spec is None:
        raise KeyError(f"not a standard DICOM keyword: {keyword!r}")
    if spec.kind == "sq":
        return pa.list_(pa.struct(list(item_fields)))
    if spec.kind == "bulk":
        raise KeyError(f"{keyword} is bulk data: only {keyword}{LENGTH_SUFFIX} is stored")
    base = _SCALAR_TYPES[spec.kind]
    return pa.list_(base) if spec.multi else base


# A shape is the set of keywords seen at one level; a sequence keyword maps to the shape
# of its items, any other key to None.
Shape = dict[str, "Shape | None"]


def _sort_key(name: str) -> tuple[int, int]:
    """Columns in tag order; a ``_length`` column right after where its keyword would be."""
    base = name.removesuffix(LENGTH_SUFFIX)
    spec = spec_for_keyword(base)
    return (spec.tag if spec else 0xFFFFFFFF, name != base)


def fields_for_shape(shape: Mapping[str, Shape | None]) -> list[pa.Field]:
    """Typed fields for the keywords of a shape, in tag order; empty-item sequences dropped."""
    out: list[pa.Field] = []
    for name in sorted(shape, key=_sort_key):
        sub = shape[name]
        if sub is not None:
            item_fields = fields_for_shape(sub)
            if not item_fields:
                continue  # Parquet cannot store a struct without fields
            out.append(pa.field(name, arrow_type_for(name, item_fields)))
        else:
            out.append(pa.field(name, arrow_type_for(name)))
    return out


def schema_for_shape(shape: Mapping[str, Shape | None]) -> pa.Schema:
    """The schema of one Parquet part: provenance, keyword columns, then the JSON columns."""
    keyword_fields = [f for f in fields_for_shape(shape) if f.name not in _FIXED_NAMES]
    return pa.schema([*PROVENANCE_FIELDS, *keyword_fields, *TRAILING_FIELDS])


def merge_shape(into: Shape, other: Mapping[str, Shape | None]) -> None:
    """Add ``other``'s keywords (recursively) to ``into``."""
    for key, sub in other.items():
        if sub is None:
            into.setdefault(key, None)
        else:
            current = into.get(key)
            if current is None:
                current = into[key] = {}
            merge_shape(current, sub)


class ShapeMerger:
    """Merges many shapes into one, fast when they repeat (as rows of a series do).

    A sequence's item shape is often the very same object from row to row (the export
    caches converted sequences), so each distinct item-shape object is merged once; new
    keywords at the top level are found with one set difference.
    """

    def __init__(self) -> None:
        self.shape: Shape = {}
        self._seen: dict[int, tuple[str, Shape]] = {}  # id -> (key, object), kept alive

    def add(self, other: Mapping[str, Shape | None]) -> None:
        """Add ``other``'s keywords (recursively) to :attr:`shape`."""
        into = self.shape
        new = other.keys() - into.keys()
        for key in new:
            into[key] = None
        seen = self._seen
        for key, sub in other.items():
            if sub is None:
                continue
            if seen.get(id(sub), (None, None))[0] == key:
                continue  # this very object was merged under this key before
            current = into.get(key)
            if current is None:
                current = into[key] = {}
            merge_shape(current, sub)
            seen[id(sub)] = (key, sub)


def unify(schemas: Iterable[pa.Schema]) -> pa.Schema:
    """One schema over parts of different nights: the union of columns and struct fields.

    Types never conflict (each is a function of its keyword); a conflict means a bug and
    raises ``pyarrow.ArrowTypeError``/``ArrowInvalid`` rather than being silently widened.
    """
    schemas = list(schemas)
    if not schemas:
        return pa.schema([*PROVENANCE_FIELDS, *TRAILING_FIELDS])
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    for schema in schemas:
        for field in schema:
            _check_compatible(field.type, unified.field(field.name).type, field.name)
    return unified


def _check_compatible(part: pa.DataType, whole: pa.DataType, name: str) -> None:
    """``whole`` must equal ``part`` up to struct fields added at any depth."""
    if pa.types.is_struct(part) and pa.types.is_struct(whole):
        for child in part:
            _check_compatible(child.type, whole.field(child.name).type, f"{name}.{child.name}")
    elif pa.types.is_list(part) and pa.types.is_list(whole):
        _check_compatible(part.value_type, whole.value_type, name)
    elif part != whole:
        raise pa.ArrowTypeError(f"column {name}: {part} vs {whole}")
