"""The one place that builds search-server clients (Elasticsearch 8 client and elasticsearch-dsl).

With `ELASTICSEARCH_PLAIN_JSON` on, requests carry plain `application/json` /
`application/x-ndjson`: the 8.x client always rewrites those media types into the vendor form
(`application/vnd.elasticsearch+json; compatible-with=8`) just before sending, which the local
OpenSearch-compatible server answers with 406. Headers passed to the client constructor do not
help (the rewrite runs after them), so the transport undoes it for every request: index, bulk,
search, templates and aliases alike.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from django.conf import settings
from elastic_transport import Transport
from elasticsearch import Elasticsearch

_VENDOR_MEDIA_TYPE = re.compile(r"application/vnd\.elasticsearch\+([a-z0-9.-]+)(?:;\s*compatible-with=\d+)?")

DSL_ALIAS = "default"


class PlainJsonTransport(Transport):
    """A transport that sends plain JSON media types instead of the 8.x vendor ones."""

    def perform_request(self, method: str, target: str, *, headers: Any = None, **kwargs: Any):  # type: ignore[override]
        if headers:
            headers = headers.copy()
            for name in ("accept", "content-type"):
                value = headers.get(name)
                if value and "vnd.elasticsearch+" in value:
                    headers[name] = _VENDOR_MEDIA_TYPE.sub(r"application/\1", value)
        return super().perform_request(method, target, headers=headers, **kwargs)


def build_client(
    *, url: str | None = None, plain_json: bool | None = None, timeout_seconds: float | None = None,
    max_retries: int = 0,
) -> Elasticsearch:
    """A new client; arguments left out come from settings (tests point one at another server)."""
    plain = settings.ELASTICSEARCH_PLAIN_JSON if plain_json is None else plain_json
    options: dict[str, Any] = {
        "request_timeout": settings.ELASTICSEARCH_TIMEOUT_SECONDS if timeout_seconds is None else timeout_seconds,
        "max_retries": max_retries,
        "retry_on_timeout": False,
    }
    if plain:
        options["transport_class"] = PlainJsonTransport
    return Elasticsearch(url or settings.ELASTICSEARCH_URL, **options)


_lock = threading.Lock()
_clients: dict[tuple, Elasticsearch] = {}


def get_client() -> Elasticsearch:
    """The shared client for the configured server (one per settings combination, thread-safe)."""
    key = (settings.ELASTICSEARCH_URL, settings.ELASTICSEARCH_PLAIN_JSON, settings.ELASTICSEARCH_TIMEOUT_SECONDS)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = build_client()
                _clients[key] = client
                from elasticsearch_dsl import connections

                connections.add_connection(DSL_ALIAS, client)
    return client


def index_name(suffix: str) -> str:
    """`<ELASTICSEARCH_INDEX_PREFIX>-<suffix>`: every index and alias of this deployment."""
    return f"{settings.ELASTICSEARCH_INDEX_PREFIX}-{suffix}"
