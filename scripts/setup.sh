#!/usr/bin/env bash
# Create the virtualenv (.venv) and install the pinned requirements. Idempotent: a second run
# only installs what changed in requirements.txt.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

# Programs from Debian's packages that the project runs (installed where missing, one apt-get run):
#   dot            graphviz        the admin's DAG pictures
#   docker-compose docker-compose  tests/deploy checks deploy/compose.yaml (no container engine needed)
#   chromium       chromium        the browser tests (tests/browser, driven by Playwright's Python package)
missing=()
for pair in dot:graphviz docker-compose:docker-compose chromium:chromium; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]} with apt-get"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for pair in dot:graphviz docker-compose:docker-compose chromium:chromium; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || { echo "setup: ${pair#*:} did not install" >&2; exit 1; }
  done
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

# The `imageflow` command (client/, docs/cli.md), installed editable so the tests in tests/client
# run the code in the tree; its dependencies are pinned in requirements.txt already.
if ! "$VENV/bin/python" -c "import imageflow_client" 2>/dev/null; then
  echo "setup: installing the imageflow command from client/"
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT/client" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import imageflow_client" || { echo "setup: client/ did not install" >&2; exit 1; }
fi
