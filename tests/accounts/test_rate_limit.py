"""The per-token rate limit: over API_TOKEN_RATE_LIMIT in a window, 429 with Retry-After, and
requests go through again in the next window; Redis unavailable lets requests through."""

from __future__ import annotations

import time

import pytest
import redis
from django.core.cache import cache

from imageflow.accounts import rate_limit
from imageflow.accounts.rates import Rate, parse_rate

pytestmark = pytest.mark.django_db


@pytest.fixture
def clock(monkeypatch):
    """time.time() of the rate limit, moved by the test (the window is a function of it)."""
    now = {"t": 1_800_000_000.0}  # the start of a 10 s window
    monkeypatch.setattr(rate_limit.time, "time", lambda: now["t"])
    return now


def test_over_the_limit_is_429_with_retry_after_then_it_recovers(owner, scoped, settings, clock):
    settings.API_TOKEN_RATE_LIMIT = "3/10s"
    token, client = scoped(owner, "read")
    _, other_client = scoped(owner, "read", name="other")

    assert [client.get("/api/v1/files/").status_code for _ in range(3)] == [200, 200, 200]
    clock["t"] += 2.5
    refused = client.get("/api/v1/files/")

    assert refused.status_code == 429
    assert refused["Retry-After"] == "8"  # ceil(10 - 2.5): the seconds left in the window
    assert refused.json()["type"] == "throttled"
    assert other_client.get("/api/v1/files/").status_code == 200  # counted per token
    assert rate_limit.usage([token]) == {token.pk: 4}

    clock["t"] += 8
    assert client.get("/api/v1/files/").status_code == 200
    assert rate_limit.usage([token]) == {token.pk: 1}


def test_the_legacy_token_is_limited_too_and_the_session_is_not(owner, api, settings, clock, client):
    settings.API_TOKEN_RATE_LIMIT = "2/10s"
    assert [api.get("/api/v1/files/").status_code for _ in range(3)] == [200, 200, 429]
    client.force_login(owner)
    assert [client.get("/api/v1/files/").status_code for _ in range(3)] == [200, 200, 200]


def test_an_empty_limit_is_no_limit(owner, scoped, settings):
    settings.API_TOKEN_RATE_LIMIT = ""
    token, client = scoped(owner, "read")
    assert all(client.get("/api/v1/files/").status_code == 200 for _ in range(5))
    assert rate_limit.usage([token]) == {token.pk: None}


def test_redis_down_lets_the_request_through(owner, scoped, settings, monkeypatch):
    """Fail open (imageflow/accounts/rate_limit.py says why): a cache outage is not an API outage."""
    settings.API_TOKEN_RATE_LIMIT = "1/min"
    token, client = scoped(owner, "read")

    def down(*args, **kwargs):
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(cache, "add", down)
    monkeypatch.setattr(cache, "get_many", down)
    assert [client.get("/api/v1/files/").status_code for _ in range(3)] == [200, 200, 200]
    assert rate_limit.usage([token]) == {token.pk: None}


@pytest.mark.parametrize("text, expected", [
    ("600/min", Rate(600, 60)), ("10/s", Rate(10, 1)), ("5000/hour", Rate(5000, 3600)), ("100/5min", Rate(100, 300)),
    ("", None), ("0/min", None),
])
def test_rates_are_read(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["600", "600/fortnight", "many/min", "600 per minute"])
def test_a_malformed_rate_stops_the_start(text):
    with pytest.raises(ValueError, match="API_TOKEN_RATE_LIMIT"):
        parse_rate(text)


def test_keys_expire_with_their_window(owner, scoped, settings):
    settings.API_TOKEN_RATE_LIMIT = "5/min"
    token, client = scoped(owner, "read")
    client.get("/api/v1/files/")
    key = f"api-rate:t:{token.pk}:{int(time.time() // 60)}"
    assert cache.get(key) == 1
    assert 0 < cache.ttl(key) <= 61
