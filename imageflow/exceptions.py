"""Domain errors shared by services of every app; the API maps them to HTTP statuses."""


class ConflictError(Exception):
    """The row exists but its state forbids the change (in use, already finished, ...): 409."""
