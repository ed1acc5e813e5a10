"""The exceptions of a step and of the state machine, at the bottom of the engine: the runners
raise them and the life cycle catches them, and neither imports the other to do so."""

from __future__ import annotations

from django.db import connection
from django.db.utils import InterfaceError as DatabaseInterfaceError
from django.db.utils import OperationalError as DatabaseOperationalError

from imageflow.outages import unavailable_service


class InvalidTransition(Exception):
    """A move that the state machine table does not allow (a programming error)."""


class TransientStepError(Exception):
    """A failure worth retrying: the object store or another service was briefly unavailable."""


class StepFailure(Exception):
    """A permanent failure of a step, with a message for the user."""


def is_transient(exc: BaseException) -> bool:
    from urllib3.exceptions import HTTPError as Urllib3HTTPError

    if isinstance(exc, (TransientStepError, DatabaseInterfaceError)):
        return True
    if isinstance(exc, DatabaseOperationalError):
        # the database was unreachable or restarted; the step can simply run again (not inside a
        # transaction, which the error has broken)
        return not connection.in_atomic_block
    if isinstance(exc, (ConnectionError, TimeoutError, Urllib3HTTPError)):
        return True
    return unavailable_service(exc) is not None
