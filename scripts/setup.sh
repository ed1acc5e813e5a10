#!/usr/bin/env bash
# Create the virtualenv (.venv) and install the pinned requirements. Idempotent: a second run
# only installs what changed in requirements.txt.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

# The admin draws DAG pictures with Graphviz's `dot` (Debian package graphviz).
if ! command -v dot >/dev/null 2>&1; then
  echo "setup: installing graphviz (dot) with apt-get"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends graphviz >/dev/null
  command -v dot >/dev/null 2>&1 || { echo "setup: graphviz did not install" >&2; exit 1; }
fi

# tests/deploy checks deploy/compose.yaml with `docker-compose config` (Debian's docker-compose
# package; no container engine is needed to check a file).
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "setup: installing docker-compose with apt-get"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
  command -v docker-compose >/dev/null 2>&1 || { echo "setup: docker-compose did not install" >&2; exit 1; }
fi

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
