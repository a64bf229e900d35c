"""``dicom-deid pseudonymize``: an EHR/OMOP/registry extract made joinable to the images.

Reads a CSV or Parquet extract of identifiers and writes it with the pseudonyms and date
shifts the imaging pipeline writes under the same configuration and key
(:mod:`dicom_deid.vault.linkage`), so it joins ``deid_metadata`` without PHI. The
configuration is chosen as ``deidentify`` chooses it (``--config``, or ``--profile`` /
``--option``, else the privacy-first default) or read from a project file (``--project``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dicom_deid.config.google import config_from_options, load_config
from dicom_deid.config.model import DeidConfig, privacy_first
from dicom_deid.deid.batch import EXIT_OK, EXIT_USAGE
from dicom_deid.deid.deidentifier import Deidentifier
from dicom_deid.deid.keys import load_key
from dicom_deid.errors import ConfigError, DicomDeidError
from dicom_deid.vault.linkage import (
    LinkColumns,
    Treatment,
    linkage_policy,
    pseudonymize_table,
    read_extract,
    write_extract,
)

EPILOG = """The output holds the same rows: the patient ID, accession and Study Instance UID
columns replaced by their pseudonyms, date columns shifted by the patient's offset (Modified
Dates) or kept (Full Dates), the issuer column dropped, every other column unchanged. Join it
to deid_metadata on PatientID (and AccessionNumber, StudyDate). Use the key and the policy
the images were de-identified with: another key or policy gives pseudonyms that join nothing.
exit codes: 0 written; 2 refused (bad arguments, config, key or extract; nothing written)."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``pseudonymize`` command to the ``dicom-deid`` parser's subcommands."""
    p = sub.add_parser(
        "pseudonymize", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="pseudonymize an EHR/registry extract (CSV or Parquet) so it joins the images",
        description="Write an extract of identifiers with the pseudonyms and date shifts "
                    "the imaging pipeline writes under the same configuration and key, so it "
                    "joins deid_metadata without PHI.")
    p.add_argument("input", type=Path, help="the extract: a .csv (read as text) or .parquet")
    p.add_argument("output", type=Path, help="the pseudonymized extract (.csv or .parquet)")
    p.add_argument("--patient-id", required=True, metavar="COL",
                   help="column of patient IDs (PatientID)")
    p.add_argument("--issuer", metavar="COL",
                   help="column of each patient ID's issuer (IssuerOfPatientID), if the "
                        "images carry one; dropped from the output")
    p.add_argument("--accession", metavar="COL", help="column of accession numbers")
    p.add_argument("--study-uid", metavar="COL", help="column of Study Instance UIDs")
    p.add_argument("--date", action="append", default=[], metavar="COL",
                   help="column of dates of the row's patient, repeatable (DATE, timestamp, "
                        "or text YYYYMMDD / YYYY-MM-DD); treated as the images' StudyDate "
                        "is, so never a birth date (the images carry none)")
    p.add_argument("--key-file", type=Path,
                   help="the images' HMAC key file (hex/base64/raw); else $DICOM_DEID_KEY")
    p.add_argument("--project", type=Path, metavar="FILE",
                   help="the project file (projects/<name>.yaml) whose policy made the images")
    p.add_argument("--config", type=Path,
                   help="Google DicomTagConfig / DeidentifyConfig JSON, as given to deidentify")
    p.add_argument("--profile", default=None,
                   help="profile when no --config, as given to deidentify (default: the "
                        "privacy-first default, whose images carry no dates)")
    p.add_argument("--option", action="append", default=[], metavar="NAME",
                   help="PS3.15 option, repeatable, as given to deidentify (e.g. "
                        "RetainLongitudinalModifiedDates)")
    p.add_argument("--id-prefix", default="", help="organisation prefix, as given to deidentify")
    p.add_argument("--no-residual-sweep", action="store_true",
                   help="as given to deidentify (changes the config's fingerprint only)")


def _config(args: argparse.Namespace) -> DeidConfig:
    """The configuration the images were de-identified with, chosen as ``deidentify``
    chooses it (the same flags give the same config and fingerprint)."""
    if args.project is not None:
        if args.config or args.profile is not None or args.option or args.id_prefix or \
                args.no_residual_sweep:
            raise ConfigError("--project already holds the policy; drop --config, --profile, "
                              "--option, --id-prefix and --no-residual-sweep")
        from dicom_deid.pipeline.projects import load_project

        return load_project(args.project).deid_config()
    if args.config:
        if args.option or args.profile is not None:
            raise ConfigError("--config already holds the profile and options; "
                              "drop --profile/--option")
        config = load_config(args.config)
        changes: dict[str, object] = {}
        if args.id_prefix:
            changes["id_prefix"] = args.id_prefix
        if args.no_residual_sweep:
            changes["residual_sweep"] = False
        return DeidConfig(**{**config.__dict__, **changes}) if changes else config
    if args.profile is None and not args.option:
        return privacy_first(id_prefix=args.id_prefix,
                             residual_sweep=not args.no_residual_sweep)
    return config_from_options(args.profile or "basic", args.option, id_prefix=args.id_prefix,
                               residual_sweep=not args.no_residual_sweep)


def run(args: argparse.Namespace) -> int:
    """Pseudonymize ``args.input`` into ``args.output``; print one line saying what."""
    from dicom_deid.pipeline.run_record import key_id

    columns = LinkColumns(patient_id=args.patient_id, issuer=args.issuer,
                          accession=args.accession, study_uid=args.study_uid,
                          dates=tuple(args.date))
    try:
        config = _config(args)
        key = load_key(args.key_file)
        if not args.input.is_file():
            raise ConfigError(f"input {args.input} is not a file")
        deidentifier = Deidentifier(config, key)
        table = pseudonymize_table(read_extract(args.input), deidentifier, columns=columns)
        write_extract(table, args.output, source=args.input)
    except (DicomDeidError, OSError) as exc:
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    what = ["patient_id"] + [name for name, col in (("accession", columns.accession),
                                                   ("study_uid", columns.study_uid)) if col]
    dates = f"{len(columns.dates)} date column(s)"
    if columns.dates:
        kept = linkage_policy(deidentifier).dates is Treatment.KEEP
        dates += " kept" if kept else " shifted"
    print(f"pseudonymized {table.num_rows} row(s): {', '.join([*what, dates])} -> "
          f"{args.output} (config {config.fingerprint()[:16]}, key {key_id(key)})")
    return EXIT_OK
