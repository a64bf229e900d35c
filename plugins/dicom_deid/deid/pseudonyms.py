"""Keyed, consistent pseudonyms: HMAC-SHA256 of the original value under the run's key.

The same key and value always give the same pseudonym (nightly runs and backfills
agree); without the key nobody can recompute them. Each kind of value has its own
HMAC domain so a PatientID and an AccessionNumber with equal text never collide.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from datetime import date, timedelta

from pydicom.datadict import keyword_for_tag
from pydicom.uid import UID_dictionary

from dicom_deid.errors import KeyConfigError

_WELL_KNOWN_ROOT = "1.2.840.10008."
_B32 = str.maketrans("", "", "=")
_UID_CACHE_SIZE = 10_000  # study/series UIDs repeat within a batch; instance UIDs never do


def is_well_known_uid(value: str) -> bool:
    """True for UIDs defined by the standard (SOP classes, transfer syntaxes, coding schemes...).

    pydicom's registry is matched exactly. Beyond it, a UID under the DICOM root
    1.2.840.10008 counts as standard (one newer than the registry) only when every arc
    after the root is a short number: some devices mint instance UIDs under the root,
    against the standard, with a date, a serial or a record number in them
    (``1.2.840.10008.999.7734521.1``); an arc of six digits or more is such a number,
    and the UID is replaced like any other.
    """
    if value in UID_dictionary:
        return True
    if not value.startswith(_WELL_KNOWN_ROOT):
        return False
    return all(len(arc) < 6 for arc in value[len(_WELL_KNOWN_ROOT):].split("."))


_STANDARD_KINDS = ("Class", "TransferSyntax")
_STANDARD_KEYWORDS = frozenset({"CodingSchemeUID", "ContextUID", "MappingResourceUID"})


@functools.lru_cache(maxsize=512)
def names_standard_uids(tag: int) -> bool:
    """Whether an attribute holds UIDs the standard defines (a SOP class, a transfer
    syntax, a coding scheme or context group), where a UID under the DICOM root newer than
    pydicom's registry is kept (:func:`is_well_known_uid`). Any other UID attribute names
    an instance (a study, a series, a frame of reference...): a UID there is kept only
    when the registry holds it (a well-known SOP instance), since devices mint instance
    UIDs under the root with short arcs too (an external probe: a study UID
    ``1.2.840.10008.77.2023...`` kept, then found by the gate, which looks for every UID
    but the registry's, and the file rejected)."""
    keyword = keyword_for_tag(tag) or ""
    return keyword in _STANDARD_KEYWORDS or any(k in keyword for k in _STANDARD_KINDS)


def patient_key(patient_id: str, issuer: str, study_uid: str) -> str:
    """Whose date shift an instance takes: its PatientID within its IssuerOfPatientID, or,
    without a PatientID, its study (values as read, less their padding). One function for
    both de-identification paths and the linkage of non-imaging extracts
    (:mod:`dicom_deid.vault.linkage`), so the three can never shift a patient differently."""
    return f"pid:{issuer}|{patient_id}" if patient_id else f"study:{study_uid}"


class Pseudonymizer:
    """Derives every replacement identifier, UID and date shift from one secret key."""

    def __init__(self, key: bytes, *, prefix: str = "", max_shift_days: int = 365) -> None:
        if len(key) < 32:
            raise KeyConfigError("the pseudonym key must hold at least 32 bytes")
        self._key = key
        self._prefix = prefix
        self._max_shift = max_shift_days
        self._uid_cache: dict[str, str] = {}
        self._shift_cache: dict[str, int] = {}
        self._code_cache: dict[tuple[bytes, str, int], str] = {}

    def _mac(self, domain: bytes, value: str) -> bytes:
        message = domain + b"\x00" + value.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _code(self, domain: bytes, value: str, length: int) -> str:
        key = (domain, value, length)
        cached = self._code_cache.get(key)
        if cached is None:  # the same patient's files follow each other: worth a cache
            text = base64.b32encode(self._mac(domain, value)).decode("ascii").translate(_B32)
            cached = text[:length]
            if len(self._code_cache) >= _UID_CACHE_SIZE:
                self._code_cache.clear()
            self._code_cache[key] = cached
        return cached

    def uid(self, value: str, standard: bool = True) -> str:
        """A ``2.25.`` UID (UUID-derived integer) for a non-standard UID; standard ones kept
        (``standard``: as :func:`is_well_known_uid` judges them; else only the registry's,
        for an attribute that names an instance: :func:`names_standard_uids`)."""
        value = value.strip("\x00 ")
        if not value or (is_well_known_uid(value) if standard else value in UID_dictionary):
            return value
        cached = self._uid_cache.get(value)
        if cached is not None:
            return cached
        raw = bytearray(self._mac(b"uid", value)[:16])
        raw[6] = (raw[6] & 0x0F) | 0x80  # RFC 9562 version 8 (custom)
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
        new = "2.25." + str(int.from_bytes(raw, "big"))
        if len(self._uid_cache) >= _UID_CACHE_SIZE:
            self._uid_cache.clear()  # bounded memory over any corpus size; misses are cheap
        self._uid_cache[value] = new
        return new

    def patient_id(self, value: str, issuer: str = "") -> str:
        """PatientID pseudonym: organisation prefix + 16 base32 characters (LO, <= 64).

        A PatientID is unique only within its issuer: with an IssuerOfPatientID the pair
        is keyed (two sites' patient "12345" get different pseudonyms); without one, the
        ID alone, as before issuers took part."""
        issuer = issuer.strip()
        if not issuer:
            return self._prefix + self._code(b"patient-id", value.strip(), 16)
        return self._prefix + self._code(b"patient-id@issuer", f"{issuer}\0{value.strip()}", 16)

    def patient_name(self, value: str) -> str:
        """PatientName pseudonym, one family-name component. Case, spaces and empty
        trailing components do not count: "KOWALCZYK^JAN", " Kowalczyk ^ Jan" and
        "Kowalczyk^Jan^^^" are one name."""
        groups = ["^".join(" ".join(c.split()) for c in g.upper().split("^")).rstrip("^")
                  for g in value.split("=")]
        norm = "=".join(groups).rstrip("=")
        return self._prefix + self._code(b"patient-name", norm, 12)

    def code_string(self, value: str) -> str:
        """A kept code string (CS) that held an identifying value: 12 base32 characters,
        upper case and digits, so still a CS (no prefix: it may not be one). Keyed on the
        value alone, so a label and the references to it stay equal (GraphicLayer)."""
        return self._code(b"code-string", value.strip(), 12)

    def accession_number(self, value: str) -> str:
        """AccessionNumber pseudonym that fits SH (16 characters) with the prefix."""
        return self._prefix + self._code(b"accession", value.strip(), 16 - len(self._prefix))

    def study_id(self, value: str) -> str:
        """StudyID pseudonym that fits SH (16 characters) with the prefix."""
        return self._prefix + self._code(b"study-id", value.strip(), 16 - len(self._prefix))

    def text_hash(self, value: str) -> str:
        """Google cryptoHash replacement: base64 of the keyed SHA-256 HMAC of the text."""
        return base64.b64encode(self._mac(b"crypto-hash", value)).decode("ascii")

    def date_shift_days(self, patient_key: str) -> int:
        """Per-patient shift in [-max, -1] or [1, max] days, never zero."""
        cached = self._shift_cache.get(patient_key)
        if cached is None:
            n = int.from_bytes(self._mac(b"date-shift", patient_key)[:8], "big")
            magnitude = 1 + n % self._max_shift
            cached = -magnitude if (n >> 32) & 1 else magnitude
            self._shift_cache[patient_key] = cached
        return cached

    def shift_date(self, patient_key: str, day: date) -> date:
        """``day`` moved by the patient's shift; intervals within a patient are preserved."""
        return day + timedelta(days=self.date_shift_days(patient_key))
