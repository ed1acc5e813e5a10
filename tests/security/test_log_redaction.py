"""No credential from a URL reaches a log line in clear: uvicorn's access log and WebSocket
handshake lines, and Django's loggers, redact token/ticket/password query values."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest
import websockets
from rest_framework.authtoken.models import Token
from uvicorn.logging import AccessFormatter

from imageflow.log_redaction import RedactSecretsFilter, redact
from tests.factories import UserFactory
from tests.security.raw_http import request


@pytest.mark.parametrize("text, expected", [
    ("/ws/executions/1/?token=abc123", "/ws/executions/1/?token=[redacted]"),
    ("/e/?after=3&ticket=t-1_x&stream=1", "/e/?after=3&ticket=[redacted]&stream=1"),
    ("/e/?Token=abc&access_token=def", "/e/?Token=[redacted]&access_token=[redacted]"),
    ("login password=hunter2 ok", "login password=[redacted] ok"),
    # not a credential parameter: kept
    ("/e/?csrftoken=x&tokens=3&after=9", "/e/?csrftoken=x&tokens=3&after=9"),
])
def test_redact_replaces_only_credential_values(text, expected):
    assert redact(text) == expected


def test_the_filter_keeps_uvicorns_access_record_formattable():
    # given a record as uvicorn's access logger writes it (five positional arguments)
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/api/v1/executions/x/events/?token=0123abcd&after=2",
                                "1.1", 401), None)
    assert RedactSecretsFilter().filter(record) is True
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False).format(record)
    assert line == '127.0.0.1:5000 - "GET /api/v1/executions/x/events/?token=[redacted]&after=2 HTTP/1.1" 401 Unauthorized'


def _wait_for_log(server, needle: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = server.log()
        if needle in text:
            return text
        time.sleep(0.05)
    return server.log()


def test_the_live_servers_access_and_handshake_lines_never_show_a_token(uvicorn_server):
    key = Token.objects.create(user=UserFactory()).key
    marker = uuid.uuid4().hex
    # an HTTP request and a WebSocket handshake with the token in the URL (both are refused)
    response = request(uvicorn_server.port, "GET", f"/api/v1/executions/{uuid.uuid4()}/events/?token={key}&m={marker}",
                       headers={"Connection": "close"})
    assert response.status == 401

    async def handshake():
        async with websockets.connect(f"ws://127.0.0.1:{uvicorn_server.port}/ws/executions/{uuid.uuid4()}/"
                                      f"?token={key}&m={marker}ws") as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code

    assert asyncio.run(handshake()) == 4401
    log = _wait_for_log(uvicorn_server, f"m={marker}ws")
    # then both lines were logged, with the token redacted
    lines = [line for line in log.splitlines() if marker in line]
    assert len(lines) >= 2, log[-2000:]
    assert any("GET /api/v1/executions/" in line and f"token=[redacted]&m={marker}" in line for line in lines)
    assert any("WebSocket /ws/executions/" in line and "token=[redacted]" in line for line in lines)
    assert key not in log
