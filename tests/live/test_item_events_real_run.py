"""A real run of a map step over many items (a real Celery worker in a thread of this process, the
real broker, database and Redis): its watchers get coalesced step_items events with growing
counts, the step's completion after its last counts, and the status poll shows the counts move."""

import json
import time

import pytest
import redis
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from executions import events
from executions.models import ExecutionStatus
from executions.services import execution_start
from files.models import File
from tests.executions.conftest import (  # noqa: F401  (fixtures)
    builtins,
    engine_settings,
    jpeg_file,
    node,
    pipeline_of,
    thread_worker,
)

pytestmark = [pytest.mark.worker, pytest.mark.timeout(180), pytest.mark.django_db(transaction=True)]

ITEMS = 40


def test_a_real_map_run_publishes_coalesced_item_counts_and_the_poll_shows_them_move(
    engine_settings, builtins, pipeline_of, jpeg_file, user, thread_worker,
):
    # given 4 item events a second, one image per item and 40 images that each take ~50 ms
    engine_settings.ITEM_EVENTS_PER_SECOND = 4.0
    engine_settings.STEP_ITEM_BATCH = 1
    engine_settings.ITEM_DRAINS_PER_RUN = 2
    source = jpeg_file(32, 32)
    extra = File.objects.bulk_create([
        File(storage_path=source.storage_path, original_name=f"n{i}.jpg", file_size=source.file_size,
             mime_type=source.mime_type, checksum=source.checksum, created_by=user) for i in range(ITEMS - 1)])
    pipeline = pipeline_of([node("pause", "passthrough", sleep_seconds=0.05)])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    listener = redis.Redis.from_url(settings.CHANNEL_LAYER_REDIS_URL, decode_responses=True).pubsub()
    try:
        # when the run starts, watched on its group (every run's group: the id is not known before)
        listener.psubscribe(events.group_channel("*"))
        assert listener.get_message(timeout=2)["type"] == "psubscribe"
        execution = execution_start(pipeline=pipeline, inputs=[source.id] + [f.id for f in extra], user=user)
        began = time.monotonic()
        polled = []
        while time.monotonic() - began < 90:
            body = api.get(f"/api/v1/executions/{execution.id}/").json()
            polled.append((body["progress"]["completed_items"], body["progress"]["total_items"],
                           body["steps"][0]["items"]))
            if body["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.1)
        took = time.monotonic() - began
        time.sleep(0.5)
        published = []
        while (message := listener.get_message(timeout=0.2)) is not None:
            if message["type"] == "pmessage" and message["channel"] == events.group_channel(execution.id):
                published.append(json.loads(json.loads(message["data"])["text"]))
    finally:
        listener.close()
    assert body["status"] == ExecutionStatus.COMPLETED, body["error_message"]
    # then the status poll saw the counts move, never back, to 40 of 40
    completed = [c for c, _, _ in polled]
    assert completed == sorted(completed) and completed[-1] == ITEMS
    assert len({c for c in completed if 0 < c < ITEMS}) >= 2, polled
    assert polled[-1][2] == {"total": ITEMS, "completed": ITEMS, "failed": 0, "skipped": 0, "cached": 0}
    # and the watchers got growing item counts, a few a second, not one per item
    items = [e for e in published if e["type"] == "step_items"]
    counts = [e["items"]["completed"] for e in items]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert 2 <= len(items) <= settings.ITEM_EVENTS_PER_SECOND * took + 2, (len(items), took)
    assert len(items) < ITEMS / 2
    # and the step's completion came after its last counts and carries them; the run's end last
    kinds = [(e["type"], e.get("node_id"), e.get("status")) for e in published]
    completion = kinds.index(("step", "pause", "completed"))
    assert items[-1]["items"]["completed"] == ITEMS and published.index(items[-1]) < completion
    assert published[completion]["items"] == {"total": ITEMS, "completed": ITEMS, "failed": 0, "skipped": 0,
                                              "cached": 0}
    assert published[-1]["final"] is True and kinds[-1] == ("execution", None, "completed")
    assert [e["seq"] for e in published] == sorted(e["seq"] for e in published)
