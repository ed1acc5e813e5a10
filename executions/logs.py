"""Structured execution log records.

`emit` is what the engine and the step runners call for every log line of a run. Records go
through Python logging for now; the durable log store replaces the body of `emit`.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

logger = logging.getLogger("imageflow.executions")


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
    logger.log(
        logging.getLevelName(level.upper()),
        message,
        extra={"execution_id": str(execution_id), "step_id": str(step_id) if step_id else None,
               "node_id": node_id, "component": component, "fields": extra},
    )
