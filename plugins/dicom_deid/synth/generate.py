"""The entry points: :func:`generate` writes a corpus and its answer key; :func:`main_args`
is the ``dicom-deid synth`` command line."""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .answer_key import ANSWER_KEY_NAME, AnswerKey
from .attributes import modality_of, station_name
from .images import WrittenImage, image_study_layer, series_layer, study_layer, write_image
from .odd_inputs import write_bad_inputs, write_duplicates
from .pixels import base_pixels
from .planning import (
    GenerationContext,
    Patient,
    Study,
    make_patient,
    make_sites,
    plan_series,
    plan_study,
    series_kinds,
)
from .report import write_sr
from .writing import Template

DICOM_DIR_NAME = "dicom"


def _write_study(ctx: GenerationContext, p: Patient, st: Study) -> None:
    """Plan and write all series of one study; the SR (if any) comes last."""
    series = [plan_series(ctx, st, i, kind) for i, kind in enumerate(series_kinds(ctx, st))]
    study = study_layer(ctx, p, st)
    ctx.retained.update({st.da: "rtn_long_full_dates", st.site.name: "rtn_inst_id"})
    ctx.retained[st.site.address] = "rtn_inst_id"
    for se in series:
        serial = st.site.serials[modality_of(se)]
        ctx.retained[station_name(st, se)] = ctx.retained[serial] = "rtn_dev_id"
    images: Template | None = None
    written: list[WrittenImage] = []
    for se in series:
        if se.kind == "SR":
            write_sr(ctx, p, st, se, written, study)
            continue
        images = images or image_study_layer(p, st, study)
        data = (series_layer(ctx, p, st, se, images), base_pixels(ctx, se))
        written.extend(write_image(ctx, p, st, se, data, k) for k in range(len(se.sop_uids)))


def _check_args(patients: int, instances_per_series: int, burned_in_fraction: float) -> None:
    """Reject arguments that cannot give a meaningful corpus."""
    if patients < 1:
        raise ValueError("patients must be >= 1")
    if instances_per_series < 1:
        raise ValueError("instances_per_series must be >= 1")
    if not 0.0 <= burned_in_fraction <= 1.0:
        raise ValueError("burned_in_fraction must be within [0, 1]")


def generate(
    out: Path,
    *,
    patients: int,
    seed: int,
    instances_per_series: int = 8,
    small: bool = False,
    bad_inputs: bool = True,
    burned_in_fraction: float = 0.25,
    duplicates: bool = True,
) -> AnswerKey:
    """Write a synthetic corpus to ``out/dicom`` and its answer key to ``out/answer_key.json``.

    Why: a de-identifier can only be tested against data whose every identifying value is
    known. The tree is a realistic multi-patient one (CT, MR, US, CR, SR and Secondary
    Capture dose screens, several transfer syntaxes and character sets, a few broken files);
    the answer key lies outside it.

    Identifiers are planted in two kinds of place, listed apart in each file's record:
    ``phi``, in attributes that the PS3.15 Basic Profile removes or replaces (or in private
    tags), so that the profile alone leaves no byte of :func:`~.answer_key.planted_byte_patterns`;
    and ``kept_planted``, where the profile keeps the attribute, as real sites write them
    (local code meanings, a window preset, a safe private text element), each repeating a
    header value spelled differently, so that only a residual search for the instance's own
    values removes them (:func:`~.answer_key.kept_byte_patterns`). Pixel text drawn for OCR
    tests is listed separately (``burned_in``): a byte search cannot see it. The corpus also
    carries Type 3 sequences with items and conditional (1C/2C) attributes whose condition
    the profile removes, so validity regressions show, and (unless ``duplicates`` is False)
    a few instances written twice, in different transfer syntaxes and with set modification
    times, whose winner under the newest-input rule is in ``duplicates``.

    Same arguments give byte-identical output (and the same modification times for the
    duplicates): all randomness comes from ``random.Random(seed)`` and a seeded numpy
    ``Generator``, and all dates derive from fixed base dates. Refuses to write into a
    non-empty ``out/dicom`` so stale files cannot mix in.
    """
    _check_args(patients, instances_per_series, burned_in_fraction)
    out = Path(out)
    root = out / DICOM_DIR_NAME
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    ctx = GenerationContext(
        rng=rng,
        nprng=np.random.default_rng(seed),
        plants=random.Random(f"plants-{seed}"),
        root=root,
        small=small,
        instances_per_series=instances_per_series,
        burned_in_fraction=burned_in_fraction,
        uid_stem=str(rng.randrange(100000, 1000000)),
    )
    ctx.sites = make_sites(rng)
    for index in range(patients):
        patient = make_patient(ctx, index)
        first = ""
        for s in range(rng.randint(1, 3)):
            study = plan_study(ctx, s, first)
            first = first or study.uid
            _write_study(ctx, patient, study)
    bad = write_bad_inputs(ctx) if bad_inputs else []
    dups = write_duplicates(ctx) if duplicates else []
    key = AnswerKey(
        seed=seed,
        patients=patients,
        files=tuple(ctx.records),
        bad_inputs=tuple(bad),
        phi=tuple(sorted({v for r in ctx.records for v in r.phi})),
        uids=tuple(sorted(ctx.uids)),
        instances_per_series=instances_per_series,
        small=small,
        burned_in_fraction=burned_in_fraction,
        retained_by=dict(sorted(ctx.retained.items())),
        duplicates=tuple(dups),
    )
    (out / ANSWER_KEY_NAME).write_text(key.to_json(), encoding="utf-8")
    return key


def main_args(argv: Sequence[str] | None = None) -> int:
    """``dicom-deid synth OUT --patients N --seed S``: generate and print a summary."""
    parser = argparse.ArgumentParser(
        prog="dicom-deid synth", description="Synthetic DICOM corpus with planted PHI."
    )
    parser.add_argument("out", type=Path, help="output folder (DICOM under OUT/dicom)")
    parser.add_argument("--patients", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--instances-per-series", type=int, default=8)
    parser.add_argument("--small", action="store_true", help="tiny images, for tests")
    parser.add_argument("--no-bad-inputs", action="store_true")
    parser.add_argument("--burned-in-fraction", type=float, default=0.25)
    parser.add_argument("--no-duplicates", action="store_true",
                        help="no re-sent instances (one file per SOP Instance UID)")
    args = parser.parse_args(argv)
    key = generate(
        args.out,
        patients=args.patients,
        seed=args.seed,
        instances_per_series=args.instances_per_series,
        small=args.small,
        bad_inputs=not args.no_bad_inputs,
        burned_in_fraction=args.burned_in_fraction,
        duplicates=not args.no_duplicates,
    )
    print(
        f"{len(key.files)} DICOM files ({len(key.duplicates)} re-sent), "
        f"{len(key.bad_inputs)} bad inputs, {len(key.phi)} PHI strings, "
        f"{sum(bool(f.kept_planted) for f in key.files)} files with kept-place plants "
        f"-> {args.out / ANSWER_KEY_NAME}"
    )
    return 0
