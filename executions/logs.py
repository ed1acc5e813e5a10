"""Structured execution log records.

`emit` is what the engine and the step runners call for every log line of a run; `emit_lines`
captures a step's own output (an external process's stderr, a built-in operation's messages).
Each record becomes a row of the durable buffer (`ExecutionLogRecord`) in the caller's
transaction when there is one, so a state change and its log line commit together and a rolled
back change leaves no orphan line. A periodic Celery task ships the rows in bulk to the search
server (`executions.logstore.shipping`); nothing is lost while the server is down.

Records also go through Python logging (logger `imageflow.executions`) for the worker's console.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

logger = logging.getLogger("imageflow.executions")

LEVELS = ("debug", "info", "warning", "error", "critical")
_ALIASES = {"warn": "warning", "fatal": "critical", "exception": "error"}
MAX_MESSAGE_CHARS = 32_000


def normalize_level(level: str) -> str:
    value = str(level).strip().lower()
    value = _ALIASES.get(value, value)
    if value not in LEVELS:
        raise ValueError(f"Unknown log level {level!r}; use one of {', '.join(LEVELS)}.")
    return value


def _jsonable(extra: dict[str, Any]) -> dict[str, Any]:
    import json

    # Round-trip through the Django encoder so UUIDs, datetimes and Decimals are stored as text,
    # and anything that cannot be stored fails here, at the caller, not in the shipper.
    return json.loads(json.dumps(extra, cls=DjangoJSONEncoder, default=str))


def _record(*, execution_id, level, message, step_id, node_id, component, extra, timestamp):
    from executions.log_models import ExecutionLogRecord

    text = str(message)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + " …[truncated]"
    return ExecutionLogRecord(
        execution_id=execution_id, level=normalize_level(level), message=text,
        step_id=step_id, node_id=node_id or "", component=component or "",
        extra=_jsonable(extra), timestamp=timestamp or timezone.now(),
    )


def build(
    *,
    execution_id: UUID,
    level: str,
    message: str,
    step_id: UUID | None = None,
    node_id: str | None = None,
    component: str | None = None,
    **extra: Any,
):
    """A validated record, not saved: for a caller that inserts it in its own statement (the
    engine's claim and completion write their log line in the statement that changes the step);
    such a caller calls `echo` once the line is stored."""
    return _record(execution_id=execution_id, level=level, message=message, step_id=step_id, node_id=node_id,
                   component=component, extra=extra, timestamp=None)


def echoes(level: str) -> bool:
    """Whether a record of this level reaches the process's console (build it only then)."""
    return logger.isEnabledFor(logging.getLevelName(normalize_level(level).upper()))


def echo(record) -> None:
    """The record on the process's console (logger `imageflow.executions`)."""
    logger.log(
        logging.getLevelName(record.level.upper()),
        record.message,
        extra={"execution_id": str(record.execution_id), "step_id": str(record.step_id) if record.step_id else None,
               "node_id": record.node_id, "component": record.component, "fields": record.extra},
    )


def emit(
    *,
    execution_id: UUID,
    level: str,
    message: str,
    step_id: UUID | None = None,
    node_id: str | None = None,
    component: str | None = None,
    **extra: Any,
) -> None:
    record = build(execution_id=execution_id, level=level, message=message, step_id=step_id, node_id=node_id,
                   component=component, **extra)
    record.save(force_insert=True)
    echo(record)


def emit_lines(
    *,
    execution_id: UUID,
    lines: Iterable[str],
    level: str = "info",
    step_id: UUID | None = None,
    node_id: str | None = None,
    component: str | None = None,
    **extra: Any,
) -> int:
    """Stores a step's captured output, one record per non-empty line, in one INSERT.
    Returns how many records were written."""
    from executions.log_models import ExecutionLogRecord

    now = timezone.now()
    records = [
        _record(execution_id=execution_id, level=level, message=line.rstrip("\r\n"), step_id=step_id,
                node_id=node_id, component=component, extra=extra, timestamp=now)
        for line in lines if line.strip()
    ]
    if records:
        ExecutionLogRecord.objects.bulk_create(records, batch_size=1000)
    return len(records)
