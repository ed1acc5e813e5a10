#!/usr/bin/env bash
# The whole system on this machine: dependencies, services, schema, demo data, a Celery worker
# (with the periodic sweeps) and the web server (admin, API, WebSockets) on 127.0.0.1:8000.
# Ctrl-C stops the worker and the web server; `scripts/services.sh stop` stops the services.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
WORKER_CONCURRENCY="${WORKER_CONCURRENCY:-2}"
# Web processes: one per core (at least 2), as in production (docs/reliability.md, "Serving"). Each
# holds at most DATABASE_POOL_MAX_SIZE (10) database connections.
WEB_CONCURRENCY="${WEB_CONCURRENCY:-$(( $(nproc) > 2 ? $(nproc) : 2 ))}"

scripts/setup.sh
scripts/services.sh start

PY="$VENV/bin/python"
"$PY" manage.py migrate --noinput
"$PY" manage.py collectstatic --noinput -v0
"$PY" manage.py ensure_demo_user
if "$PY" manage.py help load_demo >/dev/null 2>&1; then
  "$PY" manage.py load_demo
fi

mkdir -p var/log var/run
# Reuse database connections across tasks (see CELERY_DB_REUSE_MAX in settings.py).
CELERY_DB_REUSE_MAX="${CELERY_DB_REUSE_MAX:-1000}" \
"$VENV/bin/celery" -A imageflow worker --beat --loglevel=INFO --concurrency="$WORKER_CONCURRENCY" \
  --schedule="$ROOT/var/run/celerybeat-schedule" >>var/log/celery.log 2>&1 &
WORKER_PID=$!
echo "$WORKER_PID" > var/run/celery.pid
trap 'kill "$WORKER_PID" 2>/dev/null || true; wait "$WORKER_PID" 2>/dev/null || true' EXIT INT TERM
echo "run: Celery worker started (pid $WORKER_PID, log var/log/celery.log)"
echo "run: $WEB_CONCURRENCY web processes; admin http://$HOST:$PORT/admin/   API http://$HOST:$PORT/api/v1/   docs http://$HOST:$PORT/api/docs/"
# websockets-sansio delivered progress events with the lowest latency here (bench/live_latency.py).
"$VENV/bin/uvicorn" imageflow.asgi:application --host "$HOST" --port "$PORT" --lifespan off --ws websockets-sansio \
  --workers "$WEB_CONCURRENCY"
