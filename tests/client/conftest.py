"""The command-line client against a live server: uvicorn serving imageflow.asgi on a free port
and a real two-process Celery worker, both on the test database, the real Redis, object store
and search server (an index prefix of this module's own, deleted after)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.executions.conftest import ProcessWorker, _purge_queue
from tests.security.conftest import LiveServer, _wait_until_listening, free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-for-tests-123"  # tests.factories.UserFactory's
# Map steps as one item per input, so three photos make three items a bar can count.
WORKER_ENV = {"STEP_ITEM_BATCH": "1"}


@pytest.fixture(scope="session")
def search_prefix():
    return f"imageflow-cli-t{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def cli_server(django_db_setup, tmp_path_factory, search_prefix):
    from django.db import connection

    port = free_port()
    log_path = tmp_path_factory.mktemp("uvicorn") / "server.log"
    env = {**os.environ, "DATABASE_NAME": connection.settings_dict["NAME"], "ELASTICSEARCH_INDEX_PREFIX": search_prefix,
           "DATABASE_POOL": "true", "DATABASE_POOL_MIN_SIZE": "1", "DATABASE_POOL_MAX_SIZE": "3"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "uvicorn"), "imageflow.asgi:application", "--host", "127.0.0.1",
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
        _delete_indices(search_prefix)


def _delete_indices(prefix: str) -> None:
    import elastic_transport
    from django.test import override_settings

    from executions.logstore.documents import delete_log_indices
    from imageflow.search import get_client

    with override_settings(ELASTICSEARCH_INDEX_PREFIX=prefix):
        client = get_client()
        try:
            delete_log_indices(client)
            client.options(ignore_status=404).indices.delete_index_template(name=f"{prefix}-logs-template")
        except elastic_transport.ConnectionError:
            pass


@pytest.fixture(scope="module")
def cli_worker(django_db_setup, search_prefix):
    """Module-wide: the worker holds no rows of its own, so the tests' flushes do not disturb it."""
    _purge_queue()
    worker = ProcessWorker(concurrency=1, extra_env={"ELASTICSEARCH_INDEX_PREFIX": search_prefix, **WORKER_ENV})
    yield worker
    worker.stop()
    _purge_queue()


@pytest.fixture
def server(cli_server, transactional_db):
    return cli_server


@pytest.fixture
def cli_env(server, tmp_path, monkeypatch):
    """The client's config directory in the test's tmp dir, nothing from the environment."""
    config = tmp_path / "config" / "imageflow"
    monkeypatch.setenv("IMAGEFLOW_CONFIG_DIR", str(config))
    for name in ("IMAGEFLOW_URL", "IMAGEFLOW_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return config


@pytest.fixture
def imageflow(cli_env, capsys, monkeypatch):
    """`imageflow ARGS...` in this process: (exit status, stdout, stderr)."""
    import io

    from imageflow_client.cli import main

    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            status = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            status = exc.code
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def signed_in(imageflow, server, user):
    status, out, err = imageflow("login", "--url", server.url, "--username", user.username, "--password-stdin",
                                 stdin=PASSWORD + "\n")
    assert status == 0, err
    return user


@pytest.fixture
def photo_folder(tmp_path):
    """A folder of three camera photos (symbolic links into ../shared/photos: read in place, not
    copied), two of them in subfolders, beside a README that is not an image."""
    from tests.photos import PHOTOS

    folder = tmp_path / "shoot"
    (folder / "day2" / "evening").mkdir(parents=True)
    links = {"Canon_40D.jpg": folder / "Canon_40D.jpg", "Nikon_D70.jpg": folder / "day2" / "Nikon_D70.jpg",
             "Pentax_K10D.jpg": folder / "day2" / "evening" / "Pentax_K10D.jpg"}
    for name, link in links.items():
        link.symlink_to((PHOTOS / "camera" / name).resolve())
    (folder / "README.md").write_text("not an image\n")
    return folder
