"""The client waits out a token's rate limit (429 + Retry-After) on requests it can send again,
and gives up after RATE_LIMIT_RETRIES; a spent upload body is not sent twice."""

from __future__ import annotations

import pytest
import requests

from imageflow_client import api as api_module
from imageflow_client.api import Api, ApiError


class FakeSession:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.calls = 0

    def request(self, method, url, **kwargs):
        response = requests.Response()
        response.status_code = self.statuses[min(self.calls, len(self.statuses) - 1)]
        response.headers["Retry-After"] = "7"
        response._content = b'{"type": "throttled", "detail": "Request was throttled.", "errors": {}}'
        response.url = url
        self.calls += 1
        return response


@pytest.fixture
def sleeps(monkeypatch):
    waited: list[float] = []
    monkeypatch.setattr(api_module.time, "sleep", waited.append)
    return waited


def client_with(session: FakeSession) -> Api:
    api = Api("http://server", "key")
    api._local.session = session
    return api


def test_a_429_is_waited_out_as_retry_after_says_then_the_answer_is_used(sleeps):
    session = FakeSession([429, 429, 200])
    response = client_with(session).request("GET", "files/")
    assert (response.status_code, session.calls, sleeps) == (200, 3, [7.0, 7.0])


def test_it_gives_up_after_the_retries_with_the_servers_error(sleeps):
    session = FakeSession([429])
    with pytest.raises(ApiError) as raised:
        client_with(session).request("GET", "files/")
    assert (raised.value.status, raised.value.type) == (429, "throttled")
    assert session.calls == 1 + api_module.RATE_LIMIT_RETRIES
    assert sleeps == [7.0] * api_module.RATE_LIMIT_RETRIES


def test_a_streamed_body_is_not_sent_again(sleeps):
    session = FakeSession([429, 201])
    with pytest.raises(ApiError):
        client_with(session).request("POST", "files/", data=iter([b"x"]), expect=(201,))
    assert (session.calls, sleeps) == (1, [])
