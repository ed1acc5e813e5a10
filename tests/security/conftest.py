"""A real web server for the tests that need one: uvicorn serving imageflow.asgi on a free port,
against the test database (tests that use it commit their rows: `transactional_db`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The live server's upload limit, small so an over-limit body is cheap to send.
LIVE_UPLOAD_MAX_BYTES = 6 * 1024 * 1024


@dataclass
class LiveServer:
    host: str
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_listening(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("uvicorn did not start listening")


@pytest.fixture(scope="session")
def live_server_process(django_db_setup, tmp_path_factory):
    from django.db import connection

    port = free_port()
    log_path = tmp_path_factory.mktemp("uvicorn") / "server.log"
    env = {
        **os.environ,
        "DATABASE_NAME": connection.settings_dict["NAME"],
        "FILE_UPLOAD_MAX_BYTES": str(LIVE_UPLOAD_MAX_BYTES),
        "DATABASE_POOL": "true",
        "DATABASE_POOL_MIN_SIZE": "1",
        "DATABASE_POOL_MAX_SIZE": "4",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "uvicorn"), "imageflow.asgi:application", "--host", "127.0.0.1",
             "--port", str(port), "--lifespan", "off", "--ws", "websockets-sansio"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_listening(port, process)
        yield LiveServer(host="127.0.0.1", port=port, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def uvicorn_server(live_server_process, transactional_db):
    return live_server_process


@pytest.fixture
def token_for():
    from rest_framework.authtoken.models import Token

    def make(user) -> str:
        return Token.objects.get_or_create(user=user)[0].key

    return make
