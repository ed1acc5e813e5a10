import uuid

import elastic_transport
import pytest
from django.conf import settings
from django.test import override_settings

from executions.logstore.documents import delete_log_indices
from imageflow.search import get_client


@pytest.fixture
def search_prefix():
    """A fresh index prefix per test on the real search server; its indices are deleted after."""
    prefix = f"{settings.ELASTICSEARCH_INDEX_PREFIX}-t{uuid.uuid4().hex[:8]}"
    with override_settings(ELASTICSEARCH_INDEX_PREFIX=prefix):
        yield prefix
        client = get_client()
        try:
            delete_log_indices(client)
            client.options(ignore_status=404).indices.delete_index_template(name=f"{prefix}-logs-template")
        except elastic_transport.ConnectionError:
            pass  # a test stopped its own server: nothing left to clean


@pytest.fixture
def es(search_prefix):
    return get_client()


class SearchServer:
    """A separate osmem-server on its own port, so stopping it disturbs no other test run."""

    def __init__(self) -> None:
        import socket

        import osmem_server

        self.binary = osmem_server.resolve_binary()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> None:
        import subprocess
        import time
        import urllib.request

        self.process = subprocess.Popen([self.binary, "-addr", f"127.0.0.1:{self.port}", "-no-stdin-watch"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url, timeout=0.5).read()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"osmem-server did not answer on {self.url}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def separate_search_server():
    server = SearchServer()
    server.start()
    try:
        with override_settings(ELASTICSEARCH_URL=server.url, ELASTICSEARCH_TIMEOUT_SECONDS=15.0):
            yield server
    finally:
        server.stop()
