#!/usr/bin/env bash
# The whole test suite against the real services (PostgreSQL, Redis, SeaweedFS S3, the search
# server, real Celery workers). Installs and starts what it needs. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"

scripts/setup.sh
scripts/services.sh start
set +e
"$VENV/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$status"
