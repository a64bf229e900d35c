"""The ``dicom-deid`` command line: the same engine the Airflow operators call."""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from pathlib import Path

from . import __version__
from .batch import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, LAYOUTS, iter_sources, run_batch
from .config import DeidConfig
from .deidentify import ConfigNotSupported
from .keys import KeyConfigError, generate_key_file, load_key
from .tag_config import ConfigError, config_from_options, load_config

EPILOG = """exit codes: 0 all inputs de-identified; 2 bad arguments, config or key (nothing
was touched); 3 some inputs failed (listed in --errors, never copied to OUTPUT)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dicom-deid", description=__doc__, epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"dicom-deid {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log per-file warnings")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "deidentify", help="de-identify a folder tree of DICOM files", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("input", type=Path, help="input file or folder (files with or without .dcm)")
    d.add_argument("output", type=Path, help="output folder for de-identified files")
    d.add_argument("--config", type=Path,
                   help="Google DicomTagConfig / DeidentifyConfig JSON (used unchanged)")
    d.add_argument("--profile", default="basic",
                   help="profile when no --config: basic (PS3.15 Basic Profile), keep-all, "
                        "minimal-keep-list, deidentify-tag-contents, or Google's names")
    d.add_argument("--option", action="append", default=[], metavar="NAME",
                   help="PS3.15 option, repeatable: RetainSafePrivate, RetainUIDs, "
                        "RetainDeviceIdentity, RetainInstitutionIdentity, "
                        "RetainPatientCharacteristics, RetainLongitudinalFullDates, "
                        "RetainLongitudinalModifiedDates, CleanDescriptors, "
                        "CleanStructuredContent, CleanGraphics (Aspose names accepted)")
    d.add_argument("--id-prefix", default="", help="organisation prefix for ID pseudonyms")
    d.add_argument("--key-file", type=Path,
                   help="HMAC key file (hex/base64/raw, >= 32 bytes); else $DICOM_DEID_KEY")
    d.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    d.add_argument("--layout", choices=LAYOUTS, default="uid",
                   help="uid: OUTPUT/<study>/<series>/<sop>.dcm with pseudonymous UIDs "
                        "(default); relative: keep input paths (only if they carry no PHI)")
    d.add_argument("--errors", type=Path, help="CSV listing every failed input with its reason")
    d.add_argument("--mapping", type=Path,
                   help="Parquet file of original<->pseudonym identifiers (restricted)")
    d.add_argument("--run-id", default="", help="run id recorded in the mapping")
    d.add_argument("--no-progress", action="store_true", help="never show a progress bar")

    s = sub.add_parser("synth", help="generate the synthetic corpus with planted PHI")
    s.add_argument("output", type=Path)
    s.add_argument("--patients", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--instances", type=int, default=8, help="instances per image series")
    s.add_argument("--small", action="store_true", help="tiny images (fast tests)")
    s.add_argument("--no-bad", action="store_true", help="no bad inputs in the corpus")

    k = sub.add_parser("keygen", help="write a new random 32-byte key file (mode 0600)")
    k.add_argument("output", type=Path)
    k.add_argument("--force", action="store_true", help="overwrite an existing key file")
    return p


def _load_deid_config(args: argparse.Namespace) -> DeidConfig:
    if args.config:
        if args.option or args.profile != "basic":
            raise ConfigError("--config already holds the profile and options; "
                              "drop --profile/--option")
        config = load_config(args.config)
        if args.id_prefix:
            config = DeidConfig(**{**config.__dict__, "id_prefix": args.id_prefix})
        return config
    return config_from_options(args.profile, args.option, id_prefix=args.id_prefix)


def _deidentify(args: argparse.Namespace) -> int:
    try:
        config = _load_deid_config(args)
        key = load_key(args.key_file)
    except (ConfigError, KeyConfigError, ValueError, OSError) as exc:
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.input.exists():
        print(f"dicom-deid: input {args.input} does not exist", file=sys.stderr)
        return EXIT_USAGE
    run_id = args.run_id or uuid.uuid4().hex[:12]
    try:
        summary = run_batch(
            iter_sources(args.input), args.output, config, key,
            workers=args.workers or None, layout=args.layout, errors_path=args.errors,
            mapping_path=args.mapping, run_id=run_id,
            progress=False if args.no_progress else None,
        )
    except (ConfigNotSupported, ValueError) as exc:
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(summary.line())
    if summary.failed:
        where = f"; see {args.errors}" if args.errors else " (use --errors FILE to list them)"
        print(f"{summary.failed} input(s) failed{where}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


def _synth(args: argparse.Namespace) -> int:
    from .synth import generate

    key = generate(args.output, patients=args.patients, seed=args.seed,
                   instances_per_series=args.instances, small=args.small,
                   bad_inputs=not args.no_bad)
    print(f"wrote {len(key.files)} DICOM files and {len(key.bad_inputs)} bad inputs "
          f"under {args.output / 'dicom'}; answer key {args.output / 'answer_key.json'}")
    return EXIT_OK


def _keygen(args: argparse.Namespace) -> int:
    try:
        generate_key_file(args.output, overwrite=args.force)
    except KeyConfigError as exc:
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote a new key to {args.output} (keep it secret; pseudonyms depend on it)")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dicom-deid`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handlers = {"deidentify": _deidentify, "synth": _synth, "keygen": _keygen}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
