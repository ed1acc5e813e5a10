#!/usr/bin/env bash
# Create the virtualenv (.venv) and install the pinned requirements. Idempotent: a second run
# only installs what changed in requirements.txt.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing requirements into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -m pip install --quiet -r "$ROOT/requirements.txt" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import django, celery, storages, elasticsearch_dsl" \
    || { echo "setup: requirements did not install" >&2; exit 1; }
  echo "$want" > "$stamp"
else
  echo "setup: requirements already installed"
fi
