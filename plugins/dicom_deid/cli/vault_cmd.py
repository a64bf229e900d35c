"""``dicom-deid reidentify`` and ``dicom-deid vault``: the legitimate way back, audited.

Re-identification reads the mapping (a sealed mapping file, or the warehouse's
``deid_mapping``), needs the vault key, a purpose and a requester, and appends one record
to the tamper-evident audit (:mod:`dicom_deid.vault.audit`) *before* it shows anything:
no audit record, no originals.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dicom_deid.errors import ConfigError, DicomDeidError, KeyConfigError
from dicom_deid.vault.reidentify import KINDS

from .table import print_table

__all__ = ["add_parsers", "reidentify", "vault"]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def add_parsers(sub: Any) -> None:
    """The ``reidentify`` and ``vault`` commands."""
    r = sub.add_parser(
        "reidentify", help="look up the originals of pseudonymous IDs/UIDs (vault key, "
                           "purpose, requester; every lookup is audited)",
        description="Print or write the original identifiers behind pseudonymous ones. "
                    "Needs the vault key; refused without --purpose and --requester; "
                    "appends one record to the audit before anything is shown.")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--mapping", type=Path, help="a mapping file (`deidentify --mapping`)")
    src.add_argument("--warehouse", help="a warehouse URL: its deid_mapping table")
    r.add_argument("--project", default=None,
                   help="with --warehouse: only this project's mapping rows (the batches its "
                        "ledger records), so another project's pseudonyms are not found")
    r.add_argument("--vault-key-file", type=Path, default=None,
                   help="the vault key (default: $DICOM_DEID_VAULT_KEY)")
    r.add_argument("--purpose", required=True, help="why (recorded in the audit)")
    r.add_argument("--requester", required=True, help="who asked (recorded in the audit)")
    r.add_argument("--audit", type=Path, required=True,
                   help="the audit log (JSON lines, hash-chained) to append to")
    for kind in KINDS:
        r.add_argument(f"--{kind.replace('_', '-')}", dest=kind, action="append", default=[],
                       metavar="PSEUDONYM", help=f"a pseudonymous {kind} (repeatable)")
    r.add_argument("--ids-file", type=Path, default=None,
                   help=f"a CSV with columns kind,value (kind: {', '.join(KINDS)})")
    r.add_argument("--out", type=Path, default=None,
                   help="write the originals to this CSV (mode 0600) instead of printing them")

    v = sub.add_parser("vault", help="manage sealed mapping files (rotate the vault key)")
    vsub = v.add_subparsers(dest="vault_command", required=True)
    rot = vsub.add_parser("rotate", help="re-encrypt sealed files, or a warehouse's "
                                         "deid_mapping, deid_ledger and deid_withdrawals, "
                                         "under a new vault key")
    rot.add_argument("files", type=Path, nargs="*", help="sealed mapping files")
    rot.add_argument("--warehouse", default=None,
                     help="a warehouse URL: re-encrypt its deid_mapping's identifying "
                          "columns, deid_ledger's pseudonymous ones (encrypting the old key's "
                          "projects' rows still in clear) and deid_withdrawals")
    rot.add_argument("--audit", type=Path, action="append", default=[],
                     help="an audit log to chain under the new key (repeatable; checked "
                          "under the old key first)")
    rot.add_argument("--old-key-file", type=Path, required=True)
    rot.add_argument("--new-key-file", type=Path, required=True)


def _asked(args: argparse.Namespace) -> dict[str, list[str]]:
    asked: dict[str, list[str]] = {k: list(getattr(args, k)) for k in KINDS}
    if args.ids_file is not None:
        with open(args.ids_file, newline="", encoding="utf-8") as fh:
            for i, row in enumerate(csv.DictReader(fh), start=2):
                kind, value = (row.get("kind") or "").strip(), (row.get("value") or "").strip()
                if kind not in KINDS:
                    raise KeyConfigError(f"{args.ids_file.name}: line {i}: kind must be one "
                                         f"of {', '.join(KINDS)}")
                asked[kind].append(value)
    return asked


def _mapping(args: argparse.Namespace, vault_key: bytes) -> tuple[Any, str]:
    """The opened mapping and what the audit records as its source (no credentials)."""
    from dicom_deid.vault.reidentify import from_file, from_warehouse

    if args.mapping is not None:
        if args.project is not None:
            raise ConfigError("--project scopes --warehouse lookups; a mapping file is one "
                              "run's already")
        return from_file(args.mapping, vault_key)
    from dicom_deid.warehouse.factory import open_warehouse

    parts = urlsplit(args.warehouse)
    source = urlunsplit(parts._replace(netloc=parts.hostname or "", query=""))
    with open_warehouse(args.warehouse) as wh:
        return from_warehouse(wh, vault_key, source, project=args.project)


def reidentify(args: argparse.Namespace) -> int:
    """The ``reidentify`` command (see the module doc)."""
    from dicom_deid.pipeline.withdraw import check_reason
    from dicom_deid.vault.keys import load_vault_key
    from dicom_deid.vault.reidentify import reidentify as look_up
    from dicom_deid.vault.reidentify import write_answer

    try:
        purpose = check_reason(args.purpose)  # kept in the audit for good: PHI-free
        vault_key = load_vault_key(args.vault_key_file)
        table, source = _mapping(args, vault_key)
        answer = look_up(table, source, _asked(args), requester=args.requester,
                         purpose=purpose, vault_key=vault_key, audit=args.audit)
    except (DicomDeidError, OSError) as exc:
        print(f"dicom-deid: reidentify refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.out is not None:
        write_answer(args.out, answer)
        print(f"{len(answer.rows)} original(s) written to {args.out}; {answer.missing} "
              f"identifier(s) not found; audited in {args.audit}")
    else:
        import pyarrow as pa

        print_table(pa.table({name: [r[i] for r in answer.rows] for i, name in
                              enumerate(("kind", "pseudonym", "original"))}),
                    limit=max(50, len(answer.rows)))
        print(f"{answer.missing} identifier(s) not found; audited in {args.audit}",
              file=sys.stderr)
    return EXIT_OK if not answer.missing else EXIT_REFUSED


def vault(args: argparse.Namespace) -> int:
    """``vault rotate``: every file re-encrypted under the new key, or none changed."""
    from dicom_deid.vault.audit import rekey, verify
    from dicom_deid.vault.envelope import open_sealed, reseal
    from dicom_deid.vault.keys import load_vault_key, vault_key_id

    rows = withdrawals = released = 0
    try:
        if not args.files and not args.warehouse and not args.audit:
            raise KeyConfigError("give sealed files, --warehouse URL or --audit FILE")
        old, new = load_vault_key(args.old_key_file), load_vault_key(args.new_key_file)
        if old == new:
            raise KeyConfigError("the new vault key is the old one")
        for path in args.files:  # every file opens with the old key before any changes
            open_sealed(path.read_bytes(), old)
        for log in args.audit:
            report = verify(log, old)
            if not report.ok:
                raise KeyConfigError(f"{log.name} does not verify under the old key "
                                     f"(record {report.first_bad}): {report.problem}")
        if args.warehouse:
            from dicom_deid.vault.columns import (
                rotate_ledger,
                rotate_mapping,
                rotate_withdrawals,
            )
            from dicom_deid.warehouse.factory import open_warehouse

            with open_warehouse(args.warehouse) as wh, \
                    tempfile.TemporaryDirectory(prefix="dicom-deid-rotate-") as scratch:
                wh.ensure_schema()  # older tables gain original_index, the ledger's indexes
                # The ledger first: it finds the old key's projects by their mapping too.
                released = rotate_ledger(wh, old, new, Path(scratch))
                rows = rotate_mapping(wh, old, new, Path(scratch))  # ciphertext only
                withdrawals = rotate_withdrawals(wh, old, new)
        for path in args.files:
            reseal(path, old, new)
        for log in args.audit:
            rekey(log, old, new)
    except (DicomDeidError, OSError) as exc:
        print(f"dicom-deid: vault rotate refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{len(args.files)} file(s), {len(args.audit)} audit log(s), {rows} deid_mapping "
          f"row(s), {released} deid_ledger row(s) and {withdrawals} deid_withdrawals row(s) "
          "re-keyed under vault "
          f"key {vault_key_id(new)} (was {vault_key_id(old)}); the old key opens none of "
          "them now")
    return EXIT_OK
