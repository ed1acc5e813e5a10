#!/bin/sh
# Container entrypoint of every role: starts with an empty prometheus-client multiprocess
# directory (files left by an earlier container would be summed into the new one's metrics),
# then runs the role's command.
set -eu
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  find "$PROMETHEUS_MULTIPROC_DIR" -mindepth 1 -maxdepth 1 -name '*.db' -delete
fi
exec "$@"
