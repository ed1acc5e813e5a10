"""The pieces a fault scenario starts for itself, so that stopping one disturbs no other test run.

- `FaultProxy`: a TCP forwarder in front of a shared service (the object store). `down()` closes
  its listening socket and resets every open connection, which is what a client sees when the
  server stops (connection refused, connection reset); `up()` listens again on the same port.
  The shared server keeps running for everyone else on the machine.
- `RedisServer`: a redis-server of the scenario's own on a free port, really stopped and started.
- `WebServer`: uvicorn serving `imageflow.asgi` on the test database, as `make run` does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.executions.conftest import wait_for

wait_until = wait_for  # the name tests/deploy uses

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1") -> None:
        # listen_host: another local address (tests/deploy binds it to a veth link's root side)
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = free_port(listen_host)
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.up()

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.listen_host, self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._connections.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._connections.discard(source)
                self._connections.discard(sink)


class RedisServer:
    def __init__(self) -> None:
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_for(answers, timeout=10, interval=0.05, what="redis-server answering")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # as a crash or an operator's kill -9 would: nothing is saved
            self.process.wait(timeout=10)
        self.process = None


class WebServer:
    """uvicorn on the test database with `env` overrides; `base` is its URL."""

    def __init__(self, *, database: str, env: dict[str, str] | None = None, workers: int = 1) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = ROOT / "var" / "log" / f"reliability-web-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("wb")
        # Served as `make run` serves it: a database pool per process (the test process has it off).
        # No per-token rate limit: the load tests share one token among up to 200 clients to load
        # the service, not its limiter (tests/accounts/test_rate_limit.py tests that).
        full_env = {**os.environ, "DATABASE_NAME": database, "DEBUG": "false", "DATABASE_POOL": "true",
                    "API_TOKEN_RATE_LIMIT": "", **(env or {})}
        self.process = subprocess.Popen(
            [str(VENV_BIN / "uvicorn"), "imageflow.asgi:application", "--host", "127.0.0.1", "--port", str(self.port),
             "--lifespan", "off", "--workers", str(workers), "--no-access-log"],
            cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"web server exited: {self.log_path.read_text()[-2000:]}")
            try:
                requests.get(f"{self.base}/api/schema/", timeout=2)
                return True
            except requests.RequestException:
                return False

        wait_for(answers, timeout=40, what="web server answering")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]
