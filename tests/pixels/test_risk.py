"""Which images OCR reads under ``ocrScope`` AUTO: one header rule for the cleaner, the
byte path and the verification gate.

An external probe released three images with a name banner because the header rule did
not take them to be at risk: a CR that does not say whether it has burned-in text (the
attribute is optional in the CR IOD), and a dose screen stored as a CT image.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
)
from test_pixel_redaction import BANNER, IDENTITY, SENSITIVE, _draw, _image, _leaks, _run, _texts

from dicom_deid.deid.gate import Gate
from dicom_deid.pixels.risk import RISK_TAGS, at_risk_by_header

_BURNED_IN, _MODALITY, _SOP_CLASS, _IMAGE_TYPE, _PHOTOMETRIC, _POSITION = RISK_TAGS
_CT = "1.2.840.10008.5.1.4.1.1.2"


def _header(**values: str) -> dict[int, str]:
    tags = {"burned_in": _BURNED_IN, "modality": _MODALITY, "sop_class": _SOP_CLASS,
            "image_type": _IMAGE_TYPE, "photometric": _PHOTOMETRIC, "position": _POSITION}
    return {tags[k]: v for k, v in values.items()}


@pytest.mark.parametrize(("header", "at_risk"), [
    (_header(modality="CR", photometric="MONOCHROME1"), True),  # does not say: optional in CR
    (_header(modality="CR", burned_in="NO", photometric="MONOCHROME1"), False),
    (_header(modality="DX", burned_in="NO", photometric="MONOCHROME2"), False),  # Type 1: said
    (_header(modality="MG", burned_in="YES"), True),
    (_header(modality="DX", photometric="MONOCHROME2"), True),  # Type 1, yet missing
    (_header(modality="MG", burned_in=" ", photometric="MONOCHROME1"), True),  # empty
    (_header(modality="NM", photometric="MONOCHROME2"), True),  # optional in NM
    (_header(modality="NM", burned_in="NO", photometric="MONOCHROME2"), False),
    (_header(modality="PT", photometric="MONOCHROME2", position="0\\0\\0"), False),
    (_header(modality="CT", sop_class=_CT, image_type="DERIVED\\SECONDARY\\DOSE_INFO",
             photometric="MONOCHROME2"), True),  # a screen: no position in the patient
    (_header(modality="CT", sop_class=_CT, image_type="DERIVED\\SECONDARY\\MPR",
             photometric="MONOCHROME2", position="-120\\-80\\33.5"), False),  # a reformat
    (_header(modality="CT", sop_class=_CT, image_type="ORIGINAL\\PRIMARY\\AXIAL",
             photometric="MONOCHROME2", position="0\\0\\0"), False),
    (_header(modality="MR", image_type="DERIVED\\PRIMARY\\FA", photometric="RGB",
             position="0\\0\\0"), True),  # colour: a rendering or an annotated screen
    (_header(modality="CT", image_type="ORIGINAL\\PRIMARY\\SCREEN SAVE"), True),
    (_header(modality="US", burned_in="NO"), True),  # not trusted on text-prone images
    (_header(modality="MR", sop_class="1.2.840.10008.5.1.4.1.1.7"), True),
    (_header(), False),
], ids=["cr-silent", "cr-no", "dx-no", "mg-yes", "dx-silent", "mg-empty", "nm-silent",
         "nm-no", "pt-slice", "ct-dose-screen", "ct-reformat", "ct-axial",
        "mr-colour", "screen-save", "us-no", "secondary-capture", "nothing"])
def test_the_header_rule(header: dict[int, str], at_risk: bool) -> None:
    assert at_risk_by_header(header) is at_risk


def _grey_with_banner(rows: int = 512, cols: int = 512) -> np.ndarray:
    rng = np.random.default_rng(5)
    gray = rng.integers(30, 120, (rows, cols), dtype=np.uint8)
    gray[:28] = 0
    return _draw(gray, [(6, 6, BANNER)], 255)


@pytest.mark.parametrize("kind", ["cr-silent", "dx-silent", "ct-dose-screen"])
def test_images_the_rule_now_takes_are_cleaned_and_checked(kind: str) -> None:
    """A CR or a DX without BurnedInAnnotation and a dose screen stored as CT, each with a name
    banner: OCR reads and blanks it, and the gate reads such an output back."""
    arr = _grey_with_banner()
    assert _leaks(_texts(arr)) == list(IDENTITY)
    if kind == "cr-silent":
        ds = _image(arr, "MONOCHROME2", modality="CR", sop_class=ComputedRadiographyImageStorage)
    elif kind == "dx-silent":  # Type 1 in DX, left out by the sending system
        ds = _image(arr, "MONOCHROME2", modality="DX",
                    sop_class=DigitalXRayImageStorageForPresentation)
    else:
        ds = _image(arr, "MONOCHROME2", modality="CT", sop_class=CTImageStorage)
        ds.ImageType = ["DERIVED", "SECONDARY", "DOSE_INFO"]
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient"):
            if keyword in ds:
                delattr(ds, keyword)
    if "BurnedInAnnotation" in ds:
        del ds.BurnedInAnnotation
    source, _, after, boxes, out_bytes = _run(ds, SENSITIVE)
    assert boxes >= 1 and _leaks(_texts(after.pixel_array)) == []
    gate = Gate()
    facts = gate.source_facts(source, len(source))
    assert gate.at_risk(facts)
    # the gate's own read-back of an image the policy left: the banner is found
    verdict = gate.check("out.dcm", source, facts, {})
    assert any("burned-in text" in p for p in verdict.problems)
    assert not any("burned-in" in p for p in gate.check("out.dcm", out_bytes, facts, {}).problems)
