"""Domain errors shared by services of every app; the API maps them to HTTP statuses."""

from __future__ import annotations

from typing import Any


class ConflictError(Exception):
    """The row exists but its state forbids the change (in use, already finished, ...): 409."""


class ServiceUnavailable(Exception):
    """A backing service (database, redis, broker, object_store, search) cannot be reached: 503
    with Retry-After (imageflow.outages)."""

    def __init__(self, service: str, message: str = "") -> None:
        super().__init__(message or f"{service} unavailable")
        self.service = service


class DagValidationError(Exception):
    """Every problem found in a pipeline definition (raised by registry.dag.validate_definition, the
    API answers it 400 per field); `errors` items are {"node", "field", "message"}."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__(self._summary())

    def _summary(self) -> str:
        shown = [f"{e['field']}: {e['message']}" for e in self.errors[:10]]
        more = f" (and {len(self.errors) - 10} more)" if len(self.errors) > 10 else ""
        return "Invalid pipeline definition: " + "; ".join(shown) + more
