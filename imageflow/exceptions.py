"""Domain errors shared by services of every app; the API maps them to HTTP statuses."""


class ConflictError(Exception):
    """The row exists but its state forbids the change (in use, already finished, ...): 409."""


class ServiceUnavailable(Exception):
    """A backing service (database, redis, broker, object_store, search) cannot be reached: 503
    with Retry-After (imageflow.outages)."""

    def __init__(self, service: str, message: str = "") -> None:
        super().__init__(message or f"{service} unavailable")
        self.service = service
