#!/usr/bin/env bash
# The whole test suite against the real services (PostgreSQL, Redis, SeaweedFS S3, the search
# server, real Celery workers). Installs and starts what it needs. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"

scripts/setup.sh
scripts/services.sh start
# A queue and Redis key prefixes of this run's own: a `make run` worker, or another test run on
# the same Redis, must not take this run's tasks or see its events (and the other way round).
run_id="test-$$"
export CELERY_TASK_DEFAULT_QUEUE="${CELERY_TASK_DEFAULT_QUEUE:-imageflow-$run_id}"
export CHANNEL_LAYER_PREFIX="${CHANNEL_LAYER_PREFIX:-imageflow-$run_id}"
export CACHE_KEY_PREFIX="${CACHE_KEY_PREFIX:-imageflow-$run_id}"
# The test process also hosts in-process Celery workers (threads that never end a request, so
# they would keep pooled connections for good): it uses connections as a worker process does.
# The web servers the reliability tests start use the pool, as `make run`'s do.
export DATABASE_POOL="${DATABASE_POOL:-false}"
set +e
"$VENV/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$status"
