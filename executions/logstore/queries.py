"""Reads of execution logs from the search server (through the `<prefix>-logs` alias).

Pages are cut with `search_after` on (timestamp, record_id): stable under concurrent writes and
as cheap for page 1000 as for page 1. The cursor handed to clients is that sort pair as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elasticsearch import ApiError, Elasticsearch, NotFoundError

from executions.logstore.documents import alias_name
from executions.logstore.shipping import SearchUnavailable
from imageflow.search import get_client, index_name

HIGHLIGHT_PRE = "<mark>"
HIGHLIGHT_POST = "</mark>"


class InvalidCursor(ValueError):
    pass


@dataclass
class LogPage:
    records: list[dict]
    next_cursor: str | None
    total: int


def encode_cursor(sort_values: list) -> str:
    return ",".join(str(int(v)) for v in sort_values)


def decode_cursor(cursor: str) -> list[int]:
    try:
        values = [int(part) for part in cursor.split(",")]
    except ValueError as exc:
        raise InvalidCursor("cursor must be the `next_cursor` of a previous page") from exc
    if len(values) != 2:
        raise InvalidCursor("cursor must be the `next_cursor` of a previous page")
    return values


def _terms(field_name: str, values) -> list[dict]:
    values = [str(v) for v in (values or []) if str(v)]
    return [{"terms": {field_name: values}}] if values else []


def _range(since: datetime | None, until: datetime | None) -> list[dict]:
    bounds = {}
    if since is not None:
        bounds["gte"] = since.isoformat()
    if until is not None:
        bounds["lt"] = until.isoformat()
    return [{"range": {"timestamp": bounds}}] if bounds else []


MAX_PRUNED_MONTHS = 36


def _indices(since: datetime | None, until: datetime | None) -> str:
    """The monthly indices a time range can touch (a record lives in its UTC month's index), or
    the alias when the range is open or very long: fewer records for the server to look at."""
    if since is None or until is None:
        return alias_name()
    first, last = since.astimezone(UTC), (until - timedelta(microseconds=1)).astimezone(UTC)
    year, month = first.year, first.month
    names = []
    while (year, month) <= (last.year, last.month):
        names.append(index_name(f"logs-{year:04d}.{month:02d}"))
        if len(names) > MAX_PRUNED_MONTHS:
            return alias_name()
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return ",".join(names) if names else alias_name()


def _search(es: Elasticsearch, body: dict, *, index: str | None = None) -> dict:
    try:
        if index and index != alias_name():
            return es.search(index=index, ignore_unavailable=True, allow_no_indices=True, **body)
        return es.search(index=alias_name(), **body)
    except NotFoundError:
        # No record was ever shipped under this prefix: no index, no alias yet.
        return {"hits": {"hits": [], "total": {"value": 0}}}
    except (TransportConnectionError, ConnectionTimeout) as exc:
        raise SearchUnavailable(f"search server unreachable: {exc}") from exc
    except ApiError as exc:
        if exc.status_code == 400:
            raise ValueError(f"the search server rejected the query: {exc.message}") from exc
        raise SearchUnavailable(f"search server error: {exc}") from exc
    except TransportError as exc:
        raise SearchUnavailable(f"search server error: {exc}") from exc


def _page(response: dict, size: int) -> LogPage:
    hits = response["hits"]["hits"]
    records = []
    for hit in hits:
        record = dict(hit["_source"])
        record["id"] = record.pop("record_id")
        if "highlight" in hit:
            record["highlight"] = hit["highlight"].get("message", [])
        records.append(record)
    next_cursor = encode_cursor(hits[-1]["sort"]) if len(hits) == size else None
    total = response["hits"].get("total", {}).get("value", len(hits))
    return LogPage(records=records, next_cursor=next_cursor, total=total)


def execution_logs(
    *, execution_id, nodes=None, levels=None, cursor: str | None = None, size: int = 100,
    client: Elasticsearch | None = None,
) -> LogPage:
    """One run's records in the order they were written."""
    filters = [{"term": {"execution_id": str(execution_id)}}, *_terms("node_id", nodes), *_terms("level", levels)]
    body: dict = {
        "query": {"bool": {"filter": filters}},
        "sort": [{"timestamp": "asc"}, {"record_id": "asc"}],
        "size": size,
        "track_total_hits": True,
    }
    if cursor:
        body["search_after"] = decode_cursor(cursor)
    return _page(_search(client or get_client(), body), size)


def search_request(
    *, text: str = "", owner_id=None, levels=None, pipelines=None, executions=None, nodes=None,
    components=None, since: datetime | None = None, until: datetime | None = None,
    cursor: str | None = None, size: int = 50,
) -> tuple[str, dict]:
    """The indices and the body `search_logs` sends (bench/logs_search.py sends the same straight
    to the server as its baseline)."""
    filters = [
        *_terms("owner_id", [owner_id] if owner_id is not None else None),
        *_terms("level", levels), *_terms("pipeline_id", pipelines), *_terms("execution_id", executions),
        *_terms("node_id", nodes), *_terms("component", components), *_range(since, until),
    ]
    query: dict = {"bool": {"filter": filters}}
    if text.strip():
        query["bool"]["must"] = [{
            "simple_query_string": {"query": text, "fields": ["message"], "default_operator": "and"},
        }]
    body: dict = {
        "query": query,
        "sort": [{"timestamp": "desc"}, {"record_id": "desc"}],
        "size": size,
        "track_total_hits": True,
    }
    if text.strip():
        body["highlight"] = {
            "fields": {"message": {"number_of_fragments": 0}}, "encoder": "html",
            "pre_tags": [HIGHLIGHT_PRE], "post_tags": [HIGHLIGHT_POST],
        }
    if cursor:
        body["search_after"] = decode_cursor(cursor)
    return _indices(since, until), body


def search_logs(*, size: int = 50, client: Elasticsearch | None = None, **options) -> LogPage:
    """Full-text search across runs, newest first, with highlighted matches.

    `text` is a simple query string: words (all must match), "quoted phrases", -exclusions,
    prefix*. `owner_id` limits the search to the runs of one user (non-staff callers). The other
    options (filters, time range, cursor) are those of `search_request`."""
    index, body = search_request(size=size, **options)
    return _page(_search(client or get_client(), body, index=index), size)


def execution_logs_from_database(
    *, execution_id, nodes=None, levels=None, cursor: str | None = None, size: int = 100,
) -> LogPage:
    """The same page read from the durable buffer: what the API serves while the search server
    is unreachable (same order, same cursor format: timestamp in ms, record id)."""
    from django.db.models import Q

    from executions.log_models import ExecutionLogRecord
    from executions.logstore.shipping import record_documents

    rows = ExecutionLogRecord.objects.filter(execution_id=execution_id)
    if nodes:
        rows = rows.filter(node_id__in=list(nodes))
    if levels:
        rows = rows.filter(level__in=list(levels))
    if cursor:
        millis, record_id = decode_cursor(cursor)
        # Documents carry millisecond timestamps; compare on the same precision.
        boundary = datetime.fromtimestamp((millis + 1) / 1000, tz=UTC)
        exact = datetime.fromtimestamp(millis / 1000, tz=UTC)
        rows = rows.filter(Q(timestamp__gte=boundary) | Q(timestamp__gte=exact, timestamp__lt=boundary, id__gt=record_id))
    total = rows.count()
    page = list(rows.order_by("timestamp", "id").values("id", "timestamp")[:size])
    documents = record_documents([row["id"] for row in page])
    records = []
    for row in page:
        source = documents[row["id"]]
        source["id"] = source.pop("record_id")
        records.append(source)
    next_cursor = None
    if len(page) == size:
        last = page[-1]
        next_cursor = encode_cursor([int(last["timestamp"].timestamp() * 1000), last["id"]])
    return LogPage(records=records, next_cursor=next_cursor, total=total)
