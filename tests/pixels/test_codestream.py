"""Metadata segments in compressed frames: found and removed by walking marker segments.

Frames come from encoders the project does not own: Pillow (libjpeg, OpenJPEG) and the
JPEG, JPEG-LS and JPEG 2000 files pydicom ships (dcmtk, GDCM, Kakadu, JasPer, CharLS).
The text is planted with the metadata writers Pillow uses for real files (a comment,
EXIF, an ICC profile) or byte-wise where no writer does it (IPTC, tile-part comments).
Whatever is removed, the frame must decode to the very same pixels.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames

from dicom_deid.errors import BadInput
from dicom_deid.pixels.codestream import (
    CODESTREAM_SYNTAXES,
    carries_metadata,
    frame_segments,
    number_of_frames,
    pixel_data_segments,
    without_frame_metadata,
    without_metadata,
)

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
PLANTED = b"Patient ZARKOVSKY^BELINDA ID 48213977 DOB 19630417"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
HTJ2K = "1.2.840.10008.1.2.4.201"


def segment(marker: int, payload: bytes) -> bytes:
    """A JPEG marker segment (two-byte length, itself included)."""
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def read(name: str) -> tuple[pydicom.Dataset, list[bytes], str]:
    ds = pydicom.dcmread(TEST_FILES / name)
    frames = list(generate_frames(ds.PixelData,
                                  number_of_frames=int(ds.get("NumberOfFrames") or 1)))
    return ds, frames, str(ds.file_meta.TransferSyntaxUID)


def decoded(ds: pydicom.Dataset, frames: list[bytes]) -> np.ndarray:
    """The pixels pydicom's decoders make of ``frames`` in ``ds``'s description."""
    copy = pydicom.dcmread(io.BytesIO(_written(ds)))
    copy.PixelData = encapsulate(frames)
    copy["PixelData"].VR = "OB"
    return copy.pixel_array


def _written(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def pillow_image() -> Image.Image:
    """A colour image with detail (lossy coding keeps it all different)."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:96, 0:128]
    arr = np.stack([(x * 2) & 255, (x ^ y) & 255, (y * 3) & 255], -1)
    return Image.fromarray(np.clip(arr + rng.integers(-9, 9, arr.shape), 0, 255)
                           .astype(np.uint8))


def pillow_pixels(frame: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(frame)).convert("RGB"))


def names(frame: bytes, ts: str) -> list[str]:
    return [s.name for s in frame_segments(frame, ts)]


# -- JPEG ---------------------------------------------------------------------------------


def test_a_comment_exif_icc_and_iptc_leave_a_pillow_jpeg_and_its_image_stays() -> None:
    """What a camera or img2dcm leaves in a JPEG: Pillow writes the comment, the EXIF
    (ImageDescription, Artist) and an ICC profile; an IPTC block (APP13) is planted."""
    image = pillow_image()
    exif = Image.Exif()
    exif[0x010E] = PLANTED.decode()  # ImageDescription
    exif[0x013B] = "Dr TREMBATH OSGOOD"  # Artist
    plain, marked = io.BytesIO(), io.BytesIO()
    image.save(plain, "JPEG", quality=85)
    image.save(marked, "JPEG", quality=85, comment=PLANTED, exif=exif.tobytes(),
               icc_profile=(TEST_FILES / "crayons.icc").read_bytes())
    frame = marked.getvalue()
    iptc = segment(0xED, b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x1e"
                   + b"\x1c\x02\x78\x00\x1a" + PLANTED[:26])
    frame = frame[:2] + iptc + frame[2:]
    assert PLANTED in frame
    assert names(frame, JPEG_BASELINE) == [
        "a JPEG APP13 segment", "a JPEG APP1 segment", "a JPEG APP2 segment",
        "a JPEG COM segment"]
    clean = without_frame_metadata(frame, JPEG_BASELINE)
    assert PLANTED not in clean and b"TREMBATH" not in clean and b"Exif" not in clean
    assert clean == plain.getvalue()  # exactly Pillow's frame without them (JFIF kept)
    assert frame_segments(clean, JPEG_BASELINE) == []
    assert np.array_equal(pillow_pixels(clean), pillow_pixels(frame))


def test_a_comment_between_scans_of_a_progressive_jpeg_with_restarts_is_found() -> None:
    """Several scans (progressive), restart markers in the entropy-coded data, fill
    bytes before a marker: the walk finds the next marker after each scan."""
    buf = io.BytesIO()
    pillow_image().save(buf, "JPEG", quality=90, progressive=True, restart_marker_blocks=3)
    frame = buf.getvalue()
    scans = [i for i in range(len(frame)) if frame[i:i + 2] == b"\xff\xda"]
    assert len(scans) > 3 and b"\xff\xdd" in frame  # DRI: restart markers
    at = scans[3]
    planted = frame[:at] + b"\xff\xff" + segment(0xFE, PLANTED) + frame[at:]
    found = frame_segments(planted, JPEG_BASELINE)
    assert [(s.name, s.start) for s in found] == [("a JPEG COM segment", at + 2)]
    clean = without_frame_metadata(planted, JPEG_BASELINE)
    assert clean == frame[:at] + b"\xff\xff" + frame[at:]  # the fill bytes stay
    assert np.array_equal(pillow_pixels(clean), pillow_pixels(frame))
    assert frame_segments(frame, JPEG_BASELINE) == []


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "JPGExtended.dcm",
                                  "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_small_odd_jpeg.dcm",
                                  "SC_rgb_jpeg_app14_dcmd.dcm"])
def test_pydicoms_jpeg_frames_lose_planted_segments_and_decode_the_same(name: str) -> None:
    """Baseline, extended (12-bit), lossless (process 14, SV1), odd-sized with a pad byte
    after EOI: each holds no metadata of its own and keeps its bytes once the planted
    segments are gone (an Adobe segment and a plain JFIF header stay)."""
    ds, frames, ts = read(name)
    frame = frames[0]
    assert frame_segments(frame, ts) == []
    planted = frame[:2] + segment(0xFE, PLANTED) + segment(0xE1, b"Exif\x00\x00" + PLANTED) \
        + frame[2:]
    assert names(planted, ts) == ["a JPEG COM segment", "a JPEG APP1 segment"]
    clean = without_frame_metadata(planted, ts)
    assert clean == frame
    assert np.array_equal(decoded(ds, [clean]), ds.pixel_array)


def test_decoding_segments_are_kept_at_their_standard_length() -> None:
    """APP14 "Adobe" decides the colour transform and a JFIF header says YCbCr: kept, but
    not what is appended to them; a JFIF thumbnail and a JFXX extension are pictures."""
    ds, frames, ts = read("SC_rgb_jpeg_app14_dcmd.dcm")
    frame = frames[0]
    adobe = frame[2:18]
    assert adobe[4:9] == b"Adobe" and adobe[2:4] == b"\x00\x0e"
    longer = frame[:2] + segment(0xEE, adobe[4:] + PLANTED) + frame[18:]
    assert names(longer, ts) == ["a JPEG APP14 segment"]
    clean = without_frame_metadata(longer, ts)
    assert clean == frame and PLANTED not in clean
    assert np.array_equal(decoded(ds, [clean]), ds.pixel_array)

    ds, frames, ts = read("SC_rgb_jpeg_dcmtk.dcm")
    frame = frames[0]
    jfif = frame[2:20]
    assert jfif[4:9] == b"JFIF\x00" and jfif[2:4] == b"\x00\x10"
    thumbnail = jfif[4:16] + b"\x02\x01" + PLANTED[:6]  # 2x1 RGB pixels
    jfxx = b"JFXX\x00\x13" + b"\x01\x01" + PLANTED[:3]
    planted = frame[:2] + segment(0xE0, thumbnail) + segment(0xE0, jfxx) + frame[20:]
    assert names(planted, ts) == ["a JPEG APP0 thumbnail", "a JPEG APP0 segment"]
    clean = without_frame_metadata(planted, ts)
    assert clean == frame  # the JFIF header as it was, thumbnail size 0x0
    assert np.array_equal(decoded(ds, [clean]), ds.pixel_array)


def test_bytes_after_the_end_of_image() -> None:
    """DICOM's pad byte is fine; other bytes after EOI are no part of the image and go;
    a second codestream means the frames were split wrongly: refused, not guessed."""
    _ds, frames, ts = read("SC_rgb_jpeg_dcmtk.dcm")
    frame = frames[0]
    assert frame.endswith(b"\xff\xd9\x00") and frame_segments(frame, ts) == []
    assert names(frame + PLANTED, ts) == ["data after the end of a JPEG codestream"]
    assert without_frame_metadata(frame + PLANTED, ts) == frame[:-1]
    with pytest.raises(BadInput):
        frame_segments(frame + frame, ts)


# -- JPEG-LS ------------------------------------------------------------------------------


def test_jpeg_ls_keeps_mrfx_and_loses_comments_and_spiff() -> None:
    """JPEG-LS: APP8 "mrfx" (HP's colour transform) stays; COM goes; so does a SPIFF
    header (CharLS), with the start-of-image marker that ends its directory."""
    ds, frames, ts = read("MR_small_jpeg_ls_lossless.dcm")
    frame = frames[0]
    assert ts == JPEG_LS_LOSSLESS and frame_segments(frame, ts) == []
    mrfx = segment(0xE8, b"mrfx\x00")  # transform 0: none
    planted = frame[:2] + mrfx + segment(0xFE, PLANTED) + frame[2:]
    assert names(planted, ts) == ["a JPEG COM segment"]
    clean = without_frame_metadata(planted, ts)
    assert clean == frame[:2] + mrfx + frame[2:]
    assert np.array_equal(decoded(ds, [clean]), ds.pixel_array)

    ds, frames, ts = read("SC_rgb_jls_lossy_line.dcm")
    frame = frames[0]
    assert frame[6:11] == b"SPIFF"
    assert names(frame, ts) == ["a JPEG APP8 segment", "a JPEG APP8 segment"]
    clean = without_frame_metadata(frame, ts)
    assert clean[:4] == b"\xff\xd8\xff\xf7" and clean.count(b"\xff\xd8") == 1
    assert np.array_equal(decoded(ds, [clean]), ds.pixel_array)


# -- JPEG 2000 ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "MR_small_jp2klossless.dcm",
                                  "J2K_pixelrep_mismatch.dcm", "693_J2KI.dcm",
                                  "SC_rgb_gdcm_KY.dcm", "GDCMJ2K_TextGBR.dcm"])
def test_pydicoms_jpeg_2000_frames_lose_comments_and_decode_the_same(name: str) -> None:
    """Kakadu, JasPer and OpenJPEG name themselves in a COM marker; GDCM once wrapped the
    codestream in a JP2 file with UUID boxes: all go, the pixels stay."""
    ds, frames, ts = read(name)
    found = names(frames[0], ts)
    assert found and set(found) <= {"a JPEG 2000 COM marker", "a JP2 UUID box"}
    clean = without_frame_metadata(frames[0], ts)
    assert frame_segments(clean, ts) == []
    assert np.array_equal(decoded(ds, [clean]), ds.pixel_array)


def test_tile_part_comments_go_and_their_lengths_follow() -> None:
    """A COM in a tile-part header: removed, its tile-part's Psot shortened, and TLM (an
    index of tile-part lengths) dropped; the main header's COMs (the planted one and
    OpenJPEG's signature) go too."""
    image = pillow_image()
    plain, marked = io.BytesIO(), io.BytesIO()
    image.save(plain, "JPEG2000", no_jp2=True, tile_size=(64, 64), irreversible=False)
    image.save(marked, "JPEG2000", no_jp2=True, tile_size=(64, 64), irreversible=False,
               comment=PLANTED)
    frame = marked.getvalue()
    sots = [i for i in range(len(frame) - 1) if frame[i:i + 2] == b"\xff\x90"]
    assert len(sots) == 4 and frame.count(PLANTED) == 1
    # a tile-part comment in the second tile-part (its Psot grown by it)
    com = segment(0x64, b"\x00\x01" + PLANTED)
    at = sots[1]
    psot = int.from_bytes(frame[at + 6:at + 10], "big")
    frame = (frame[:at + 6] + (psot + len(com)).to_bytes(4, "big") + frame[at + 10:at + 12]
             + com + frame[at + 12:])
    # and a TLM (Ztlm 0, Stlm: 16-bit tile index, 32-bit length) in the main header
    lengths = [int.from_bytes(frame[s + 6:s + 10], "big") for s in sots[:1]]
    tlm = segment(0x55, b"\x00\x60" + b"".join(
        struct.pack(">HI", i, n) for i, n in enumerate(lengths)))
    frame = frame[:sots[0]] + tlm + frame[sots[0]:]
    assert names(frame, J2K_LOSSLESS) == ["a JPEG 2000 COM marker"] * 2
    assert names(frame, HTJ2K) == ["a JPEG 2000 COM marker"] * 2  # the same markers
    clean = without_frame_metadata(frame, J2K_LOSSLESS)
    assert PLANTED not in clean and b"\xff\x55" not in clean[:clean.find(b"\xff\x90")]
    # Pillow's codestream without the planted comment, less OpenJPEG's own comment
    assert clean == without_frame_metadata(plain.getvalue(), J2K_LOSSLESS)
    assert b"OpenJPEG" in plain.getvalue() and b"OpenJPEG" not in clean
    assert np.array_equal(pillow_pixels(clean), np.asarray(image))


def test_jp2_boxes_other_than_the_image_go() -> None:
    """A JP2 file in a frame (PS3.5 forbids it, writers do it): an XML box goes, the
    codestream box shrinks by the comment it loses."""
    buf = io.BytesIO()
    pillow_image().save(buf, "JPEG2000", irreversible=False, comment=PLANTED)
    jp2 = buf.getvalue()
    xml = b"<x:xmpmeta><dc:creator>" + PLANTED + b"</dc:creator></x:xmpmeta>"
    frame = jp2 + struct.pack(">I", len(xml) + 8) + b"xml " + xml
    assert names(frame, J2K_LOSSLESS) == ["a JPEG 2000 COM marker", "a JP2 XML box"]
    clean = without_frame_metadata(frame, J2K_LOSSLESS)
    assert PLANTED not in clean
    assert frame_segments(clean, J2K_LOSSLESS) == []
    assert np.array_equal(pillow_pixels(clean), pillow_pixels(jp2))


@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2.4.53", "1.2.840.10008.1.2.4.55"])
def test_retired_jpeg_processes_are_walked_too(ts: str) -> None:
    """An external probe: dcmcjpeg's spectral selection (.53) and full progression (.55)
    kept a comment and EXIF, because only the current JPEG syntaxes were walked."""
    buf = io.BytesIO()
    pillow_image().save(buf, "JPEG", quality=90, progressive=True)
    frame = buf.getvalue()
    planted = frame[:2] + segment(0xFE, PLANTED) + segment(0xE1, b"Exif\x00\x00" + PLANTED) \
        + frame[2:]
    assert names(planted, ts) == ["a JPEG COM segment", "a JPEG APP1 segment"]
    clean = without_frame_metadata(planted, ts)
    assert clean == frame and PLANTED not in clean


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload) + 8) + kind + payload


def test_a_jpeg_xl_container_keeps_its_codestream_and_loses_its_metadata_boxes() -> None:
    """JPEG XL (.110-.112): a container's Exif, XML and JPEG reconstruction boxes go, a
    bare codestream (0xFF 0x0A) holds no text, anything else is refused."""
    ts = "1.2.840.10008.1.2.4.110"
    signature = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
    codestream = b"\xff\x0a" + bytes(range(64))
    image = signature + _box(b"ftyp", b"jxl \x00\x00\x00\x00jxl ") + _box(b"jxlc", codestream)
    frame = image + _box(b"Exif", b"\x00\x00\x00\x00" + PLANTED) + _box(b"xml ", PLANTED) \
        + _box(b"jbrd", PLANTED)
    assert names(frame, ts) == ["a JPEG XL metadata box"] * 3
    assert without_frame_metadata(frame, ts) == image
    assert frame_segments(codestream, ts) == []
    with pytest.raises(BadInput):
        frame_segments(PLANTED, ts)


# -- not a codestream ---------------------------------------------------------------------


def _malformed() -> list[tuple[str, bytes, str]]:
    _ds, jpeg, _ts = read("SC_rgb_jpeg_dcmtk.dcm")
    _ds, j2k, _ts = read("JPEG2000.dcm")
    frame, codestream = jpeg[0], j2k[0]
    com = segment(0xFE, PLANTED)
    sot = codestream.find(b"\xff\x90")
    return [
        ("no start of image", PLANTED + frame, JPEG_BASELINE),
        ("a comment cut short", frame[:2] + com[:30], JPEG_BASELINE),
        ("a length past the end", frame[:2] + b"\xff\xfe\xff\xf0" + PLANTED, JPEG_BASELINE),
        ("no end of image", frame[:-4] + com, JPEG_BASELINE),
        ("a second start of image", frame[:2] + b"\xff\xd8" + frame[2:], JPEG_BASELINE),
        ("no SOC", PLANTED + codestream, J2K_LOSSLESS),
        ("a Psot past the end", codestream[:sot + 6] + b"\x7f\xff\xff\xff"
         + codestream[sot + 10:], J2K_LOSSLESS),
        ("no marker in a header", codestream[:sot] + PLANTED + codestream[sot:], J2K_LOSSLESS),
        ("a JP2 box past the end", b"\x00\x00\x00\x0cjP  \r\n\x87\n\x7f\x00\x00\x00xml "
         + PLANTED, J2K_LOSSLESS),
    ]


@pytest.mark.parametrize("case", range(9))
def test_a_frame_that_is_no_codestream_is_refused_without_its_text(case: int) -> None:
    what, frame, ts = _malformed()[case]
    with pytest.raises(BadInput) as caught:
        without_frame_metadata(frame, ts)
    assert caught.value.kind == "bad-codestream", what
    assert "ZARKOVSKY" not in str(caught.value) and "48213977" not in str(caught.value)


# -- Pixel Data ---------------------------------------------------------------------------


def test_multi_frame_pixel_data_is_rebuilt_with_offsets_that_find_each_frame() -> None:
    """Thirty frames, a comment in frame 17: reported there; the rebuilt value holds one
    fragment per frame and a Basic Offset Table pydicom finds every frame by."""
    ds, frames, ts = read("examples_ybr_color.dcm")
    assert len(frames) == 30 and not carries_metadata(ds.PixelData, ts, 30)
    assert without_metadata(ds.PixelData, ts, 30) is None  # nothing to change
    frames[16] = frames[16][:2] + segment(0xFE, PLANTED) + frames[16][2:]
    value = encapsulate(frames, has_bot=False)
    found = pixel_data_segments(value, ts, 30)
    assert [(n, s.name) for n, s in found] == [(17, "a JPEG COM segment")]
    rebuilt = without_metadata(value, ts, 30)
    assert rebuilt is not None and rebuilt.removed == 1 and rebuilt.extended is None
    assert PLANTED not in rebuilt.value
    assert rebuilt.value[4:8] == struct.pack("<I", 4 * 30)  # the offset table's length
    copy = pydicom.dcmread(io.BytesIO(_written(ds)))
    copy.PixelData = rebuilt.value
    assert np.array_equal(copy.pixel_array, ds.pixel_array)


def test_an_extended_offset_table_is_rebuilt_and_fragments_are_joined() -> None:
    """Frames found by the Extended Offset Table come back with a new one; frames split
    over several fragments (no offset table) are walked whole."""
    _ds, frames, ts = read("examples_ybr_color.dcm")
    frames = frames[:4]
    frames[2] = frames[2][:2] + segment(0xFE, PLANTED) + frames[2][2:]
    value, offsets, lengths = encapsulate_extended(frames)
    rebuilt = without_metadata(value, ts, 4, (offsets, lengths))
    assert rebuilt is not None and rebuilt.extended is not None
    again = list(generate_frames(rebuilt.value, extended_offsets=rebuilt.extended))
    assert len(again) == 4 and again[2] == without_frame_metadata(frames[2], ts)
    assert again[:2] == frames[:2]
    split = encapsulate([frames[2]], fragments_per_frame=3, has_bot=False)
    assert [n for n, _ in pixel_data_segments(split, ts, 1)] == [1]


def test_number_of_frames_as_written() -> None:
    assert number_of_frames(None) == 1 and number_of_frames(b"") == 1
    assert number_of_frames(b"30 ") == 30 and number_of_frames(" 2") == 2
    assert number_of_frames(b"many") is None and number_of_frames(b"0") is None


def test_other_syntaxes_are_not_walked() -> None:
    """Native pixel data has no frames to walk; an RLE frame is walked only with its
    layout (its planes' size and number: :mod:`test_excess`)."""
    ds = pydicom.dcmread(TEST_FILES / "SC_rgb_rle.dcm")
    ts = str(ds.file_meta.TransferSyntaxUID)
    assert ts in CODESTREAM_SYNTAXES
    assert pixel_data_segments(ds.PixelData, ts) == []
    assert without_metadata(ds.PixelData, ts) is None
    assert frame_segments(PLANTED, ts) == []
    native = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ts = str(native.file_meta.TransferSyntaxUID)
    assert ts not in CODESTREAM_SYNTAXES
    assert frame_segments(PLANTED, ts) == []
