"""Re-identification: the originals behind pseudonymous identifiers, audited first.

The one way back from a pseudonym to its original, for the command line and the
re-identification DAG alike: a lookup needs the vault key (the mapping's identifying
values are sealed or encrypted under it), a requester and a purpose, and appends its
record to the tamper-evident audit (:mod:`.audit`) *before* it returns anything: no
audit record, no originals.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dicom_deid.errors import KeyConfigError

from .audit import AuditEntry, append, request_digest
from .columns import decrypt_columns, is_encrypted, rows_under
from .envelope import is_sealed, read_sealed_table
from .keys import vault_key_id

if TYPE_CHECKING:
    import pyarrow as pa

    from dicom_deid.warehouse.base import Warehouse

__all__ = ["KINDS", "Answer", "from_file", "from_warehouse", "reidentify", "write_answer"]

#: What may be asked for: kind -> (the mapping's pseudonym column, its original column).
KINDS: dict[str, tuple[str, str]] = {
    "patient_id": ("patient_id", "original_patient_id"),
    "accession": ("accession", "original_accession"),
    "study_uid": ("study_uid", "original_study_uid"),
    "series_uid": ("series_uid", "original_series_uid"),
    "sop_uid": ("sop_uid", "original_sop_uid"),
}
_TEXT_MAX = {"requester": 100, "purpose": 300}
_PROJECT = re.compile(r"[a-z0-9_]+")


@dataclass(frozen=True)
class Answer:
    """The originals found (kind, pseudonym, original), and how many were asked."""

    rows: list[tuple[str, str, str]]
    asked: int

    @property
    def found(self) -> int:
        return len({(k, p) for k, p, _ in self.rows})

    @property
    def missing(self) -> int:
        return self.asked - self.found


def _text(value: str, name: str) -> str:
    text = " ".join(str(value or "").split())
    if not text or len(text) > _TEXT_MAX[name] or not text.isprintable():
        raise KeyConfigError(f"{name} is required: at most {_TEXT_MAX[name]} printable "
                             "characters")
    return text


def from_file(path: Path, vault_key: bytes) -> tuple[pa.Table, str]:
    """A sealed mapping file's table, and its name for the audit."""
    if not is_sealed(path):
        raise KeyConfigError(f"{path.name} is not sealed under a vault key: a plain mapping "
                             "needs no re-identification (and gets no audit)")
    return read_sealed_table(path, vault_key), path.name


#: A project's own ``deid_mapping`` rows: those of the batches that released files into
#: its tree (the ledger's ``batch_id`` is the mapping's ``run_id``; a batch is one
#: project's), whatever their status now.
_PROJECT_MAPPING = (
    "SELECT * FROM deid_mapping WHERE run_id IN (SELECT DISTINCT batch_id FROM deid_ledger "
    "WHERE project = @project)")


def from_warehouse(warehouse: Warehouse, vault_key: bytes, source: str, *,
                   project: str | None = None) -> tuple[pa.Table, str]:
    """The ``deid_mapping`` rows under ``vault_key``, still encrypted (:func:`reidentify`
    opens the rows asked for; another project's key opens its own rows, and rows loaded
    in clear are not re-identified under audit).

    ``project``: only that project's rows (of the batches its ledger records), so that a
    pseudonym another project released is not found, even where both projects' mappings
    are under one vault key (the deployment's default); the source recorded in the audit
    then names the project. None: every project's rows under the key (the command line's
    ``--warehouse``, for whoever holds the vault key file)."""
    if project is None:
        table = rows_under(warehouse.query("SELECT * FROM deid_mapping"), vault_key)
    else:
        if not _PROJECT.fullmatch(project):
            raise KeyConfigError("project must be a project name (a-z, 0-9 and _)")
        table = rows_under(warehouse.run_cohort(_PROJECT_MAPPING, {"project": project}),
                           vault_key)
        source = f"{source} (project {project})"
    if not table.num_rows:
        whose = f" of project {project}" if project is not None else ""
        raise KeyConfigError(f"no deid_mapping row{whose} is encrypted under this vault key "
                             f"(key id {vault_key_id(vault_key)}): the wrong key, a mapping "
                             "loaded without one, or nothing released")
    return table, source


def _asked(asked: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    unknown = sorted(set(asked) - set(KINDS))
    if unknown:
        raise KeyConfigError(f"unknown kind(s) {', '.join(unknown)[:60]}: one of "
                             f"{', '.join(KINDS)}")
    clean = {k: sorted({str(v).strip() for v in values if str(v).strip()})
             for k, values in asked.items()}
    clean = {k: v for k, v in clean.items() if v}
    if not clean:
        raise KeyConfigError("nothing asked: give at least one pseudonymous identifier")
    return clean


def reidentify(table: pa.Table, source: str, asked: Mapping[str, Iterable[str]], *,
               requester: str, purpose: str, vault_key: bytes, audit: Path) -> Answer:
    """Look ``asked`` up in the (opened) mapping ``table``, audit the lookup in
    ``audit``, then return the originals (:class:`KeyConfigError` for a refusal)."""
    import pyarrow as pa

    requester, purpose = _text(requester, "requester"), _text(purpose, "purpose")
    wanted = _asked(asked)
    hit = [False] * table.num_rows
    for kind, values in wanted.items():
        chosen = set(values)
        hit = [h or v in chosen for h, v in zip(
            hit, table.column(KINDS[kind][0]).to_pylist(), strict=True)]
    table = table.filter(pa.array(hit, pa.bool_()))  # only these rows are opened
    if any(is_encrypted(v) for v in table.column("original_sop_uid").to_pylist()):
        table = decrypt_columns(table, vault_key)
    rows: set[tuple[str, str, str]] = set()
    for kind, values in wanted.items():
        pseudo_col, orig_col = KINDS[kind]
        chosen = set(values)
        for pseudo, orig in zip(table.column(pseudo_col).to_pylist(),
                                table.column(orig_col).to_pylist(), strict=True):
            if pseudo in chosen and orig:
                rows.add((kind, pseudo, orig))
    answered: dict[str, set[str]] = defaultdict(set)
    for kind, pseudo, _ in rows:
        answered[kind].add(pseudo)
    audit.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    append(audit, AuditEntry(
        requester=requester, purpose=purpose, kinds={k: len(v) for k, v in wanted.items()},
        found=sum(len(v) for v in answered.values()),
        request_sha256=request_digest(wanted, vault_key=vault_key), source=source,
        vault_key_id=vault_key_id(vault_key)), vault_key)
    return Answer(sorted(rows), sum(len(v) for v in wanted.values()))


def write_answer(path: Path, answer: Answer) -> None:
    """The originals as CSV (kind, pseudonym, original), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: not this one
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["kind", "pseudonym", "original"])
        writer.writerows(answer.rows)
