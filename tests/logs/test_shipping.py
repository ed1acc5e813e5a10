"""The durable log buffer and its shipping to the real search server."""

from datetime import UTC, datetime

import pytest
from django.db import transaction

from executions import logs
from executions.log_models import ExecutionLogRecord
from executions.logstore.documents import alias_name, ensure_template, monthly_index_name
from executions.logstore.shipping import document_id, encoded_records, record_id_of, send_bulk, ship_pending
from imageflow.search import get_client
from tests.factories import ComponentExecutionFactory, PipelineExecutionFactory

pytestmark = pytest.mark.django_db


def _search_ids(es, **query):
    es.indices.refresh(index=alias_name())
    response = es.search(index=alias_name(), query=query or {"match_all": {}}, size=1000)
    return sorted(record_id_of(hit["_id"]) for hit in response["hits"]["hits"])


def test_emit_writes_a_row_in_the_callers_transaction():
    # given a run
    execution = PipelineExecutionFactory()
    # when a log line is emitted inside a transaction that rolls back
    with pytest.raises(RuntimeError), transaction.atomic():
        logs.emit(execution_id=execution.id, level="info", message="never committed")
        raise RuntimeError("roll back")
    # and another one outside
    logs.emit(execution_id=execution.id, level="WARN", message="kept", node_id="resize", attempt=2)
    # then only the committed line is stored, normalised
    rows = list(ExecutionLogRecord.objects.filter(execution=execution).values("level", "message", "node_id", "extra"))
    assert rows == [{"level": "warning", "message": "kept", "node_id": "resize", "extra": {"attempt": 2}}]


def test_emit_refuses_an_unknown_level():
    execution = PipelineExecutionFactory()
    with pytest.raises(ValueError, match="Unknown log level"):
        logs.emit(execution_id=execution.id, level="loud", message="x")
    assert not ExecutionLogRecord.objects.exists()


def test_emit_lines_stores_each_non_empty_line_of_captured_output():
    step = ComponentExecutionFactory(node_id="external")
    count = logs.emit_lines(
        execution_id=step.execution_id, step_id=step.id, node_id="external", component="cli",
        lines=["first line\n", "   \n", "second line\r\n"], level="warning", stream="stderr",
    )
    assert count == 2
    assert list(ExecutionLogRecord.objects.order_by("id").values_list("message", "level", "extra")) == [
        ("first line", "warning", {"stream": "stderr"}),
        ("second line", "warning", {"stream": "stderr"}),
    ]


def test_shipping_sends_every_row_once_with_the_row_id_and_marks_it_shipped(es):
    # given three records of a run
    step = ComponentExecutionFactory(node_id="resize")
    execution = step.execution
    for i in range(3):
        logs.emit(execution_id=execution.id, step_id=step.id, node_id="resize", component="pillow",
                  level="info", message=f"line {i}", width=10 + i)
    ids = sorted(ExecutionLogRecord.objects.values_list("id", flat=True))
    # when shipped
    result = ship_pending(refresh=True)
    # then each is a document whose _id is the run's id and the row id, in the month's index, with its fields
    assert result.shipped == 3
    assert _search_ids(es) == ids
    doc = es.get(index=monthly_index_name(datetime.now(UTC)),
                 id=document_id(execution_id=execution.id, record_id=ids[0]))["_source"]
    assert doc["execution_id"] == str(execution.id)
    assert doc["pipeline_id"] == str(execution.pipeline_id)
    assert doc["pipeline_name"] == execution.pipeline.name
    assert doc["owner_id"] == str(execution.created_by_id)
    assert doc["step_id"] == str(step.id)
    assert (doc["node_id"], doc["component"], doc["level"], doc["message"]) == ("resize", "pillow", "info", "line 0")
    assert doc["extra"] == {"width": 10}
    assert not ExecutionLogRecord.objects.filter(shipped_at__isnull=True).exists()
    # and a second run has nothing to send
    assert ship_pending().shipped == 0


def test_shipping_twice_stores_each_record_once(es):
    execution = PipelineExecutionFactory()
    for i in range(5):
        logs.emit(execution_id=execution.id, level="info", message=f"line {i}")
    ship_pending(refresh=True)
    # when every row is sent again (a retried batch)
    ExecutionLogRecord.objects.update(shipped_at=None)
    ship_pending(refresh=True)
    # then the index still holds five documents
    assert es.count(index=alias_name())["count"] == 5


def test_the_index_is_created_from_the_template_with_the_explicit_mapping_behind_the_alias(es, search_prefix):
    execution = PipelineExecutionFactory()
    logs.emit(execution_id=execution.id, level="error", message="boom")
    ship_pending(refresh=True)
    index = monthly_index_name(datetime.now(UTC))
    assert index == f"{search_prefix}-logs-{datetime.now(UTC):%Y.%m}"
    mapping = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert mapping["message"]["type"] == "text"
    assert mapping["level"]["type"] == "keyword"
    assert mapping["timestamp"]["type"] == "date"
    assert mapping["record_id"]["type"] == "long"
    assert es.indices.get_alias(index=index)[index]["aliases"] == {alias_name(): {}}


def test_batches_cover_more_rows_than_one_batch(es):
    execution = PipelineExecutionFactory()
    logs.emit_lines(execution_id=execution.id, lines=[f"line {i}" for i in range(25)])
    result = ship_pending(batch_size=10, refresh=True)
    assert (result.shipped, result.batches) == (25, 3)
    assert es.count(index=alias_name())["count"] == 25


def test_reindex_logs_rebuilds_a_lost_index_from_the_durable_buffer_exactly_once(es):
    from django.core.management import call_command

    from executions.logstore.documents import delete_log_indices

    # given shipped records whose index was lost (the in-memory server restarted)
    execution = PipelineExecutionFactory()
    logs.emit_lines(execution_id=execution.id, lines=[f"line {i}" for i in range(7)])
    ship_pending(refresh=True)
    delete_log_indices(es)
    # when the index is rebuilt, twice
    call_command("reindex_logs", "--recreate")
    call_command("reindex_logs", "--execution", str(execution.id))
    # then every record is searchable once
    assert _search_ids(es) == sorted(ExecutionLogRecord.objects.values_list("id", flat=True))


def test_reindex_logs_refuses_bad_arguments():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="not a UUID"):
        call_command("reindex_logs", "--execution", "nope")
    with pytest.raises(CommandError, match="No execution"):
        call_command("reindex_logs", "--execution", "00000000-0000-0000-0000-000000000000")


@pytest.mark.django_db(transaction=True)
def test_a_second_shipper_leaves_while_one_is_at_work(es):
    import psycopg
    from django.db import connection

    from executions.logstore.shipping import SHIPPER_LOCK_KEY

    execution = PipelineExecutionFactory()
    logs.emit_lines(execution_id=execution.id, lines=["a", "b", "c"])
    params = connection.get_connection_params()
    # given another shipper holding the lock (its own connection)
    with psycopg.connect(dbname=params["dbname"], host=params["host"], port=params["port"], user=params["user"],
                         autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [SHIPPER_LOCK_KEY])
        # when this one runs, it sends nothing and leaves the rows to the other
        assert ship_pending(refresh=True).shipped == 0
        assert ExecutionLogRecord.objects.filter(shipped_at__isnull=True).count() == 3
        other.execute("SELECT pg_advisory_unlock(%s)", [SHIPPER_LOCK_KEY])
    # then once it is free, everything goes
    assert ship_pending(refresh=True).shipped == 3


def test_reindex_logs_says_so_when_the_search_server_is_unreachable():
    from django.core.management import CommandError, call_command
    from django.test import override_settings

    execution = PipelineExecutionFactory()
    logs.emit(execution_id=execution.id, level="info", message="kept")
    with override_settings(ELASTICSEARCH_URL="http://127.0.0.1:9", ELASTICSEARCH_TIMEOUT_SECONDS=1.0), \
            pytest.raises(CommandError, match="search server is unavailable"):
        call_command("reindex_logs")
    assert ExecutionLogRecord.objects.get().shipped_at is None


def test_retention_deletes_only_shipped_rows_past_the_window(settings):
    from datetime import timedelta

    from django.utils import timezone

    from executions.logstore.tasks import prune_log_buffer

    # given rows of a run: shipped and old, unshipped and old, refused and old, shipped and recent
    execution = PipelineExecutionFactory()
    now = timezone.now()
    old, recent = now - timedelta(days=31), now - timedelta(days=29)

    def row(message, timestamp, **fields):
        return ExecutionLogRecord.objects.create(execution=execution, level="info", message=message,
                                                 timestamp=timestamp, **fields)

    shipped_old = [row(f"shipped old {i}", old, shipped_at=old) for i in range(5)]
    kept = [row("unshipped old", old), row("refused old", old, ship_error="mapping"),
            row("shipped recent", recent, shipped_at=recent)]
    settings.LOG_BUFFER_RETENTION_DAYS = 30
    # when the hourly retention runs (in batches smaller than what it deletes)
    from executions.logstore.shipping import prune_shipped

    assert prune_shipped(older_than=now - timedelta(days=30), batch_size=2) == 5
    # then only the shipped rows past 30 days are gone
    remaining = set(ExecutionLogRecord.objects.filter(execution=execution).values_list("id", flat=True))
    assert remaining == {r.id for r in kept} and not remaining & {r.id for r in shipped_old}
    # and the task finds nothing more; with retention off it deletes nothing at all
    assert prune_log_buffer() == 0
    settings.LOG_BUFFER_RETENTION_DAYS = 0
    ExecutionLogRecord.objects.filter(execution=execution).update(shipped_at=old, ship_error=None, timestamp=old)
    assert prune_log_buffer() == 0 and ExecutionLogRecord.objects.filter(execution=execution).count() == 3


def test_records_of_two_deployments_with_the_same_row_id_do_not_overwrite_each_other(es):
    # given two deployments sharing a cluster and an index prefix, each with its own log row 1
    # (one row of this database stands for both: encoded under the first run, then under the second)
    first, second = PipelineExecutionFactory(), PipelineExecutionFactory()
    logs.emit(execution_id=first.id, level="info", message="from the first deployment")
    row = ExecutionLogRecord.objects.get()
    from_first = encoded_records([row.id])
    ExecutionLogRecord.objects.filter(id=row.id).update(execution=second, message="from the second deployment")
    from_second = encoded_records([row.id])
    # when both are shipped
    ensure_template(get_client())
    acknowledged, refused = send_bulk(get_client(), from_first + from_second, refresh=True)
    # then both documents are stored, each under its own run
    assert acknowledged == [row.id, row.id] and refused == {}
    es.indices.refresh(index=alias_name())
    hits = es.search(index=alias_name(), query={"term": {"record_id": row.id}}, size=10)["hits"]["hits"]
    assert sorted(hit["_source"]["message"] for hit in hits) == ["from the first deployment",
                                                                 "from the second deployment"]
    assert {hit["_id"] for hit in hits} == {f"{first.id}.{row.id}", f"{second.id}.{row.id}"}


def test_a_documents_fields_are_those_of_the_mapping_with_nulls_utc_milliseconds_and_the_runs_request_id(es):
    # given a run started by an API call with a request id, and three rows written in Paris time:
    # one bare (no step, node or component), one with odd text, one whose extra has its own id
    from zoneinfo import ZoneInfo

    step = ComponentExecutionFactory(node_id="resize")
    execution = step.execution
    execution.input_data = {"request_id": "lb-42", "other": [1, 2]}
    execution.save(update_fields=["input_data"])
    paris = ZoneInfo("Europe/Paris")

    def row(**fields):
        return ExecutionLogRecord.objects.create(execution=execution, level="info", **fields).id

    bare = row(message="bare", timestamp=datetime(2026, 11, 1, 0, 30, 0, 999_999, tzinfo=paris))
    odd = row(message='quotes " back\\slash\nnew line, <b>é</b> 日本 \u2028', step_id=step.id, node_id="resize",
              component="pillow", extra={"width": 10, "nested": {"a": [1, None]}},
              timestamp=datetime(2026, 11, 30, 12, 0, 0, 123_456, tzinfo=UTC))
    own = row(message="own id", extra={"request_id": "kept"}, timestamp=datetime(2026, 11, 30, 12, 0, 1, tzinfo=UTC))
    # when shipped
    assert ship_pending(refresh=True).shipped == 3
    # then the stored documents are exactly these, in the UTC month's index (the bare row's Paris
    # 1 November 00:30 is 31 October 23:30 UTC)
    base = {"execution_id": str(execution.id), "pipeline_id": str(execution.pipeline_id),
            "pipeline_name": execution.pipeline.name, "owner_id": str(execution.created_by_id), "level": "info"}
    stored = {
        record_id: es.get(index=index, id=document_id(execution_id=execution.id, record_id=record_id))["_source"]
        for record_id, index in ((bare, monthly_index_name(datetime(2026, 10, 1))),
                                 (odd, monthly_index_name(datetime(2026, 11, 1))),
                                 (own, monthly_index_name(datetime(2026, 11, 1))))
    }
    assert stored[bare] == {**base, "record_id": bare, "step_id": None, "node_id": None, "component": None,
                            "message": "bare", "timestamp": "2026-10-31T23:30:00.999Z",
                            "extra": {"request_id": "lb-42"}}
    assert stored[odd] == {**base, "record_id": odd, "step_id": str(step.id), "node_id": "resize",
                           "component": "pillow", "message": 'quotes " back\\slash\nnew line, <b>é</b> 日本 \u2028',
                           "timestamp": "2026-11-30T12:00:00.123Z",
                           "extra": {"width": 10, "nested": {"a": [1, None]}, "request_id": "lb-42"}}
    assert stored[own]["extra"] == {"request_id": "kept"}
    # and the database fallback serves the same documents
    from executions.logstore.shipping import record_documents

    assert record_documents([bare, odd, own]) == stored
