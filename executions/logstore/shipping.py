"""Bulk shipping of the durable log buffer to the search server.

One shipper works at a time (a transaction-scoped PostgreSQL advisory lock per step: a second
shipper finds it taken and leaves; row locks would cost a write per row). Rows are sent with one
`_bulk` request per batch with `_id` = run id + row id (a retried batch overwrites itself instead
of duplicating), and marked shipped once the server acknowledged them, only the items it
acknowledged. When the server cannot be reached the rows stay unshipped and the next run sends
them; a shipper stopped between an answer and its mark sends that batch again, stored once.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elasticsearch import ApiError, Elasticsearch

from executions.log_models import ExecutionLogRecord
from executions.logstore.documents import ensure_template
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


# A row's `_bulk` action line and document, built by PostgreSQL in one pass over the rows (the
# documents are JSON text when they leave the database). Built in Python, the same work (reading
# typed values, a dict per row, json.dumps) cost ~100 µs a record, as much as a fast search
# server takes to index one. The document has the fields of `LogRecordDocument`: empty node and
# component are null; the timestamp is UTC to the millisecond (truncated, as the cursors are);
# `extra` carries the X-Request-ID of the API call that started the run (imageflow/request_id.py)
# unless it has its own, so one id finds the call's log lines and its steps' records.
_DOCUMENTS_SQL = """
SELECT r.id,
       json_build_object('index', json_build_object(
           '_index', %(index_prefix)s || to_char(r.timestamp AT TIME ZONE 'UTC', 'YYYY.MM'),
           '_id', r.execution_id::text || '.' || r.id::text))::text,
       json_build_object(
           'record_id', r.id,
           'execution_id', r.execution_id::text,
           'pipeline_id', e.pipeline_id::text,
           'pipeline_name', p.name,
           'owner_id', e.created_by::text,
           'step_id', r.step_id::text,
           'node_id', NULLIF(r.node_id, ''),
           'component', NULLIF(r.component, ''),
           'level', r.level,
           'message', r.message,
           'timestamp', to_char(r.timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'extra', CASE
               WHEN jsonb_typeof(e.input_data -> 'request_id') = 'string' AND e.input_data ->> 'request_id' <> ''
                    AND NOT (COALESCE(r.extra, '{}') ? 'request_id')
               THEN (CASE WHEN jsonb_typeof(r.extra) = 'object' THEN r.extra ELSE '{}' END)
                    || jsonb_build_object('request_id', e.input_data -> 'request_id')
               ELSE (CASE WHEN jsonb_typeof(r.extra) = 'object' THEN r.extra ELSE '{}' END)
           END)::text
  FROM execution_log_records r
  JOIN pipeline_executions e ON e.id = r.execution_id
  JOIN pipelines p ON p.id = e.pipeline_id
 WHERE {where}
 ORDER BY r.id
 LIMIT %(limit)s
"""

# The rows a read can ask for: fixed fragments, values always as parameters.
_PENDING = "r.shipped_at IS NULL AND r.ship_error IS NULL AND r.id > %(after_id)s"  # exlog_unshipped_idx
_AFTER = "r.id > %(after_id)s"
_OF_EXECUTION = "r.execution_id = %(execution_id)s AND r.id > %(after_id)s"  # exlog_execution_idx
_IDS = "r.id = ANY(%(ids)s)"


@dataclass(frozen=True, slots=True)
class EncodedRecord:
    """One buffer row as `_bulk` sends it: its id, its action line (index and `_id`), its document."""

    id: int
    action: str
    source: str


def _encoded(where: str, *, limit: int, **params) -> list[EncodedRecord]:
    with connection.cursor() as cursor:
        cursor.execute(_DOCUMENTS_SQL.replace("{where}", where),
                       {"index_prefix": index_name("logs-"), "limit": limit, **params})
        return [EncodedRecord(*row) for row in cursor.fetchall()]


def pending_records(*, after_id: int = 0, limit: int = DEFAULT_BATCH_SIZE) -> list[EncodedRecord]:
    """Unshipped, not refused rows with an id above `after_id`, oldest first."""
    return _encoded(_PENDING, limit=limit, after_id=after_id)


def encoded_records(ids: list[int]) -> list[EncodedRecord]:
    """These rows (by id order) as `_bulk` sends them."""
    return _encoded(_IDS, limit=len(ids), ids=list(ids)) if ids else []


def record_documents(ids: list[int]) -> dict[int, dict]:
    """The documents of these rows, as the search server stores them, by row id (the API's
    fallback when the server is down serves exactly what it would have answered)."""
    return {record.id: json.loads(record.source) for record in encoded_records(ids)}


def document_id(*, execution_id, record_id: int) -> str:
    """A record's `_id` in the search index: its run's UUID and its row id. Unique across every
    deployment (and test run) that shares a cluster and an index prefix, where the row id alone is
    not; the same row always gets the same `_id`, so shipping it twice stores it once."""
    return f"{execution_id}.{record_id}"


def record_id_of(doc_id: str) -> int:
    return int(doc_id.rpartition(".")[2])


def bulk_body(records: list[EncodedRecord]) -> str:
    return "".join(f"{record.action}\n{record.source}\n" for record in records)


def send_bulk(client: Elasticsearch, records: list[EncodedRecord], *, refresh: bool = False,
              ) -> tuple[list[int], dict[int, str]]:
    """Sends records in one `_bulk`; returns (acknowledged ids, {refused id: reason}). Safe to
    call from another thread than the one reading the database (it does not touch it)."""
    try:
        response = client.bulk(operations=bulk_body(records), refresh=refresh)
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


def _mark(acknowledged: list[int], refused: dict[int, str], *, clear_errors: bool = False) -> None:
    with connection.cursor() as cursor:
        if acknowledged:
            cursor.execute("UPDATE execution_log_records SET shipped_at = %s"
                           + (", ship_error = NULL" if clear_errors else "") + " WHERE id = ANY(%s)",
                           [timezone.now(), acknowledged])
        for record_id, reason in refused.items():
            cursor.execute("UPDATE execution_log_records SET ship_error = %s WHERE id = %s", [reason, record_id])


def _try_shipper_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SHIPPER_LOCK_KEY])
        return cursor.fetchone()[0]


def ship_pending(
    *, batch_size: int = DEFAULT_BATCH_SIZE, max_batches: int | None = None, client: Elasticsearch | None = None,
    refresh: bool = False,
) -> ShipResult:
    """Ships unshipped rows, oldest first, until none are left (or `max_batches` were sent).
    Raises `SearchUnavailable` when the server is down; already shipped batches stay shipped.

    Pipelined: while the server indexes one batch (its `_bulk` is sent from a second thread), this
    thread reads and encodes the next one; each step is one short transaction holding the
    shipper's lock: read batch k+1, wait for batch k's answer, send batch k+1, mark batch k. The
    lock is free only between two such transactions; a second shipper that gets in there sends the
    batch in flight again, which stores it once (same `_id`s)."""
    es = client or get_client()
    result = ShipResult()
    with search_errors_as_unavailable():
        ensure_template(es)
    in_flight: Future | None = None
    last_id, exhausted = 0, False
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="log-shipper") as sender:
        while True:
            with transaction.atomic():
                batch: list[EncodedRecord] = []
                if not exhausted and (max_batches is None or result.batches < max_batches) and _try_shipper_lock():
                    batch = pending_records(after_id=last_id, limit=batch_size)
                    exhausted = len(batch) < batch_size
                answered = in_flight.result() if in_flight is not None else None
                in_flight = None
                if answered is not None and not any(answered):
                    batch = []  # only transient item failures: stop and let the next run retry
                if batch:
                    in_flight = sender.submit(send_bulk, es, batch)
                    result.batches += 1
                    last_id = batch[-1].id
                if answered is not None:
                    acknowledged, refused = answered
                    _mark(acknowledged, refused)
                    result.shipped += len(acknowledged)
                    result.refused += len(refused)
                    if refused:
                        logger.error("search server refused %d log records (kept, marked ship_error)", len(refused))
            if in_flight is None:
                break
    if refresh and result.batches:
        with search_errors_as_unavailable():
            es.indices.refresh(index=index_name("logs-*"))
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
    sent = 0
    last_id = 0
    while True:
        if execution_id is None:
            records = _encoded(_AFTER, limit=batch_size, after_id=last_id)
        else:
            records = _encoded(_OF_EXECUTION, limit=batch_size, after_id=last_id, execution_id=execution_id)
        if not records:
            break
        acknowledged, refused = send_bulk(es, records)
        _mark(acknowledged, refused, clear_errors=True)
        sent += len(acknowledged)
        last_id = records[-1].id
    if refresh:
        with search_errors_as_unavailable():
            es.indices.refresh(index=index_name("logs-*"))
    return sent
