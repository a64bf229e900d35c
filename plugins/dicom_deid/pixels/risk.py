"""Which images may carry burned-in text, by their header alone (``ocrScope`` AUTO).

The de-identifier asks it to decide what OCR reads, the byte path to decide which files
may skip the Dataset (their pixels cannot change), and the verification gate to decide
which outputs it reads back: one rule for all three, from a handful of top-level
attributes (no pixel is decoded).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["RISK_TAGS", "TEXT_PRONE_MODALITIES", "at_risk_by_header"]

TEXT_PRONE_MODALITIES = frozenset(
    {"US", "SC", "OT", "XA", "RF", "ES", "XC", "DOC", "GM", "IVUS", "OP", "PX", "IO", "SM"}
)
"""Modalities whose images usually carry burned-in annotation (OCR'd under AUTO scope)."""
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_BURNED_IN = 0x00280301
_MODALITY, _SOP_CLASS, _IMAGE_TYPE = 0x00080060, 0x00080016, 0x00080008
_PHOTOMETRIC, _POSITION = 0x00280004, 0x00200032
RISK_TAGS = (_BURNED_IN, _MODALITY, _SOP_CLASS, _IMAGE_TYPE, _PHOTOMETRIC, _POSITION)
"""The top-level attributes :func:`at_risk_by_header` reads."""
_BURNED_IN_UNSAID = frozenset({"CR", "DX", "MG", "NM"})
"""Modalities whose images that do not say (BurnedInAnnotation absent or empty) are not
taken to be clean: optional in CR and NM (Type 3), and the systems that leave it out
print names; required in DX and MG (Type 1), so an image without it comes from a system
that does not follow the IOD, and its silence says nothing. (IO and PX are text-prone
anyway.) A grey CT, MR or PT slice is not read: its scanners do not burn in names, and
reading every slice would cost more than the de-identification itself."""


def at_risk_by_header(header: Mapping[int, str]) -> bool:
    """Whether an image may carry burned-in text, by its header (``ocrScope`` AUTO).

    BurnedInAnnotation YES; a text-prone modality (:data:`TEXT_PRONE_MODALITIES`); a
    secondary capture or a screen save; a CR, DX, MG or NM that does not say
    (:data:`_BURNED_IN_UNSAID`); a colour image of
    any other modality (a rendering, a fused or annotated screen: acquisitions are
    grey); a derived secondary image with no position in the patient (a dose screen or
    a rendering stored as CT or MR, not a reformatted slice).
    """
    burned_in = header.get(_BURNED_IN, "").strip().upper()
    modality = header.get(_MODALITY, "").strip().upper()
    image_type = [v.strip().upper() for v in header.get(_IMAGE_TYPE, "").split("\\")]
    if burned_in == "YES" or modality in TEXT_PRONE_MODALITIES:
        return True
    if header.get(_SOP_CLASS, "").startswith(_SECONDARY_CAPTURE) or "SCREEN SAVE" in image_type:
        return True
    if not burned_in and modality in _BURNED_IN_UNSAID:
        return True
    photometric = header.get(_PHOTOMETRIC, "").strip().upper()
    if photometric and not photometric.startswith("MONOCHROME"):
        return True
    return image_type[:2] == ["DERIVED", "SECONDARY"] and not header.get(_POSITION, "").strip()
