"""``dicom-deid warehouse rekey``: move the embedded warehouse's restricted file to a new
restricted key (the file is copied under the new key, then swapped in whole)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dicom_deid.errors import DicomDeidError
from dicom_deid.keyfile import load_key

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_REFUSED = 0, 1


def add_parser(sub: Any) -> None:
    """The ``warehouse`` command."""
    w = sub.add_parser("warehouse", help="manage the embedded warehouse's restricted file")
    wsub = w.add_subparsers(dest="warehouse_command", required=True)
    r = wsub.add_parser(
        "rekey", help="re-encrypt the restricted file under a new restricted key",
        description="Copy <name>_restricted.duckdb under the new key and swap it in. Stop "
                    "the pipeline first: no other process may have the warehouse open.")
    r.add_argument("--warehouse", default=None,
                   help="duckdb:// URL of the analysts' file (default: the data folder's)")
    r.add_argument("--old-key-file", type=Path, required=True)
    r.add_argument("--new-key-file", type=Path, required=True)


def run(args: argparse.Namespace) -> int:
    """Rekey the restricted file; prints the new key's id, never a key."""
    from dicom_deid.warehouse.base import restricted_path
    from dicom_deid.warehouse.factory import duckdb_path
    from dicom_deid.warehouse.restricted_file import rekey, restricted_key_id

    try:
        old = load_key(args.old_key_file, what="old restricted key")
        new = load_key(args.new_key_file, what="new restricted key")
        path = restricted_path(str(duckdb_path(args.warehouse)))
        rekey(path, old, new)
    except DicomDeidError as exc:
        print(f"dicom-deid: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"re-encrypted {Path(path).name} under restricted key {restricted_key_id(new)}; "
          "point $DICOM_DEID_RESTRICTED_KEY_FILE at the new key")
    return EXIT_OK
