"""``dicom-deid reidentify`` and ``dicom-deid vault``: the legitimate way back, audited.

Re-identification reads the mapping (a sealed mapping file, or the warehouse's
``deid_mapping``), needs the vault key, a purpose and a requester, and appends one record
to the tamper-evident audit (:mod:`dicom_deid.vault.audit`) *before* it shows anything:
no audit record, no originals.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dicom_deid.errors import DicomDeidError, KeyConfigError

from .table import print_table

__all__ = ["KINDS", "add_parsers", "reidentify", "vault"]

#: What may be asked for: option -> (the mapping's pseudonym column, its original column).
KINDS: dict[str, tuple[str, str]] = {
    "patient_id": ("patient_id", "original_patient_id"),
    "accession": ("accession", "original_accession"),
    "study_uid": ("study_uid", "original_study_uid"),
    "series_uid": ("series_uid", "original_series_uid"),
    "sop_uid": ("sop_uid", "original_sop_uid"),
}
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
_TEXT_MAX = {"requester": 100, "purpose": 300}


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
    rot = vsub.add_parser("rotate", help="re-encrypt sealed files under a new vault key")
    rot.add_argument("files", type=Path, nargs="+", help="sealed mapping files")
    rot.add_argument("--old-key-file", type=Path, required=True)
    rot.add_argument("--new-key-file", type=Path, required=True)


def _text(args: argparse.Namespace, name: str) -> str:
    value = " ".join(str(getattr(args, name) or "").split())
    if not value or len(value) > _TEXT_MAX[name] or not value.isprintable():
        raise KeyConfigError(f"--{name} is required: at most {_TEXT_MAX[name]} printable "
                             "characters")
    return value


def _asked(args: argparse.Namespace) -> dict[str, list[str]]:
    asked: dict[str, list[str]] = {k: [v.strip() for v in getattr(args, k) if v.strip()]
                                   for k in KINDS}
    if args.ids_file is not None:
        with open(args.ids_file, newline="", encoding="utf-8") as fh:
            for i, row in enumerate(csv.DictReader(fh), start=2):
                kind, value = (row.get("kind") or "").strip(), (row.get("value") or "").strip()
                if kind not in KINDS:
                    raise KeyConfigError(f"{args.ids_file.name}: line {i}: kind must be one "
                                         f"of {', '.join(KINDS)}")
                if value:
                    asked[kind].append(value)
    asked = {k: sorted(set(v)) for k, v in asked.items() if v}
    if not asked:
        raise KeyConfigError("nothing asked: give --patient-id, --accession, --study-uid, "
                             "--series-uid, --sop-uid or --ids-file")
    return asked


def _mapping(args: argparse.Namespace, vault_key: bytes) -> tuple[Any, str]:
    """The mapping table and what the audit records as its source (no credentials)."""
    if args.mapping is not None:
        from dicom_deid.vault.envelope import is_sealed, read_sealed_table

        if not is_sealed(args.mapping):
            raise KeyConfigError(f"{args.mapping.name} is not sealed under a vault key: a "
                                 "plain mapping needs no re-identification (and gets no audit)")
        return read_sealed_table(args.mapping, vault_key), args.mapping.name
    from dicom_deid.warehouse.factory import open_warehouse

    parts = urlsplit(args.warehouse)
    source = urlunsplit(parts._replace(netloc=parts.hostname or "", query=""))
    from dicom_deid.vault.columns import decrypt_columns, is_encrypted

    with open_warehouse(args.warehouse) as wh:
        table = wh.query("SELECT * FROM deid_mapping")
    if not any(is_encrypted(v) for v in table.column("original_sop_uid").to_pylist()):
        raise KeyConfigError("deid_mapping's original identifiers are not encrypted (loaded "
                             "without a vault key): nothing to re-identify under audit")
    return decrypt_columns(table, vault_key), source


def _lookup(table: Any, asked: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    """(kind, pseudonym, original) for every asked value found (each pair once)."""
    found: set[tuple[str, str, str]] = set()
    for kind, values in asked.items():
        pseudo_col, orig_col = KINDS[kind]
        wanted = set(values)
        for pseudo, orig in zip(table.column(pseudo_col).to_pylist(),
                                table.column(orig_col).to_pylist(), strict=True):
            if pseudo in wanted and orig:
                found.add((kind, pseudo, orig))
    return sorted(found)


def reidentify(args: argparse.Namespace) -> int:
    """The ``reidentify`` command (see the module doc)."""
    from dicom_deid.vault.audit import AuditEntry, append, request_digest
    from dicom_deid.vault.keys import load_vault_key, vault_key_id

    try:
        requester, purpose = _text(args, "requester"), _text(args, "purpose")
        asked = _asked(args)
        vault_key = load_vault_key(args.vault_key_file)
        table, source = _mapping(args, vault_key)
        rows = _lookup(table, asked)
        answered: dict[str, set[str]] = defaultdict(set)
        for kind, pseudo, _ in rows:
            answered[kind].add(pseudo)
        append(args.audit, AuditEntry(
            requester=requester, purpose=purpose,
            kinds={k: len(v) for k, v in asked.items()},
            found=sum(len(v) for v in answered.values()),
            request_sha256=request_digest(asked, vault_key=vault_key), source=source,
            vault_key_id=vault_key_id(vault_key)), vault_key)
    except (DicomDeidError, OSError) as exc:
        print(f"dicom-deid: reidentify refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    missing = sum(len(v) for v in asked.values()) - sum(len(v) for v in answered.values())
    if args.out is not None:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["kind", "pseudonym", "original"])
            writer.writerows(rows)
        print(f"{len(rows)} original(s) written to {args.out}; {missing} identifier(s) not "
              f"found; audited in {args.audit}")
    else:
        import pyarrow as pa

        print_table(pa.table({name: [r[i] for r in rows] for i, name in
                              enumerate(("kind", "pseudonym", "original"))}),
                    limit=max(50, len(rows)))
        print(f"{missing} identifier(s) not found; audited in {args.audit}", file=sys.stderr)
    return EXIT_OK if not missing else EXIT_REFUSED


def vault(args: argparse.Namespace) -> int:
    """``vault rotate``: every file re-encrypted under the new key, or none changed."""
    from dicom_deid.vault.envelope import open_sealed, reseal
    from dicom_deid.vault.keys import load_vault_key, vault_key_id

    try:
        old, new = load_vault_key(args.old_key_file), load_vault_key(args.new_key_file)
        if old == new:
            raise KeyConfigError("the new vault key is the old one")
        for path in args.files:  # every file opens with the old key before any changes
            open_sealed(path.read_bytes(), old)
        for path in args.files:
            reseal(path, old, new)
    except (DicomDeidError, OSError) as exc:
        print(f"dicom-deid: vault rotate refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{len(args.files)} file(s) re-encrypted under vault key {vault_key_id(new)} "
          f"(was {vault_key_id(old)}); the old key opens none of them now")
    return EXIT_OK
