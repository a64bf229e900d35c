"""The ``dicom-deid`` command line: the same engine the Airflow operators call."""

from __future__ import annotations

import argparse
import gc
import getpass
import logging
import os
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NoReturn

from dicom_deid import __version__
from dicom_deid.cohort.filter_file import read_filter
from dicom_deid.config.google import config_from_options, load_config
from dicom_deid.config.model import (
    DeidConfig,
    ImageConfig,
    OcrScope,
    TextRedactionMode,
    privacy_first,
)
from dicom_deid.deid.batch import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    LAYOUTS,
    Source,
    iter_sources,
    run_batch,
)
from dicom_deid.deid.keys import generate_key_file, load_key
from dicom_deid.errors import ConfigError, DicomDeidError, KeyConfigError, StorageError

from .audit_cmd import add_parser as add_audit_parser
from .audit_cmd import run as audit
from .paths import check_run_paths, write_errors_csv
from .pseudonymize_cmd import add_parser as add_pseudonymize_parser
from .pseudonymize_cmd import run as pseudonymize
from .remote import location, staged_output, store_sources
from .table import print_table
from .vault_cmd import add_parsers as add_vault_parsers
from .vault_cmd import reidentify, vault
from .warehouse_cmd import add_parser as add_warehouse_parser
from .warehouse_cmd import run as warehouse_cmd

EPILOG = """exit codes: 0 all inputs de-identified; 1 the errors list or the mapping could not
be written (rerun when fixed); 2 bad arguments, config or key (nothing was touched); 3 some
inputs failed (listed in --errors, never copied to OUTPUT); 143 stopped by SIGTERM."""
EXIT_WRITE_FAILED = 1

WITHDRAW_EPILOG = """exit codes: 0 withdrawn, or withdrawn already (nothing changed); 2 refused
(bad arguments, settings or project, an unknown value, a reason that may hold PHI):
nothing was changed, or -- for a storage failure midway -- ask again to finish."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dicom-deid", description=__doc__, epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"dicom-deid {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log per-file warnings")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "deidentify", help="de-identify a folder tree of DICOM files", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("input", type=location,
                   help="input file or folder (files with or without .dcm), or gs://bucket/path")
    d.add_argument("output", type=location,
                   help="output folder for de-identified files, or gs://bucket/path")
    d.add_argument("--config", type=Path,
                   help="Google DicomTagConfig / DeidentifyConfig JSON (used unchanged)")
    d.add_argument("--profile", default=None,
                   help="profile when no --config: basic (PS3.15 Basic Profile), keep-all, "
                        "minimal-keep-list, deidentify-tag-contents, or Google's names. "
                        "Without --config, --profile and --text-redaction the "
                        "privacy-first default applies: basic + CleanDescriptors + the "
                        "residual sweep + burned-in text of images at risk redacted "
                        "(--option adds to it); --profile basic is the bare profile")
    d.add_argument("--option", action="append", default=[], metavar="NAME",
                   help="PS3.15 option added to the privacy-first default (or to "
                        "--profile), repeatable: RetainSafePrivate, RetainUIDs, "
                        "RetainDeviceIdentity, RetainInstitutionIdentity, "
                        "RetainPatientCharacteristics, RetainLongitudinalFullDates, "
                        "RetainLongitudinalModifiedDates, CleanDescriptors, "
                        "CleanStructuredContent, CleanGraphics (Aspose names accepted)")
    d.add_argument("--id-prefix", default="", help="organisation prefix for ID pseudonyms")
    d.add_argument("--no-residual-sweep", action="store_true",
                   help="do not search kept text for the instance's own identifiers (the "
                        "sweep goes beyond PS3.15 and is on by default; see the README)")
    d.add_argument("--text-redaction", default=None, metavar="MODE",
                   choices=[m.value for m in TextRedactionMode],
                   help="burned-in text (Google cleanImage.textRedactionMode) when no --config: "
                        "REDACT_ALL_TEXT, REDACT_SENSITIVE_TEXT, "
                        "REDACT_SENSITIVE_TEXT_CLEAN_DESCRIPTORS, REDACT_NO_TEXT (default)")
    d.add_argument("--pixel-rules", default=None, metavar="FILE",
                   help="CTP DicomPixelAnonymizer script: known burned-in text regions to blank")
    d.add_argument("--ocr-scope", default=None, choices=[s.value.lower() for s in OcrScope],
                   help="images read by OCR: auto (US/SC/XA/... or BurnedInAnnotation YES; "
                        "default) or all")
    d.add_argument("--key-file", type=Path,
                   help="HMAC key file (hex/base64/raw, >= 32 bytes); else $DICOM_DEID_KEY")
    d.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    d.add_argument("--layout", choices=LAYOUTS, default="uid",
                   help="uid: OUTPUT/<study>/<series>/<sop>.dcm with pseudonymous UIDs "
                        "(default); relative: keep input paths (only if they carry no PHI)")
    d.add_argument("--errors", type=Path, help="CSV listing every failed input with its reason")
    d.add_argument("--mapping", type=Path,
                   help="Parquet file of original<->pseudonym identifiers, sealed under the "
                        "vault key (--vault-key-file or $DICOM_DEID_VAULT_KEY)")
    d.add_argument("--vault-key-file", type=Path, default=None,
                   help="the vault key that seals the mapping (not the pseudonym key)")
    d.add_argument("--plain-mapping", action="store_true",
                   help="write the mapping in clear, without a vault key (an explicit choice: "
                        "anyone with a copy of it re-identifies every output)")
    d.add_argument("--run-id", default="", help="run id recorded in the mapping")
    d.add_argument("--filter", type=Path, dest="filter_file",
                   help="only the instances a filter file selects (/studies/UID[/series/UID"
                        "[/instances/UID]] per line), resolved against dicom_metadata")
    d.add_argument("--warehouse", default=None,
                   help="warehouse URL for --filter: duckdb:///path.duckdb (default "
                        "var/warehouse/dicom_deid.duckdb) or bigquery://project/dataset")
    d.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    gate = d.add_mutually_exclusive_group()
    gate.add_argument("--verify", dest="verify", action="store_true", default=True,
                      help="(the default) check every output with the verification gate "
                           "(the pipeline's): an output holding one of its source's "
                           "identifying values, or unsound, is removed and its input listed "
                           "as failed (kind leak/unverified)")
    gate.add_argument("--no-verify", dest="verify", action="store_false",
                      help="write outputs without the verification gate (an explicit "
                           "weakening: nothing then checks what the policy left)")
    d.add_argument("--exception", action="append", default=[], metavar="NAME",
                   help="with --verify: a DICOM keyword (or a PS3.15 option name, for all "
                        "it keeps) whose original values this run keeps on purpose "
                        "(repeatable)")

    s = sub.add_parser("synth", help="generate the synthetic corpus with planted PHI")
    s.add_argument("output", type=Path)
    s.add_argument("--patients", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--instances", type=int, default=8, help="instances per image series")
    s.add_argument("--small", action="store_true", help="tiny images (fast tests)")
    s.add_argument("--no-bad", action="store_true", help="no bad inputs in the corpus")
    s.add_argument("--no-duplicates", action="store_true",
                   help="no re-sent copies of instances (same SOP Instance UID)")

    e = sub.add_parser("export-metadata",
                       help="export DICOM metadata to Parquet and load it into the warehouse")
    e.add_argument("source", type=location,
                   help="landing folder (files with or without .dcm), or gs://bucket/path "
                        "(headers read by byte ranges)")
    e.add_argument("--out", type=Path, default=None,
                   help="Parquet folder (default var/metadata/<table>)")
    e.add_argument("--table", default="dicom_metadata",
                   choices=("dicom_metadata", "deid_metadata"), help="warehouse table")
    e.add_argument("--warehouse", default=None, help="warehouse URL (see deidentify)")
    e.add_argument("--no-load", action="store_true", help="write Parquet only")
    e.add_argument("--run-id", default="", help="ingest run id (default: random)")
    e.add_argument("--ingest-date", type=date.fromisoformat, default=None,
                   help="partition date YYYY-MM-DD (default: today, UTC)")
    e.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    e.add_argument("--errors", type=Path, default=None,
                   help="CSV (0600) listing each file that failed with its reason: the "
                        "console gives counts only (landing paths can name patients)")

    qy = sub.add_parser("query", help="run SQL on the warehouse and print the result")
    qy.add_argument("sql", help="SQL in the warehouse's dialect (DuckDB by default)")
    qy.add_argument("--warehouse", default=None, help="warehouse URL (see deidentify)")

    c = sub.add_parser("cohort", help="run a cohort SQL file and write its filter file")
    c.add_argument("sql", type=Path,
                   help="cohort: a BigQuery Standard SQL file, or the name of one in "
                        "--cohort-dir or among the shipped examples (chest_ct_adults, ...)")
    c.add_argument("--cohort-dir", type=Path, default=None,
                   help="your cohort folder, searched by name before the shipped examples "
                        "(default $DICOM_DEID_COHORT_DIR)")
    c.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="cohort parameter, repeatable (declared in the file's header)")
    c.add_argument("--out", type=Path, required=True, help="filter file to write")
    c.add_argument("--warehouse", default=None, help="warehouse URL (see deidentify)")

    w = sub.add_parser(
        "withdraw", epilog=WITHDRAW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="withdraw a patient's, study's, series' or instance's released files from a "
             "project's research tree (and deid_metadata); later files of it are held back",
        description="Withdraw released data from a project's research tree, on request. "
                    "Uses the deployment's settings ($DICOM_DEID_DATA_DIR, ...) and the "
                    "project file ($DICOM_DEID_PROJECTS_DIR, else ./projects).")
    w.add_argument("--project", required=True, help="the project (projects/<name>.yaml)")
    what = w.add_mutually_exclusive_group(required=True)
    for level in ("patient", "study", "series", "instance"):
        what.add_argument(f"--{level}", metavar="PSEUDONYM",
                          help=f"the {level}'s PSEUDONYMOUS identifier, as the research tree "
                               "and deid_metadata show it")
    w.add_argument("--reason", required=True,
                   help="why, PHI-free and short: no names, dates, IDs or UIDs")
    w.add_argument("--by", default=None,
                   help="who asked, as recorded (default: the operating-system user)")
    w.add_argument("--vault-key-file", type=Path, default=None,
                   help="the vault key that opens deid_mapping's original identifiers (the "
                        "ones to hold back; default: $DICOM_DEID_VAULT_KEY)")

    k = sub.add_parser("keygen", help="write a new random 32-byte key file (mode 0600): a "
                                     "pseudonym key, a vault key (--vault) or a restricted key "
                                     "(--restricted)")
    k.add_argument("output", type=Path)
    k.add_argument("--force", action="store_true", help="overwrite an existing key file")
    kind = k.add_mutually_exclusive_group()
    kind.add_argument("--vault", action="store_true",
                      help="a vault key (seals the mapping; keep it apart from the pseudonym key)")
    kind.add_argument("--restricted", action="store_true",
                      help="a restricted key (encrypts the embedded warehouse's restricted "
                           "file: $DICOM_DEID_RESTRICTED_KEY_FILE)")
    add_warehouse_parser(sub)
    add_vault_parsers(sub)
    add_audit_parser(sub)
    add_pseudonymize_parser(sub)
    return p


def _load_deid_config(args: argparse.Namespace) -> DeidConfig:
    if args.config:
        if args.option or args.profile is not None:
            raise ConfigError("--config already holds the profile and options; "
                              "drop --profile/--option")
        config = load_config(args.config)
        if args.id_prefix:
            config = DeidConfig(**{**config.__dict__, "id_prefix": args.id_prefix})
        if args.no_residual_sweep:
            config = DeidConfig(**{**config.__dict__, "residual_sweep": False})
        if args.text_redaction:
            raise ConfigError("--config already holds cleanImage; drop --text-redaction")
        return _pixel_overrides(config, args)
    if args.profile is None and not args.text_redaction:
        # --option alone adds to the privacy-first default, as a project file's options
        # do; the bare profile with exactly these options needs --profile basic
        from dicom_deid.pipeline.projects import Policy

        chosen = Policy(options=tuple(args.option)).deid_config()
        return _pixel_overrides(privacy_first(
            options=chosen.options, id_prefix=args.id_prefix,
            residual_sweep=not args.no_residual_sweep), args)
    config = config_from_options(args.profile or "basic", args.option,
                                 id_prefix=args.id_prefix,
                                 residual_sweep=not args.no_residual_sweep)
    if args.text_redaction:
        image = ImageConfig(TextRedactionMode(args.text_redaction))
        config = DeidConfig(**{**config.__dict__, "clean_image": image})
    return _pixel_overrides(config, args)


def _pixel_overrides(config: DeidConfig, args: argparse.Namespace) -> DeidConfig:
    """--pixel-rules and --ocr-scope replace what the config says (checked up front)."""
    changes: dict[str, object] = {}
    if args.pixel_rules:
        from dicom_deid.pixels.rules import load_rules

        load_rules(args.pixel_rules)  # a bad rule file stops the run before any file
        changes["pixel_rules"] = str(args.pixel_rules)
    if args.ocr_scope:
        changes["ocr_scope"] = OcrScope(args.ocr_scope.upper())
    return DeidConfig(**{**config.__dict__, **changes}) if changes else config


def _deidentify(args: argparse.Namespace) -> int:
    try:
        config = _load_deid_config(args)
        key = load_key(args.key_file)
    except (DicomDeidError, OSError) as exc:  # a bad config or key: nothing touched yet
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(args.input, Path) and not args.input.exists():
        print(f"dicom-deid: input {args.input} does not exist", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_run_paths(args.input, args.output, args.errors, args.mapping,
                        {"--key-file": args.key_file, "--vault-key-file": args.vault_key_file,
                         "--filter": args.filter_file})
    except ConfigError as exc:
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    run_id = args.run_id or uuid.uuid4().hex[:12]
    outside = 0
    try:
        sources: Iterable[Source] = (iter_sources(args.input) if isinstance(args.input, Path)
                                     else store_sources(args.input))
        if args.filter_file:
            sources, outside = _filtered_sources(args.input, args.filter_file, args.warehouse)
    except (DicomDeidError, OSError) as exc:
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.exception and not args.verify:
        print("dicom-deid: --exception declares what the gate spares: drop --no-verify",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        seal = _mapping_seal(args, key)
    except KeyConfigError as exc:
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with staged_output(args.output) as (out, sink):
            summary = run_batch(
                sources, out, config, key,
                workers=args.workers or None, layout=args.layout, errors_path=args.errors,
                mapping_path=args.mapping, run_id=run_id,
                progress=False if args.no_progress else None,
                gate=args.exception if args.verify else None, drop_rejected=args.verify,
                mapping_seal=seal, sink=sink,
            )
    except (ConfigError, StorageError) as exc:
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the run's own files (errors list, mapping): no path, no trace
        why = exc.strerror or type(exc).__name__
        print(f"dicom-deid: writing the run's errors list or mapping failed ({why}): the "
              "outputs published before it stand without them; fix it and rerun (the same "
              "bytes, and the lists written)", file=sys.stderr)
        return EXIT_WRITE_FAILED
    print(summary.line())
    if summary.failed:
        where = f"; see {args.errors}" if args.errors else " (use --errors FILE to list them)"
        print(f"{summary.failed} input(s) failed{where}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_SOME_FAILED if outside else EXIT_OK  # selected, not de-identified


def _mapping_seal(args: argparse.Namespace, key: bytes) -> Callable[[bytes], bytes] | None:
    """How the mapping is written: sealed under the vault key (never the pseudonym key
    ``key``), or in clear when asked."""
    if args.mapping is None or args.plain_mapping:
        if args.vault_key_file is not None and args.plain_mapping:
            raise KeyConfigError("--plain-mapping and --vault-key-file exclude each other")
        return None
    from functools import partial

    from dicom_deid.vault.envelope import seal
    from dicom_deid.vault.keys import load_vault_key

    try:
        vault_key = load_vault_key(args.vault_key_file)
    except KeyConfigError as exc:
        raise KeyConfigError(
            f"{exc}. The mapping holds original identifiers: it is sealed under a vault "
            "key (another key than the pseudonym key); --plain-mapping writes it in clear"
        ) from None
    if vault_key == key:
        raise KeyConfigError("the vault key is the pseudonym key: whoever makes pseudonyms "
                             "could read the mapping; create a vault key with `dicom-deid "
                             "keygen --vault FILE`")
    return partial(seal, vault_key=vault_key)


def _filtered_sources(root: Path | str, filter_path: Path, warehouse_url: str | None
                      ) -> tuple[list[Source], int]:
    """The input files a filter file selects, via dicom_metadata (exact instance URIs),
    and how many selected instances lie outside ``root`` (not de-identified: exit 3)."""
    from dicom_deid.cohort.cohorts import resolve_filter
    from dicom_deid.warehouse.factory import open_warehouse

    filter_set = read_filter(filter_path)
    with open_warehouse(warehouse_url) as warehouse:
        resolution = resolve_filter(warehouse, filter_set)
    if resolution.unmatched:
        print(f"dicom-deid: {len(resolution.unmatched)} filter line(s) matched no exported "
              "instance (export the landing zone first?)", file=sys.stderr)
    sources: list[Source] = []
    outside = 0
    if isinstance(root, str):  # an object store: instances under its prefix, by URI
        prefix = root.rstrip("/") + "/"
        sources = [Source(uri, uri[len(prefix):]) for uri in resolution.uris
                   if uri.startswith(prefix)]
        outside = len(resolution.uris) - len(sources)
    else:
        root = root.resolve()
        for uri in resolution.uris:
            path = Path(uri).resolve()
            if root == path or root in path.parents:
                sources.append(Source(path, path.relative_to(root).as_posix()))
            else:
                outside += 1
    if outside:
        print(f"dicom-deid: {outside} selected instance(s) are not under INPUT; skipped",
              file=sys.stderr)
    return sources, outside


def _export_metadata(args: argparse.Namespace) -> int:
    from dicom_deid.metadata.export import (
        ExportState,
        Listed,
        export_metadata,
        pending_parts,
        set_pending_parts,
    )
    from dicom_deid.storage import open_store
    from dicom_deid.storage.permissions import private_dir, restrict_tree
    from dicom_deid.warehouse.factory import open_warehouse
    from dicom_deid.warehouse.restricted_file import export_key

    sources: Iterable[Path | str | Listed]
    if isinstance(args.source, Path):
        if not args.source.exists():
            print(f"dicom-deid: source {args.source} does not exist", file=sys.stderr)
            return EXIT_USAGE
        try:
            # URIs are absolute: the same files exported from another working folder
            # are the same rows, and a --filter run anywhere finds them
            sources = (s.path for s in iter_sources(Path(os.path.abspath(args.source))))
            check_run_paths(args.source, args.out, args.errors, None, {})
        except (DicomDeidError, OSError) as exc:
            print(f"dicom-deid: {exc}", file=sys.stderr)
            return EXIT_USAGE
    else:
        try:
            store = open_store(args.source)
            sources = [Listed(store.uri(f.rel), f.size, f.mtime_ns, f.generation, f.checksum)
                       for f in store.list_files()]
        except (DicomDeidError, OSError) as exc:
            print(f"dicom-deid: {exc}", file=sys.stderr)
            return EXIT_USAGE
    out = args.out or Path("var/metadata") / args.table
    identified = args.table == "dicom_metadata"
    try:
        key = export_key(args.warehouse, args.table, required=not args.no_load)
        state = ExportState.for_export(out, key)
        if not args.no_load:  # what the load will need (a key, say), before any export
            with open_warehouse(args.warehouse):
                pass
    except (DicomDeidError, OSError) as exc:
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if identified:  # names, IDs, landing paths: its owner's only, as the DAG's export
        private_dir(out)
    summary = export_metadata(
        sources, out,
        run_id=args.run_id or uuid.uuid4().hex[:12],
        ingest_date=args.ingest_date or datetime.now(UTC).date(),
        state=state, workers=args.workers or None, key=key,
        deidentified_only=not identified,
    )
    if identified:
        restrict_tree(out)
    if summary.remote_files:
        print(f"read {summary.remote_bytes / summary.remote_files / 1024:.1f} KiB per object "
              f"on average ({summary.remote_files} object(s); headers by byte ranges)")
    rate = summary.exported / summary.seconds if summary.seconds else 0.0
    unchanged = summary.skipped_unchanged + summary.unchanged_content
    print(f"exported {summary.exported}, unchanged {unchanged}, failed {len(summary.errors)} "
          f"in {summary.seconds:.1f} s ({rate:.0f} files/s) to {out}")
    for reason, count in sorted(Counter(r for _, r in summary.errors).items()):
        print(f"  {count} file(s): {reason}", file=sys.stderr)  # paths: --errors only
    if args.errors is not None:
        write_errors_csv(args.errors, [(uri, "", "export", reason)
                                       for uri, reason in summary.errors])
    earlier = [p for p in pending_parts(out) if p not in set(summary.parts)]
    to_load = [*earlier, *summary.parts]
    set_pending_parts(out, to_load)  # until the warehouse has them
    if to_load and not args.no_load:
        try:
            with open_warehouse(args.warehouse) as warehouse:
                warehouse.ensure_schema()
                rows = warehouse.load_parquet(args.table, [str(p) for p in to_load],
                                              mode="merge")
        except (DicomDeidError, OSError) as exc:
            print(f"dicom-deid: {exc} (the rows are loaded by the next run)", file=sys.stderr)
            return EXIT_USAGE
        set_pending_parts(out, [])
        print(f"loaded {rows} row(s) into {args.table}" + (
            f" (with {len(earlier)} part(s) an earlier run did not load)" if earlier else ""))
    return EXIT_SOME_FAILED if summary.errors else EXIT_OK


def _query(args: argparse.Namespace) -> int:
    from dicom_deid.warehouse.factory import open_warehouse
    from dicom_deid.warehouse.restricted_file import HOW, load_restricted_key

    # A query only reads: the embedded warehouse opens read-only, so an analyst without
    # the restricted key sees the analysts' tables (deid_metadata, deid_runs) only.
    duck = not args.warehouse or args.warehouse.startswith("duckdb://")
    try:
        with open_warehouse(args.warehouse, **({"read_only": True} if duck else {})) as wh:
            table = wh.query(args.sql)
    except Exception as exc:  # the SQL is the user's; its error text names no PHI of ours
        print(f"dicom-deid: {type(exc).__name__}: {exc}", file=sys.stderr)
        if duck and load_restricted_key() is None:
            print(f"dicom-deid: (the restricted tables need the restricted key: {HOW})",
                  file=sys.stderr)
        return EXIT_USAGE
    print_table(table)
    return EXIT_OK


def _cohort(args: argparse.Namespace) -> int:
    from dicom_deid.cohort.cohorts import cohort_to_filter, load_cohort
    from dicom_deid.warehouse.factory import duckdb_path, open_warehouse

    # The analyst's SQL reads only: the embedded warehouse opens read-only, so DuckDB
    # itself also refuses file access once the cohort runs (warehouse/duckdb_backend.py);
    # an in-memory one (a test's) cannot be opened read-only, and holds no file to read.
    duck = (not args.warehouse or args.warehouse.startswith("duckdb://")) and \
        duckdb_path(args.warehouse) != ":memory:"
    try:
        cohort = load_cohort(args.sql, args.cohort_dir)
        with open_warehouse(args.warehouse, **({"read_only": True} if duck else {})) as wh:
            table = cohort.run(wh, args.param)
        filter_set = cohort_to_filter(table)
    except (DicomDeidError, OSError) as exc:
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    filter_set.write(args.out)
    levels = {level: len(filter_set.by_level(level))
              for level in ("study", "series", "instance")}
    print(f"wrote {len(filter_set)} filter line(s) to {args.out} "
          f"({', '.join(f'{k}: {v}' for k, v in levels.items())})")
    return EXIT_OK


def _synth(args: argparse.Namespace) -> int:
    from dicom_deid.synth import generate

    key = generate(args.output, patients=args.patients, seed=args.seed,
                   instances_per_series=args.instances, small=args.small,
                   bad_inputs=not args.no_bad, duplicates=not args.no_duplicates)
    print(f"wrote {len(key.files)} DICOM files and {len(key.bad_inputs)} bad inputs "
          f"under {args.output / 'dicom'}; answer key {args.output / 'answer_key.json'}")
    return EXIT_OK


def _keygen(args: argparse.Namespace) -> int:
    try:
        generate_key_file(args.output, overwrite=args.force)
    except KeyConfigError as exc:
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.vault:
        print(f"wrote a new vault key to {args.output} (keep it secret and apart from the "
              "pseudonym key: it opens the mapping; deleting it makes the mapping unreadable)")
    elif args.restricted:
        print(f"wrote a new restricted key to {args.output} (keep it secret: it opens the "
              "warehouse's restricted file; point $DICOM_DEID_RESTRICTED_KEY_FILE at it)")
    else:
        print(f"wrote a new key to {args.output} (keep it secret; pseudonyms depend on it)")
    return EXIT_OK


def _os_user() -> str:
    """The operating-system user running the command ("" when it cannot be told)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        return ""


def _withdraw(args: argparse.Namespace) -> int:
    from dicom_deid.pipeline.projects import projects_dir
    from dicom_deid.pipeline.settings import PipelineSettings
    from dicom_deid.pipeline.withdraw import LEVELS, project_settings, withdraw
    from dicom_deid.vault.keys import VAULT_KEY_ENV, load_vault_key

    level = next(name for name in LEVELS if getattr(args, name) is not None)
    by = args.by if args.by is not None else _os_user()
    try:
        settings = project_settings(PipelineSettings.from_env(),
                                    projects_dir(Path("projects").absolute()), args.project)
        vault_key = None
        if args.vault_key_file is not None or os.environ.get(VAULT_KEY_ENV):
            vault_key = load_vault_key(args.vault_key_file)
        result = withdraw(settings, args.project, level, getattr(args, level), args.reason,
                          by, vault_key)
    except (DicomDeidError, OSError) as exc:
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    value = getattr(args, level).strip()
    if result["status"] == "unchanged":
        print(f"nothing to do: {level} {value} of project {args.project} was withdrawn "
              f"already ({result['withdrawal_id'] or 'held back'}); nothing changed")
        return EXIT_OK
    print(f"withdrew {level} {value} from project {args.project}: "
          f"{result['files_removed']} file(s) removed from {result['tree']} (release "
          f"{result['release']}, {result['files_left']} file(s) left), "
          f"{result['metadata_rows_deleted']} deid_metadata row(s) deleted, "
          f"{result['ledger_rows_withdrawn']} ledger row(s) marked withdrawn; "
          f"{result['originals_blocked']} original identifier(s) recorded, so files of it "
          "that arrive later are held back")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dicom-deid`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handlers = {"deidentify": _deidentify, "synth": _synth, "keygen": _keygen,
                "cohort": _cohort, "export-metadata": _export_metadata, "query": _query,
                "withdraw": _withdraw, "reidentify": reidentify, "vault": vault,
                "audit": audit, "pseudonymize": pseudonymize, "warehouse": warehouse_cmd}
    return handlers[args.command](args)


def _terminated(main_pid: int) -> Callable[[int, object], None]:
    """SIGTERM as SIGINT is taken: the command unwinds (a batch removes the outputs its
    workers staged and nobody published) and exits 143. A forked worker keeps the
    default: it dies at once, as its pool expects."""
    def handler(signum: int, _frame: object) -> None:
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise SystemExit(128 + signum)

    return handler


def run() -> NoReturn:
    """The ``dicom-deid`` console script: :func:`main`, then exit with the heap frozen, so
    that shutdown's garbage collections skip it (about 30 ms after a 5,000-file run)."""
    signal.signal(signal.SIGTERM, _terminated(os.getpid()))
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
