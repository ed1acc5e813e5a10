"""Nothing is lost while the search server is down: a real pipeline through a real Celery worker
while a (separate) search server is stopped, then started again."""

import pytest

from executions.log_models import ExecutionLogRecord
from executions.logstore.documents import alias_name
from executions.logstore.shipping import SearchUnavailable, record_id_of, ship_pending
from executions.logstore.tasks import ship_logs
from executions.models import ExecutionStatus
from executions.services import execution_start
from imageflow.search import get_client
from tests.executions.conftest import (  # noqa: F401  (fixtures)
    builtins,
    engine_settings,
    jpeg_file,
    node,
    pipeline_of,
    thread_worker,
    wait_finished,
)

pytestmark = [pytest.mark.worker, pytest.mark.timeout(180)]


def test_records_of_a_run_while_search_is_down_become_searchable_exactly_once_when_it_returns(
    separate_search_server, search_prefix, thread_worker, builtins, pipeline_of, jpeg_file, user,
):
    # given the search server is stopped
    separate_search_server.stop()
    # when a real pipeline runs through the worker (its end also triggers a shipping attempt)
    pipeline = pipeline_of([node("resize", "resize", width=64), node("gray", "grayscale")],
                           [{"from": "resize", "to": "gray"}])
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user))
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    # and the periodic shipper runs while the server is still down
    assert ship_logs.apply_async(ignore_result=False).get(timeout=30) == 0
    with pytest.raises(SearchUnavailable):
        ship_pending()
    # then every record of the run is kept, unshipped
    rows = ExecutionLogRecord.objects.filter(execution=execution)
    expected_ids = sorted(rows.values_list("id", flat=True))
    assert len(expected_ids) >= 6  # transitions of the run and of both steps, at least
    assert set(rows.values_list("node_id", flat=True)) >= {"resize", "gray"}
    assert not rows.filter(shipped_at__isnull=False).exists()
    # when the server is back and the shipper runs (through the worker), twice
    separate_search_server.start()
    shipped = 0
    for _ in range(5):  # the periodic runs; a run may still meet the server warming up
        shipped += ship_logs.apply_async(ignore_result=False).get(timeout=60)
        if not rows.filter(shipped_at__isnull=True).exists():
            break
    ship_logs.apply_async(ignore_result=False).get(timeout=60)
    # then every record is searchable exactly once
    assert shipped >= len(expected_ids)
    es = get_client()
    es.indices.refresh(index=alias_name())
    response = es.search(index=alias_name(), query={"term": {"execution_id": str(execution.id)}}, size=1000)
    assert sorted(record_id_of(hit["_id"]) for hit in response["hits"]["hits"]) == expected_ids
    assert response["hits"]["total"]["value"] == len(expected_ids)
    assert not rows.filter(shipped_at__isnull=True).exists()
    # and the run's messages are searchable by text
    hits = es.search(index=alias_name(), query={"bool": {
        "filter": [{"term": {"execution_id": str(execution.id)}}],
        "must": [{"match_phrase": {"message": "step gray"}}]}}, size=100)["hits"]["hits"]
    assert hits and all("gray" in hit["_source"]["message"] for hit in hits)
