#!/usr/bin/env bash
# Create benchmarks/.venv-peers: the peer tools the benchmark compares against.
# Kept apart from the project's .venv so peers never pollute its dependencies.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-peers"
python="${PYTHON:-python3}"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
# pip resolves the pydicom version dicognito accepts; the benchmark reports what was used.
"$venv/bin/pip" install --quiet pydicom dicognito dcmanon psutil
"$venv/bin/pip" list --format=freeze | grep -iE '^(pydicom|dicognito|dcmanon|psutil)=' || true
