import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory


def sample_document(**overrides):
    document = {
        "name": "Summarize a web page",
        "description": "Fetch a page, summarize it with an agent and post the summary to chat.",
        "category": "content",
        "tags": ["Summaries", "web"],
        "metadata": {"origin": "nl-generator", "prompt": "summarize this page and post it"},
        "nodes": [
            {"key": "fetch", "node_type": "tool", "name": "Fetch page", "parameters": {"url": "{{params.url}}"},
             "order_index": 0},
            {"key": "summarize", "node_type": "agent", "name": "Summarize text",
             "parameters": {"prompt": "Summarize in {{params.sentences}} sentences", "model": "small"},
             "order_index": 1},
            {"key": "post", "node_type": "tool", "name": "Post to chat", "parameters": {"channel": "#news"},
             "order_index": 2},
        ],
        "edges": [
            {"parent": "fetch", "child": "summarize", "handoff_data": {"field": "html"}},
            {"parent": "summarize", "child": "post", "handoff_data": {"field": "summary"}},
        ],
        "params": [
            {"key": "url", "value_type": "string", "required": True, "default_value": None, "metadata": None},
            {"key": "sentences", "value_type": "int", "required": False, "default_value": "3",
             "metadata": {"help": "length of the summary"}},
        ],
    }
    document.update(overrides)
    return document


@pytest.fixture
def document():
    return sample_document()


@pytest.fixture
def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def other_api(db):
    client = APIClient()
    client.force_authenticate(UserFactory())
    return client


# --- a local HTTP agent/tool service (outside our stack, so a test server is fine) ----------------

class AgentServer:
    """http.server in a thread: records every POST and answers with JSON built from it."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        self.fail_next = 0  # answer this many requests with 503 first
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                node = body["node"]["key"]
                if server.fail_next > 0:
                    server.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"busy")
                    return
                if body["parameters"].get("fail"):
                    self.send_response(422)
                    self.end_headers()
                    self.wfile.write(b"cannot do that")
                    return
                upstream = {k: v["output"] for k, v in body["inputs"].items()}
                reply = json.dumps({"node": node, "saw": upstream, "params": body["params"],
                                    "parameters": body["parameters"]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/run"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def agent_server(settings):
    server = AgentServer()
    settings.WORKFLOW_HTTP_RUNNER_URL = server.url
    yield server
    server.stop()


@pytest.fixture
def registry_worker(transactional_db, settings):
    """A real Celery worker (solo pool) in a thread of this process, on this session's queue."""
    from celery.contrib.testing.worker import start_worker

    import celery.contrib.testing.tasks  # noqa: F401  (registers celery.ping for the start-up check)
    from imageflow.celery import app

    settings.STEP_HEARTBEAT_SECONDS = 0.2
    settings.STEP_RETRY_BACKOFF_SECONDS = 0.1
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(settings.CELERY_TASK_DEFAULT_QUEUE)
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=True, shutdown_timeout=30,
                      queues=[settings.CELERY_TASK_DEFAULT_QUEUE]) as worker:
        yield worker
