"""Review cards and thumbnails made by the batch's workers (``run_batch(review=...)``).

Inputs: the project's generator (ultrasound with burned-in text, dose screens, CT, MR,
SR) and files other tools wrote, from pydicom's wheel: a Philips ultrasound with its own
burned-in text, a big-endian ultrasound, RLE and JPEG secondary captures, a JPEG 2000
capture without a Modality, a big-endian MR, an RT dose, an SR, and a JPEG file whose
pixels this engine cannot decode. Which images are at risk is spelled here from their
DICOM attributes (ultrasound, Secondary Capture SOP class), not asked of the gate.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from PIL import Image

from dicom_deid.config.google import load_config
from dicom_deid.config.model import DeidConfig, privacy_first
from dicom_deid.deid import batch
from dicom_deid.deid.batch import (
    BatchSummary,
    ReviewSpec,
    Source,
    iter_sources,
    run_batch,
    thumbnail_stem,
)
from dicom_deid.errors import ConfigError
from dicom_deid.review.cards import read_cards, thumbnail_path
from dicom_deid.review.policy import ReviewPolicy
from dicom_deid.review.thumbnails import MAX_SIDE, render_thumbnails
from dicom_deid.synth import generate
from dicom_deid.synth.answer_key import AnswerKey, planted_byte_patterns

KEY = b"review-test-key-0123456789abcdef"
assert len(KEY) == 32
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
PYDICOM_INPUTS = (
    "examples_palette.dcm",  # US, Philips, burned-in text (PALETTE COLOR)
    "ExplVR_BigEnd.dcm",  # US, explicit VR big endian
    "SC_rgb_rle_2frame.dcm",  # Secondary Capture, RLE, 2 frames
    "SC_rgb_jpeg_dcmtk.dcm",  # Secondary Capture, JPEG baseline (dcmtk)
    "GDCMJ2K_TextGBR.dcm",  # Secondary Capture, JPEG 2000 (GDCM), no Modality
    "CT_small.dcm",
    "MR_small_bigendian.dcm",
    "rtdose_1frame.dcm",
    "test-SR.dcm",  # no pixel data: never an image to review
    "JPEG-lossy.dcm",  # 12-bit JPEG: fails to decode, so never published
)
SHARD = 3  # the cards and thumbnails of one shard, named as the pipeline names them
THUMB_NAME = re.compile(r"([0-9a-f]{20})-f(\d+)\.png")
RED = (255, 0, 0)
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@dataclass(frozen=True)
class Corpus:
    sources: list[Source]
    answer: AnswerKey
    images: frozenset[str]
    """Inputs (relative paths) with pixel data."""
    at_risk: frozenset[str]
    """Of ``images``: ultrasound or Secondary Capture (may carry burned-in text)."""


@dataclass(frozen=True)
class Run:
    out: Path
    review_root: Path
    summary: BatchSummary
    outputs: dict[str, str]
    """Input (relative path) -> published output (relative path)."""
    cards: list[dict[str, Any]]

    @property
    def folder(self) -> Path:
        return self.review_root / f"shard-{SHARD:05d}"

    @property
    def cards_file(self) -> Path:
        return self.review_root / f"shard-{SHARD:05d}.parquet"

    def paths(self) -> set[str]:
        return {c["output_path"] for c in self.cards}

    def thumbnails(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.folder.iterdir())}


def _read_header(path: str | Path) -> pydicom.Dataset | None:
    """The input as pydicom reads it (None: it cannot; the batch fails it too)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the generator's unknown character set
            return pydicom.dcmread(path, force=True, defer_size="1 KB")
    except Exception:
        return None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """The generator's files (broken ones included) and pydicom's, with what each is."""
    root = tmp_path_factory.mktemp("corpus")
    answer = generate(root, patients=2, seed=1, instances_per_series=1, small=True,
                      bad_inputs=True, duplicates=False, burned_in_fraction=1.0)
    sources = list(iter_sources(root / "dicom"))
    sources += [Source(str(PYDICOM_FILES / n), f"pydicom/{n}") for n in PYDICOM_INPUTS]
    images, at_risk = set(), set()
    for src in sources:
        ds = _read_header(src.path)
        if ds is None or "PixelData" not in ds:
            continue
        images.add(src.rel)
        if (ds.get("Modality") == "US" or str(ds.get("SOPClassUID", "")).startswith(
                _SECONDARY_CAPTURE) or ds.get("BurnedInAnnotation") == "YES"):
            at_risk.add(src.rel)
    return Corpus(sources, answer, frozenset(images), frozenset(at_risk))


def _run(base: Path, sources: list[Source], rule: str | None, *, workers: int = 1,
         layout: str = "uid", config: DeidConfig | None = None,
         drop_rejected: bool = False) -> Run:
    """One batch with the gate, its review (``rule``; None: no review) as one shard."""
    review_root = base / "review"
    spec = None if rule is None else ReviewSpec(
        ReviewPolicy.parse(rule), review_root / f"shard-{SHARD:05d}",
        review_root / f"shard-{SHARD:05d}.parquet")
    summary = run_batch(sources, base / "out", config or privacy_first(), KEY,
                        workers=workers, layout=layout, gate=(), review=spec,
                        errors_path=base / "errors.csv", mapping_path=base / "mapping.parquet",
                        verdicts_path=base / "verdicts.parquet", progress=False,
                        drop_rejected=drop_rejected)
    outputs = {r["source_path"]: r["output_path"]
               for r in pq.read_table(base / "mapping.parquet").to_pylist()}
    return Run(base / "out", review_root, summary, outputs, read_cards(review_root))


@pytest.fixture(scope="module")
def runs(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory
         ) -> Callable[..., Run]:
    """One run per (rule, workers, label) for the whole module (each takes seconds)."""
    done: dict[tuple[str | None, int, str], Run] = {}

    def get(rule: str | None, workers: int = 1, label: str = "") -> Run:
        key = (rule, workers, label)
        if key not in done:
            base = tmp_path_factory.mktemp(f"run-{rule or 'off'}-{workers}".replace(" ", ""))
            done[key] = _run(base, corpus.sources, rule, workers=workers)
        return done[key]

    return get


def _files(folder: Path) -> Iterator[Path]:
    return (p for p in folder.rglob("*") if p.is_file())


def _published(run: Run, card: dict[str, Any]) -> bytes:
    return (run.out / card["output_path"]).read_bytes()


def _rgb(png: bytes) -> np.ndarray[Any, Any]:
    return np.asarray(Image.open(BytesIO(png)).convert("RGB"))


# -- which images get a card -----------------------------------------------------------------


def test_the_corpus_has_images_at_risk_and_not(corpus: Corpus, runs: Callable[..., Run]
                                                ) -> None:
    run = runs("all")
    published = set(run.outputs)
    assert "pydicom/JPEG-lossy.dcm" not in published and "pydicom/test-SR.dcm" in published
    assert len(corpus.at_risk & published) >= 8
    assert len((corpus.images - corpus.at_risk) & published) >= 5
    assert run.summary.failed >= 2  # the generator's broken files and the 12-bit JPEG


def test_at_risk_cards_exactly_the_images_at_risk(corpus: Corpus,
                                                  runs: Callable[..., Run]) -> None:
    run = runs("at-risk")
    expected = {run.outputs[rel] for rel in corpus.at_risk if rel in run.outputs}
    assert run.paths() == expected
    assert len(run.cards) == len(expected)  # one card each
    assert {(c["reason"], c["at_risk"]) for c in run.cards} == {("at-risk", True)}
    # The gate's own view of risk, on every image of the "all" run, agrees.
    everything = runs("all")
    gate_at_risk = {c["output_path"] for c in everything.cards if c["at_risk"]}
    assert gate_at_risk == expected


def test_all_cards_every_image_and_nothing_else(corpus: Corpus,
                                                runs: Callable[..., Run]) -> None:
    run = runs("all")
    expected = {run.outputs[rel] for rel in corpus.images if rel in run.outputs}
    assert run.paths() == expected
    assert len(run.cards) == len(expected)
    assert {c["reason"] for c in run.cards} == {"all"}
    sr = {run.outputs[rel] for rel in run.outputs if rel not in corpus.images}
    assert sr and not sr & run.paths()  # SR and other files without pixels: no card
    # Both writers made reviewed outputs: images not at risk took the byte path (their
    # pixels untouched) and still got their pictures, pydicom's own files among them.
    assert 0 < run.summary.byte_path < run.summary.processed
    plain = {run.outputs[rel] for rel in (corpus.images - corpus.at_risk)
             if rel in run.outputs and rel.startswith("pydicom/")}
    assert plain and all(c["thumbnails"] for c in run.cards if c["output_path"] in plain)


def test_a_sample_is_stable_across_runs_and_a_subset(corpus: Corpus,
                                                     runs: Callable[..., Run]) -> None:
    first, again, everything = runs("sample 50"), runs("sample 50", label="again"), runs("all")
    assert first.cards_file.read_bytes() == again.cards_file.read_bytes()
    assert first.thumbnails() == again.thumbnails()
    assert 0 < len(first.cards) < len(everything.cards)
    assert first.paths() <= everything.paths()
    policy = ReviewPolicy("sample", 50.0)
    assert first.paths() == {p for p in everything.paths() if policy.select(p, False)}
    assert {c["reason"] for c in first.cards} == {"sample"}
    # The sample is drawn among images, at risk or not, by the pseudonymous path alone.
    by_path = {c["output_path"]: c for c in everything.cards}
    assert {by_path[p]["at_risk"] for p in first.paths()} == {True, False}


def test_without_a_review_nothing_is_written_and_outputs_are_the_same(
    runs: Callable[..., Run]
) -> None:
    off, reviewed = runs(None), runs("all")
    assert not off.review_root.exists()
    assert off.outputs == reviewed.outputs

    def digests(run: Run) -> dict[str, str]:
        return {p.relative_to(run.out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in _files(run.out)}

    assert digests(off) == digests(reviewed)  # a review changes nothing published
    assert (off.out.parent / "verdicts.parquet").read_bytes() == (
        reviewed.out.parent / "verdicts.parquet").read_bytes()


def test_the_none_rule_selects_nothing(corpus: Corpus, tmp_path: Path) -> None:
    few = [s for s in corpus.sources if s.rel.startswith("pydicom/SC_")]
    run = _run(tmp_path, few, "none")
    assert run.summary.processed == len(few) and run.cards == []
    assert pq.read_table(run.cards_file).num_rows == 0
    assert not run.folder.exists()


def test_a_review_needs_the_gate(corpus: Corpus, tmp_path: Path) -> None:
    spec = ReviewSpec(ReviewPolicy("all"), tmp_path / "review" / "t", tmp_path / "c.parquet")
    with pytest.raises(ConfigError, match="needs the verification gate"):
        run_batch(corpus.sources[:2], tmp_path / "out", privacy_first(), KEY, workers=1,
                  review=spec, progress=False)
    assert not (tmp_path / "review").exists() and not (tmp_path / "c.parquet").exists()


# -- thumbnails ---------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["all", "at-risk", "sample 50"])
def test_thumbnails_have_their_final_names_and_nothing_staged_is_left(
    runs: Callable[..., Run], rule: str
) -> None:
    run = runs(rule)
    named = [n for c in run.cards for n in c["thumbnails"]]
    assert len(named) == len(set(named))
    on_disk = sorted(p.relative_to(run.review_root).as_posix() for p in _files(run.review_root))
    assert on_disk == sorted([f"shard-{SHARD:05d}.parquet"]
                             + [f"shard-{SHARD:05d}/{n}" for n in named])
    assert not [p for p in _files(run.out) if p.name.endswith(".tmp")]
    for card in run.cards:
        frames = pydicom.dcmread(BytesIO(_published(run, card)), stop_before_pixels=True
                                 ).get("NumberOfFrames", 1)
        assert card["frames"] == int(frames)
        n = card["frames"]
        assert card["shown_frames"] == sorted({0, (n - 1) // 2, n - 1})
        assert card["thumbnails"] == [f"{thumbnail_stem(card['output_path'])}-f{f}.png"
                                      for f in card["shown_frames"]]
        assert thumbnail_stem(card["output_path"]) == hashlib.sha256(
            card["output_path"].encode()).hexdigest()[:20]
        for name in card["thumbnails"]:
            assert THUMB_NAME.fullmatch(name)
            assert thumbnail_path(run.review_root, SHARD, name) == run.folder / name
        assert card["shown"] == ""


def test_thumbnails_decode_fit_and_show_the_published_pixels(runs: Callable[..., Run]
                                                             ) -> None:
    run = runs("all")
    outlined = 0
    for card in run.cards:
        expected, frames, _ = render_thumbnails(_published(run, card))
        assert frames == card["frames"]
        assert [t.frame for t in expected] == card["shown_frames"]
        for thumb, name in zip(expected, card["thumbnails"], strict=True):
            png = (run.folder / name).read_bytes()
            with Image.open(BytesIO(png)) as image:
                image.load()
                assert image.format == "PNG" and max(image.size) <= MAX_SIDE
                assert image.size == (thumb.width, thumb.height)
            if not card["boxes"]:
                assert png == thumb.png, name  # the output's own pixels, nothing drawn
                continue
            # Redacted regions are outlined in red on the output's pixels, nothing else.
            shown, plain = _rgb(png), _rgb(thumb.png)
            changed = np.any(shown != plain, axis=2)
            assert changed.any(), name
            assert (shown[changed] == RED).all(), name
            outlined += 1
    assert outlined >= 4


def test_a_real_ultrasound_shows_its_redactions(runs: Callable[..., Run]) -> None:
    """The Philips ultrasound from pydicom's wheel: OCR read it, the policy blanked the
    text that may identify, and the reviewer sees where (red outlines)."""
    run = runs("at-risk")
    (card,) = [c for c in run.cards
               if c["output_path"] == run.outputs["pydicom/examples_palette.dcm"]]
    assert card["modality"] == "US" and card["ocr_read"] and card["ok"]
    assert card["boxes"] > 0
    assert "PHILIPS" in card["ocr_kept"]  # what was left: the vendor's own text
    (name,) = card["thumbnails"]
    shown = _rgb((run.folder / name).read_bytes())
    plain = _rgb(render_thumbnails(_published(run, card))[0][0].png)
    red = np.all(shown == RED, axis=2)
    assert red.sum() > np.all(plain == RED, axis=2).sum() + 20


def test_workers_do_not_change_cards_or_thumbnails(runs: Callable[..., Run]) -> None:
    one, two = runs("all", workers=1), runs("all", workers=2)
    assert one.cards_file.read_bytes() == two.cards_file.read_bytes()
    assert one.thumbnails() == two.thumbnails()
    assert len(one.thumbnails()) >= len(one.cards)


# -- privacy -----------------------------------------------------------------------------------


def _card_text(card: dict[str, Any]) -> str:
    return "\n".join([card["output_path"], card["modality"] or "", card["problems"],
                      card["shown"], *card["ocr_kept"], *card["thumbnails"]])


def test_card_texts_hold_no_planted_phi(corpus: Corpus, runs: Callable[..., Run]) -> None:
    patterns = planted_byte_patterns(corpus.answer)
    burned = {v for r in corpus.answer.files for v in r.burned_in}
    words = {w.upper() for v in burned for w in re.findall(r"[A-Za-z0-9]{4,}", v)}
    assert patterns and burned and words
    for rule in ("all", "at-risk"):
        cards = runs(rule).cards
        assert any(c["ocr_kept"] for c in cards)  # OCR lines are listed: there is text
        for card in cards:
            text = _card_text(card)
            data = text.encode()
            assert not [p for p in patterns if p in data], card["output_path"]
            assert not [v for v in burned if v.upper() in text.upper()], card["output_path"]
            found = set(re.findall(r"[A-Za-z0-9]{4,}", text.upper())) & words
            assert not found, (card["output_path"], sorted(found))


def _leaky() -> DeidConfig:
    """Privacy first, except that PatientID and StudyDate are kept, undeclared: the gate
    finds them (a leak)."""
    keep = load_config({"dicomTagConfig": {"actions": [
        {"queries": ["PatientID", "StudyDate"], "keepTag": {}}]}})
    return replace(privacy_first(), actions=keep.actions, residual_sweep=False)


def test_a_leak_drops_the_ocr_lines_from_the_card(tmp_path: Path) -> None:
    palette = [Source(str(PYDICOM_FILES / "examples_palette.dcm"), "us.dcm")]
    clean = _run(tmp_path / "clean", palette, "at-risk")
    (card,) = clean.cards
    assert card["ok"] and card["ocr_kept"]
    leaky = _run(tmp_path / "leaky", palette, "at-risk", config=_leaky())
    (card,) = leaky.cards
    assert not card["ok"] and card["leaks"] >= 1 and "PatientID" in card["problems"]
    assert card["ocr_read"] and card["ocr_kept"] == []  # read, but not written down
    # Nor shown: a leaking output gets no thumbnail (the run fails; nobody is to look).
    assert card["thumbnails"] == [] and card["shown"].startswith("not shown")
    assert not leaky.folder.exists() or not any(leaky.folder.iterdir())
    # Fail-closed (the command line): the rejected output and its thumbnails are gone.
    dropped = _run(tmp_path / "dropped", palette, "at-risk", config=_leaky(),
                   drop_rejected=True)
    assert dropped.summary.failures_by_kind == {"leak": 1}
    assert dropped.cards == [] and dropped.outputs == {}
    assert not dropped.folder.exists() or not any(dropped.folder.iterdir())


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_that_fails_midway_leaves_no_staged_thumbnail(
    corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """The driver fails after publishing two images: their thumbnails stay (the pipeline
    removes a failed run's review), every staged one goes, however far workers ran."""
    images = [s for s in corpus.sources if s.rel.startswith("pydicom/SC_")
              or s.rel.endswith(("CT_small.dcm", "MR_small_bigendian.dcm"))]
    taken = batch._Publisher.take
    calls = []

    def take(self: Any, index: int, o: batch.FileOutcome) -> Any:
        calls.append(index)
        if len(calls) == 3:
            raise RuntimeError("the driver stops")
        return taken(self, index, o)

    monkeypatch.setattr(batch._Publisher, "take", take)
    with pytest.raises(RuntimeError, match="the driver stops"):
        _run(tmp_path, images, "all", workers=workers)
    left = [p.name for p in _files(tmp_path / "review")]
    assert all(THUMB_NAME.fullmatch(n) for n in left), left
    assert len({n.split("-")[0] for n in left}) == 2  # the two images published
    assert not (tmp_path / "review" / f"shard-{SHARD:05d}.parquet").exists()


# -- duplicates ------------------------------------------------------------------------------

OLD, NEW = 1_700_000_000_000_000_000, 1_700_000_100_000_000_000  # mtimes (ns)


def _write(path: Path, data: bytes, mtime_ns: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _resent_with_other_pixels(name: str) -> bytes:
    """The same instance (same SOP Instance UID), sent again with different pixels."""
    ds = pydicom.dcmread(PYDICOM_FILES / name)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress(generate_instance_uid=False)
    arr = ds.pixel_array
    ds.PixelData = (arr.max() - arr).astype(arr.dtype).tobytes()
    assert ds.SOPInstanceUID == pydicom.dcmread(PYDICOM_FILES / name).SOPInstanceUID
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("layout", ["uid", "relative"])
@pytest.mark.parametrize("newest", ["a.dcm", "b.dcm"])
@pytest.mark.parametrize(("name", "rule"), [("CT_small.dcm", "all"),
                                            ("SC_rgb_rle_2frame.dcm", "at-risk")])
def test_of_duplicates_only_the_published_copy_has_a_card(
    tmp_path: Path, layout: str, newest: str, name: str, rule: str
) -> None:
    """Two copies of one instance, the newer with other pixels, first or second in the
    input order: one card, whose thumbnails show the copy that was published."""
    src = tmp_path / "in"
    older = "b.dcm" if newest == "a.dcm" else "a.dcm"
    _write(src / older, (PYDICOM_FILES / name).read_bytes(), OLD)
    _write(src / newest, _resent_with_other_pixels(name), NEW)
    extra = tmp_path / "extra" / "MR_small.dcm"
    _write(extra, (PYDICOM_FILES / "MR_small.dcm").read_bytes(), OLD)
    sources = [*iter_sources(src), Source(str(extra), "zz/MR_small.dcm")]
    run = _run(tmp_path / "run", sources, rule, layout=layout, workers=2)
    assert run.summary.failures_by_kind == {"duplicate": 1}
    winner = run.outputs[newest]
    assert older not in run.outputs
    mine = [c for c in run.cards if c["output_path"] == winner]
    assert len(mine) == 1 and len(run.cards) == (1 if rule == "at-risk" else 2)
    (card,) = mine
    assert sorted(p.name for p in run.folder.iterdir()) == sorted(
        n for c in run.cards for n in c["thumbnails"])
    published = render_thumbnails(_published(run, card))[0]
    assert [(run.folder / n).read_bytes() for n in card["thumbnails"]] == [
        t.png for t in published]
    old_pixels = render_thumbnails((PYDICOM_FILES / name).read_bytes())[0]
    assert published[0].png != old_pixels[0].png  # the copies do look different
