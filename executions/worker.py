"""How a Celery worker process talks to PostgreSQL.

Worker sessions commit asynchronously (`synchronous_commit = off`) unless
ENGINE_SYNCHRONOUS_COMMIT is on: a commit returns before its WAL record is flushed to disk,
which is most of the cost of the few small commits a step makes (its claim, its completion, its
output file rows and log lines). Nothing can be corrupted by it and every commit is visible to
other sessions at once; what a crash of PostgreSQL itself can lose is the last fraction of a
second of worker commits (at most three times wal_writer_delay), and all of it is redone by the
engine: a step whose claim or completion was lost is running with a silent worker, so the sweep
runs it again (steps are idempotent; a re-run removes the stray outputs of the lost attempt); a
run whose end was lost after its last step's completion is finished by the sweep; and shipping
marks that were lost only make the shipper send those log records again (idempotent).
Requests (starting, cancelling, retrying runs) keep synchronous commits.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connections
from django.db.backends.signals import connection_created

_enabled = False


def _session_settings(sender, connection, **kwargs) -> None:
    if connection.vendor == "postgresql" and not settings.ENGINE_SYNCHRONOUS_COMMIT:
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO OFF")


def configure_worker_sessions() -> None:
    """Called once when a worker process starts (before its pool forks)."""
    global _enabled
    if _enabled or settings.ENGINE_SYNCHRONOUS_COMMIT:
        return
    _enabled = True
    # Connections opened from now on; a prefork pool process closes what it inherited (Celery's
    # Django fixup), so every pool process's sessions have it.
    connection_created.connect(_session_settings, dispatch_uid="executions.worker.session_settings")


def recycle_connection() -> None:
    """What an engine task does with its process's database connections before it starts:
    Django's close_old_connections() (drop a connection an error broke, or one past CONN_MAX_AGE)
    without the health-check round trip that call schedules before the next query (a worker runs
    hundreds of short tasks a second on one connection). A task that finds the server gone gets
    an OperationalError and is run again (executions.tasks.step_run); by then the error has marked
    the connection, and this closes it, so the retry connects anew."""
    for conn in connections.all(initialized_only=True):
        conn.close_if_unusable_or_obsolete()
        if conn.connection is not None:
            conn.health_check_done = True  # checked by the errors above, not by a ping
