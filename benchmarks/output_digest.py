"""Digest of everything the command line writes for a fixed corpus, key and configs.

A refactoring tool, not a benchmark: run it before and after a change that must not
alter outputs, and compare the two JSON files (``--compare OLD.json``). It drives only
the ``dicom-deid`` console script (the stable interface), so it works across changes to
the package's layout. Digests cover every de-identified file's bytes, the mapping and
errors files' rows, and the metadata export's rows (the run-specific columns
``ingest_run_id``, ``mtime`` and ``source_uri`` aside; the corpus's files get fixed
modification times).

    python benchmarks/output_digest.py --out before.json
    python benchmarks/output_digest.py --out after.json --compare before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

KEY_HEX = "5e" * 32  # a fixed test key: digests must not depend on a random one
GOOGLE_CONFIG = {
    "dicomTagConfig": {
        "profileType": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
        "actions": [
            {"queries": ["PatientSex", "00101010"], "keepTag": {}},
            {"queries": ["ImageComments", "StudyDescription"], "cleanTextTag": {}},
            {"queries": ["OperatorsName"], "resetTag": {}},
            {"queries": ["PN"], "removeTag": {}},
        ],
        "options": {"primaryIds": "REGEN", "cleanDescriptors": {}},
    },
    "text": {"transformations": [
        {"infoTypes": ["PERSON_NAME"], "replaceWithInfoTypeConfig": {}},
        {"infoTypes": ["DATE"], "dateShiftConfig": {}},
    ]},
    "dicomDeid": {"ps315Options": ["RetainLongitudinalModifiedDates"], "idPrefix": "HOSP"},
}
# (name, corpus, CLI arguments after INPUT OUTPUT)
CONFIGS: list[tuple[str, str, list[str]]] = [
    ("basic", "main", []),
    ("clean-descriptors", "main", ["--option", "CleanDescriptors"]),
    ("retain-many", "main", ["--option", "RetainSafePrivate", "--option", "RetainUIDs",
                             "--option", "RetainDeviceIdentity",
                             "--option", "RetainInstitutionIdentity",
                             "--option", "RetainPatientCharacteristics"]),
    ("modified-dates-clean-all", "main", [
        "--option", "RetainLongitudinalModifiedDates", "--option", "CleanStructuredContent",
        "--option", "CleanGraphics", "--option", "CleanDescriptors"]),
    ("tag-contents", "main", ["--profile", "deidentify-tag-contents"]),
    ("minimal-keep-list", "main", ["--profile", "minimal-keep-list"]),
    ("google", "main", ["--config", "{google}"]),
    ("relative-layout", "main", ["--layout", "relative"]),
    ("sensitive-text", "small", ["--text-redaction", "REDACT_SENSITIVE_TEXT"]),
]


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 3):  # 3: some inputs failed (the corpus has bad ones)
        sys.exit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows_digest(rows: list[dict[str, Any]]) -> str:
    lines = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _corpus(work: Path, dd: str, name: str, small: bool) -> Path:
    root = work / f"corpus-{name}"
    _run([dd, "synth", str(root), "--patients", "4" if small else "12", "--seed", "7",
          *(["--small"] if small else [])])
    for p in (root / "dicom").rglob("*"):
        if p.is_file():
            os.utime(p, (1_700_000_000, 1_700_000_000))
    return root / "dicom"


def digest(dd: str, work: Path) -> dict[str, Any]:
    """Run every configuration and the metadata export; return their digests."""
    key = work / "key.hex"
    key.write_text(KEY_HEX)
    google = work / "google.json"
    google.write_text(json.dumps(GOOGLE_CONFIG))
    corpora = {"main": _corpus(work, dd, "main", False), "small": _corpus(work, dd, "small", True)}
    result: dict[str, Any] = {}
    for name, corpus, extra in CONFIGS:
        out, mapping, errors = work / f"out-{name}", work / f"{name}.parquet", work / f"{name}.csv"
        args = [a.replace("{google}", str(google)) for a in extra]
        _run([dd, "deidentify", str(corpora[corpus]), str(out), "--key-file", str(key),
              "--workers", "2", "--run-id", "digest", "--no-progress", "--mapping",
              str(mapping), "--plain-mapping", "--errors", str(errors), *args])
        entry: dict[str, Any] = {"files": _tree_digest(out)}
        entry["mapping"] = _rows_digest(pq.read_table(mapping).to_pylist())
        entry["errors"] = (_rows_digest(pacsv.read_csv(errors).to_pylist())
                           if errors.exists() else None)
        result[name] = entry
    for corpus, source in corpora.items():
        out = work / f"metadata-{corpus}"
        _run([dd, "export-metadata", str(source), "--out", str(out), "--no-load",
              "--run-id", "digest", "--ingest-date", "2026-01-01", "--workers", "2"])
        rows = []
        for part in sorted(out.rglob("*.parquet")):
            for row in pq.read_table(part).to_pylist():
                for column in ("ingest_run_id", "mtime", "source_uri"):
                    row.pop(column, None)
                rows.append(row)
        result[f"export-{corpus}"] = {"rows": len(rows), "digest": _rows_digest(rows)}
    return result


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Differences between two digests, one line each (empty: identical)."""
    diffs = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if not isinstance(a, dict) or not isinstance(b, dict) or "files" not in a:
            diffs.append(f"{name}: {a!r:.80} != {b!r:.80}")
            continue
        for field in ("mapping", "errors"):
            if a[field] != b[field]:
                diffs.append(f"{name}: {field} differs")
        fa, fb = a["files"], b["files"]
        for path in sorted(set(fa) | set(fb)):
            if fa.get(path) != fb.get(path):
                diffs.append(f"{name}: {path} differs")
    return diffs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="digest JSON to write")
    p.add_argument("--compare", type=Path, help="an earlier digest to compare with")
    p.add_argument("--dicom-deid", default=str(Path(sys.executable).with_name("dicom-deid")))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="dd-digest-") as tmp:
        result = digest(args.dicom_deid, Path(tmp))
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True))
    files = sum(len(v["files"]) for v in result.values() if "files" in v)
    print(f"{len(CONFIGS)} configurations, {files} output files digested -> {args.out}")
    if args.compare:
        diffs = compare(json.loads(args.compare.read_text()), result)
        for line in diffs[:50]:
            print(line)
        print("identical" if not diffs else f"{len(diffs)} difference(s)")
        sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
