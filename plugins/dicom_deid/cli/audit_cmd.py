"""``dicom-deid audit verify AUDIT``: check a re-identification audit log's chain.

Exit 0 when every record's MAC, the sequence, the chain and the head file check out;
1 naming the first bad record when one was changed, removed, inserted or reordered (or
the vault key is wrong: the first record fails then); 2 when there is no key or no log.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dicom_deid.errors import DicomDeidError
from dicom_deid.vault.audit import verify
from dicom_deid.vault.keys import VAULT_KEY_ENV, load_vault_key

__all__ = ["add_parser", "run"]

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_USAGE = 2

EPILOG = """exit codes: 0 the chain is intact; 1 it is not (the first bad record is named;
a wrong vault key fails at record 1); 2 no vault key, or no audit log at AUDIT."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit`` (with its sub-command ``verify``) to the ``dicom-deid`` parser."""
    a = sub.add_parser("audit", help="check the re-identification audit log",
                       description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    a.set_defaults(handler=run)
    actions = a.add_subparsers(dest="audit_command", required=True)
    v = actions.add_parser("verify", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           help="check every record's MAC, the chain and the head file")
    v.add_argument("audit", type=Path, metavar="AUDIT",
                   help="the audit log (JSON lines; AUDIT.head beside it)")
    v.add_argument("--vault-key-file", type=Path, default=None, metavar="KEY",
                   help=f"the vault key file; else ${VAULT_KEY_ENV}")


def run(args: argparse.Namespace) -> int:
    """Run ``audit verify``: print the outcome, return the exit code."""
    path: Path = args.audit
    try:
        key = load_vault_key(args.vault_key_file)
        report = verify(path, key)
    except DicomDeidError as exc:  # no key or no log: PHI-free messages by contract
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if report.ok:
        print(f"audit {path}: {report.records} record(s), chain intact")
        return EXIT_OK
    where = f"record {report.first_bad}: " if report.first_bad is not None else ""
    print(f"audit {path}: {where}{report.problem}", file=sys.stderr)
    return EXIT_BROKEN
