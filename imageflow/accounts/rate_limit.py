"""The per-token request rate limit: API_TOKEN_RATE_LIMIT requests per window, counted in Redis.

A fixed window per token (`api-rate:<token>:<window number>`, created with the window's length
as expiry by SET NX, then INCR), so a count costs two round trips and no key outlives its window.
Over the limit: 429 with `Retry-After` (the seconds left in the window), through DRF's Throttled,
which the API's exception handler turns into the error shape and the header.

Redis down: **fail open**, the request goes through uncounted (logged, and counted in
imageflow_service_errors_total through imageflow.outages). The limit protects the service from a
runaway client; it is not what keeps anybody out (authentication and scopes are checked against
PostgreSQL before it). Failing closed would turn a cache outage into an outage of every token
client, including the endpoints that do not need Redis at all, which is the outcome
imageflow/outages.py exists to avoid.
"""

from __future__ import annotations

import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from .rates import Rate, parse_rate

logger = logging.getLogger(__name__)


def configured_rate() -> Rate | None:
    return parse_rate(settings.API_TOKEN_RATE_LIMIT)


def _subject(auth) -> str | None:
    """What the count is kept for: the scoped token, or the legacy token of a user."""
    from rest_framework.authtoken.models import Token

    from .models import ApiToken

    if isinstance(auth, ApiToken):
        return f"t:{auth.pk}"
    if isinstance(auth, Token):
        return f"u:{auth.user_id}"
    return None  # the session (the admin, the browsable API): not limited


def _key(subject: str, window: int) -> str:
    return f"api-rate:{subject}:{window}"


def _window(rate: Rate, now: float) -> int:
    return int(now // rate.window_seconds)


def usage(tokens) -> dict:
    """{token.pk: requests counted in the current window}; None for each when Redis is down."""
    rate = configured_rate()
    tokens = list(tokens)
    if rate is None or not tokens:
        return {token.pk: None for token in tokens}
    window = _window(rate, time.time())
    keys = {_key(f"t:{token.pk}", window): token.pk for token in tokens}
    try:
        counts = cache.get_many(list(keys))
    except Exception as exc:  # noqa: BLE001 - an outage only hides the figure
        if _outage(exc) is None:
            raise
        return {token.pk: None for token in tokens}
    return {pk: int(counts.get(key, 0)) for key, pk in keys.items()}


def _outage(exc: BaseException) -> str | None:
    from imageflow.outages import unavailable_service

    return unavailable_service(exc)


class ApiTokenRateThrottle(BaseThrottle):
    """DEFAULT_THROTTLE_CLASSES: no view sets throttle_classes of its own."""

    def __init__(self) -> None:
        self.retry_after: int | None = None

    def allow_request(self, request, view) -> bool:
        rate = configured_rate()
        subject = _subject(getattr(request, "auth", None))
        if rate is None or subject is None:
            return True
        now = time.time()
        window = _window(rate, now)
        key = _key(subject, window)
        try:
            cache.add(key, 0, timeout=rate.window_seconds + 1)
            count = cache.incr(key)
        except ValueError:  # the key expired between add and incr: this request opens the next window
            return True
        except Exception as exc:  # noqa: BLE001 - fail open on an outage, see the module docstring
            service = _outage(exc)
            if service is None:
                raise
            logger.warning("rate limit not applied: %s unavailable (%s)", service, exc)
            return True
        if count <= rate.requests:
            return True
        self.retry_after = max(1, math.ceil((window + 1) * rate.window_seconds - now))
        return False

    def wait(self) -> float | None:
        return self.retry_after
