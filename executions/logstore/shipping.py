"""Bulk shipping of the durable log buffer to the search server.

One shipper works at a time (a transaction-scoped PostgreSQL advisory lock per batch: a second
shipper finds it taken and leaves; row locks would cost a write per row). Rows are sent with one `_bulk` request per batch with `_id` = run id + row id (a retried batch
overwrites itself instead of duplicating), and marked shipped in the same transaction, only for
the items the server acknowledged. When the server cannot be reached the transaction rolls back:
the rows stay unshipped and the next run sends them.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timezone as dt_timezone

from django.db import connection, transaction
from django.utils import timezone
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elasticsearch import ApiError, Elasticsearch

from executions.log_models import ExecutionLogRecord
from executions.logstore.documents import ensure_template, monthly_index_name
from imageflow.search import get_client, index_name

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 2000


class SearchUnavailable(Exception):
    """The search server could not be reached or answered with a server error."""


@contextmanager
def search_errors_as_unavailable():
    """Connection failures and server errors of the search client as `SearchUnavailable`."""
    try:
        yield
    except (TransportConnectionError, ConnectionTimeout) as exc:
        raise SearchUnavailable(f"search server unreachable: {exc}") from exc
    except (ApiError, TransportError) as exc:
        raise SearchUnavailable(f"search server error: {exc}") from exc


@dataclass
class ShipResult:
    shipped: int = 0
    refused: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)


SHIPPER_LOCK_KEY = 0x1F_5E_AD_10  # pg advisory lock id of the log shipper


def _timestamp_text(value) -> str:
    utc = value.astimezone(dt_timezone.utc)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


# What a document needs, read as plain values: no model instances, and none of the run's or the
# pipeline's JSON columns (a pipeline definition parsed once per log line would dominate).
SOURCE_FIELDS = (
    "id", "execution_id", "step_id", "node_id", "component", "level", "message", "extra", "timestamp",
    "execution__pipeline_id", "execution__pipeline__name", "execution__created_by_id",
    # One key of the run's input_data, extracted by PostgreSQL (not the whole column parsed).
    "execution__input_data__request_id",
)


def record_source(row: dict) -> dict:
    """The document (fields of `LogRecordDocument`) for one row read with `SOURCE_FIELDS`."""
    return {
        "record_id": row["id"],
        "execution_id": str(row["execution_id"]),
        "pipeline_id": str(row["execution__pipeline_id"]) if row["execution__pipeline_id"] else None,
        "pipeline_name": row["execution__pipeline__name"],
        "owner_id": str(row["execution__created_by_id"]) if row["execution__created_by_id"] else None,
        "step_id": str(row["step_id"]) if row["step_id"] else None,
        "node_id": row["node_id"] or None,
        "component": row["component"] or None,
        "level": row["level"],
        "message": row["message"],
        "timestamp": _timestamp_text(row["timestamp"]),
        "extra": _with_request_id(row["extra"] or {}, row.get("execution__input_data__request_id")),
    }


def _with_request_id(extra: dict, request_id) -> dict:
    """The X-Request-ID of the API call that started the run (imageflow/request_id.py), on every
    record of the run, so one id finds the call's log lines and its steps' records."""
    return {**extra, "request_id": request_id} if request_id and "request_id" not in extra else extra


def document_id(*, execution_id, record_id: int) -> str:
    """A record's `_id` in the search index: its run's UUID and its row id. Unique across every
    deployment (and test run) that shares a cluster and an index prefix, where the row id alone is
    not; the same row always gets the same `_id`, so shipping it twice stores it once."""
    return f"{execution_id}.{record_id}"


def record_id_of(doc_id: str) -> int:
    return int(doc_id.rpartition(".")[2])


def _bulk_body(rows: list[dict]) -> str:
    lines: list[str] = []
    index_names: dict[tuple[int, int], str] = {}
    for row in rows:
        when = row["timestamp"].astimezone(dt_timezone.utc)
        month = (when.year, when.month)
        index = index_names.get(month) or index_names.setdefault(month, monthly_index_name(when))
        lines.append('{"index":{"_index":"%s","_id":"%s"}}'
                     % (index, document_id(execution_id=row["execution_id"], record_id=row["id"])))
        lines.append(json.dumps(record_source(row), ensure_ascii=False))
    return "\n".join(lines) + "\n"


def send_bulk(client: Elasticsearch, rows: list[dict], *, refresh: bool = False) -> tuple[list[int], dict[int, str]]:
    """Sends rows in one `_bulk`; returns (acknowledged ids, {refused id: reason})."""
    try:
        response = client.bulk(operations=_bulk_body(rows), refresh=refresh)
    except (TransportConnectionError, ConnectionTimeout) as exc:
        raise SearchUnavailable(f"search server unreachable: {exc}") from exc
    except ApiError as exc:
        raise SearchUnavailable(f"search server refused the bulk request: {exc}") from exc
    except TransportError as exc:
        raise SearchUnavailable(f"search server error: {exc}") from exc
    acknowledged: list[int] = []
    refused: dict[int, str] = {}
    for item in response.get("items", []):
        result = next(iter(item.values()))
        record_id = record_id_of(result["_id"])
        status = int(result.get("status", 500))
        if 200 <= status < 300:
            acknowledged.append(record_id)
        elif status in (429,) or status >= 500:
            continue  # transient: left unshipped, retried next run
        else:
            refused[record_id] = json.dumps(result.get("error", {"status": status}))[:2000]
    return acknowledged, refused


def ship_pending(
    *, batch_size: int = DEFAULT_BATCH_SIZE, max_batches: int | None = None, client: Elasticsearch | None = None,
    refresh: bool = False,
) -> ShipResult:
    """Ships unshipped rows, oldest first, until none are left (or `max_batches` were sent).
    Raises `SearchUnavailable` when the server is down; already shipped batches stay shipped."""
    es = client or get_client()
    result = ShipResult()
    with search_errors_as_unavailable():
        ensure_template(es)
    while max_batches is None or result.batches < max_batches:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SHIPPER_LOCK_KEY])
                if not cursor.fetchone()[0]:
                    break  # another shipper is at work; it will send these rows
            rows = list(
                ExecutionLogRecord.objects.filter(shipped_at__isnull=True, ship_error__isnull=True)
                .order_by("id").values(*SOURCE_FIELDS)[:batch_size]
            )
            if not rows:
                break
            acknowledged, refused = send_bulk(es, rows, refresh=refresh)
            now = timezone.now()
            if acknowledged:
                ExecutionLogRecord.objects.filter(id__in=acknowledged).update(shipped_at=now)
            for record_id, reason in refused.items():
                ExecutionLogRecord.objects.filter(id=record_id).update(ship_error=reason)
        result.batches += 1
        result.shipped += len(acknowledged)
        result.refused += len(refused)
        if refused:
            logger.error("search server refused %d log records (kept, marked ship_error)", len(refused))
        if len(acknowledged) + len(refused) == 0:
            break  # only transient item failures: stop and let the next run retry
        if len(rows) < batch_size:
            break
    return result


def prune_shipped(*, older_than, batch_size: int = 10_000) -> int:
    """Deletes shipped rows whose timestamp is before `older_than`, in batches (short transactions,
    no long lock on a busy table). Rows not shipped yet, or refused, are kept whatever their age.
    Returns how many rows were deleted."""
    deleted = 0
    while True:
        batch = ExecutionLogRecord.objects.filter(timestamp__lt=older_than, shipped_at__isnull=False).values("id")
        count, _ = ExecutionLogRecord.objects.filter(id__in=batch[:batch_size]).delete()
        deleted += count
        if count < batch_size:
            return deleted


def reindex(
    *, batch_size: int = DEFAULT_BATCH_SIZE, execution_id=None, client: Elasticsearch | None = None,
    refresh: bool = True,
) -> int:
    """Sends every stored row again (all, or one execution's), by id order, and marks them shipped.
    Idempotent: the same `_id`s overwrite the same documents. Refused rows get their error updated."""
    es = client or get_client()
    with search_errors_as_unavailable():
        ensure_template(es)
    queryset = ExecutionLogRecord.objects.order_by("id").values(*SOURCE_FIELDS)
    if execution_id is not None:
        queryset = queryset.filter(execution_id=execution_id)
    sent = 0
    last_id = 0
    while True:
        rows = list(queryset.filter(id__gt=last_id)[:batch_size])
        if not rows:
            break
        acknowledged, refused = send_bulk(es, rows)
        now = timezone.now()
        ExecutionLogRecord.objects.filter(id__in=acknowledged).update(shipped_at=now, ship_error=None)
        for record_id, reason in refused.items():
            ExecutionLogRecord.objects.filter(id=record_id).update(ship_error=reason)
        sent += len(acknowledged)
        last_id = rows[-1]["id"]
    if refresh:
        with search_errors_as_unavailable():
            es.indices.refresh(index=index_name("logs-*"))
    return sent
