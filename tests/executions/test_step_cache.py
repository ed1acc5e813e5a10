"""The step cache (executions/engine/cache.py) on the real services: keys, hits made into rows of
another user that share the first run's objects (no object-store request), reference-counted
deletion checked in the real object store, LRU eviction down to the budget, the statistics, the
API endpoint and the dashboard's card."""

from __future__ import annotations

import io
import threading
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image
from rest_framework.test import APIClient

from executions.catalogue import builtin_components_register
from executions.engine import cache
from executions.engine.runners import StepContext
from executions.engine.runners.builtin import BuiltinRunner
from executions.models import StepCacheEntry, StepItem
from files.models import File
from files.services import file_delete, file_read_bytes, file_store_bytes
from registry.models import Component
from tests import factories
from tests.admin.images import store_requests

pytestmark = pytest.mark.django_db(transaction=True)  # file_delete releases objects after commit


def _png(color, size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def resize(db) -> Component:
    builtin_components_register()
    return Component.objects.get(name="resize", version="1.0.0")


@pytest.fixture
def images(user):
    return [file_store_bytes(content=_png(color), original_name=f"in-{i}.png", created_by=user, prefix="uploads")
            for i, color in enumerate([(200, 10, 10), (10, 200, 10)])]


def _context(component, *, owner, inputs, node_id="small", parameters=None) -> StepContext:
    execution = factories.PipelineExecutionFactory(created_by=owner)
    step = factories.ComponentExecutionFactory(execution=execution, component=component, node_id=node_id)
    return StepContext(step=step, attempt=1, parameters=parameters or {}, inputs=inputs,
                       cancelled=threading.Event(), created_by_id=owner.pk)


def _params(component, **overrides) -> dict:
    defaults = {name: spec["default"] for name, spec in component.input_schema["properties"].items()
                if "default" in spec}
    return {**defaults, **overrides}


def _first_run(component, *, owner, inputs, parameters) -> tuple[str, StepContext, list[File]]:
    """A real built-in run of the inputs, recorded as the cache entry of its item."""
    context = _context(component, owner=owner, inputs=inputs, parameters=parameters, node_id="first")
    result = BuiltinRunner().run(context)
    item = StepItem.objects.create(execution_id=context.step.execution_id, step=context.step, index=0,
                                   inputs=[str(f.id) for f in inputs], status="completed")
    key = cache.cache_key(component=component, parameters=parameters, inputs=inputs)
    cache.cache_record(key=key, item_id=item.pk, outputs=result.outputs, component=component)
    return key, context, result.outputs


# --- the key ------------------------------------------------------------------------------------

def test_the_key_covers_parameters_version_and_input_checksums(resize, images):
    params = _params(resize, width=20)
    key = cache.cache_key(component=resize, parameters=params, inputs=images)
    # the same item asks the same key, whatever the parameters' order
    assert key == cache.cache_key(component=resize, parameters=dict(reversed(list(params.items()))), inputs=images)
    assert len(key) == 64 and int(key, 16) >= 0
    # a parameter, the component's version, an input's checksum and the inputs' order each change it
    assert cache.cache_key(component=resize, parameters={**params, "width": 21}, inputs=images) != key
    newer = Component(name=resize.name, version="1.0.1", runner=resize.runner, docker_image=resize.docker_image,
                      deterministic=True)
    assert cache.cache_key(component=newer, parameters=params, inputs=images) != key
    changed = File(checksum="0" * 64)
    assert cache.cache_key(component=resize, parameters=params, inputs=[images[0], changed]) != key
    assert cache.cache_key(component=resize, parameters=params, inputs=list(reversed(images))) != key


def test_no_key_without_determinism_a_checksum_or_the_cache(resize, images, settings):
    params = _params(resize, width=20)
    passthrough = Component.objects.get(name="passthrough")
    assert passthrough.deterministic is False
    assert cache.cache_key(component=passthrough, parameters={"sleep_seconds": 0}, inputs=images) is None
    assert cache.cache_key(component=resize, parameters=params, inputs=[images[0], File(checksum=None)]) is None
    settings.STEP_CACHE_ENABLED = False
    assert cache.cache_key(component=resize, parameters=params, inputs=images) is None


# --- hits ---------------------------------------------------------------------------------------

def test_a_hit_makes_rows_of_another_user_on_the_same_objects_without_an_object_request(resize, images, user):
    # given user A's run of resize on two images, recorded
    params = _params(resize, width=20)
    key, first, outputs = _first_run(resize, owner=user, inputs=images, parameters=params)
    other = factories.UserFactory()
    theirs = [File.objects.create(original_name=f"theirs-{i}.png", mime_type=f.mime_type, file_size=f.file_size,
                                  storage_path=f.storage_path, checksum=f.checksum, created_by=other)
              for i, f in enumerate(images)]  # user B's own rows of the same images
    # when user B's item with the same key is completed from the cache
    assert cache.cache_key(component=resize, parameters=params, inputs=theirs) == key
    context = _context(resize, owner=other, inputs=theirs, node_id="thumb")
    with store_requests() as requests:
        hit = cache.cache_lookup(key)
        made = cache.cache_materialize(hit, context=context)
    # then nothing was asked of the object store (so nothing was read, let alone decoded)
    assert requests == []
    # and B owns new rows, in order, naming A's objects, tagged with B's run and the key
    assert [f.storage_path for f in made] == [f.storage_path for f in outputs]
    assert {f.id for f in made}.isdisjoint({f.id for f in outputs})
    rows = {f.id: f for f in File.objects.filter(id__in=[f.id for f in made])}
    for mine, original, source in zip(made, outputs, theirs):
        row = rows[mine.id]
        assert row.created_by_id == other.pk and row.checksum == original.checksum
        assert row.file_size == original.file_size and row.mime_type == original.mime_type
        assert row.metadata["width"] == original.metadata["width"] == 20
        assert row.metadata["execution_id"] == str(context.step.execution_id) != original.metadata["execution_id"]
        assert row.metadata["step_id"] == str(context.step.pk) and row.metadata["node_id"] == "thumb"
        assert row.metadata["cache_key"] == key and "cache_key" not in original.metadata
        assert row.original_name == context.output_name(source, ".png")  # named by B's run: theirs-0-thumb.png
        # output i derives from input i
        assert context.derived_from[str(mine.id)] == [str(source.id)]
    assert context.created_files == made
    assert file_read_bytes(made[1]) == file_read_bytes(outputs[1])
    assert hit.item_id == StepItem.objects.get(step=first.step).pk


def test_a_lookup_counts_its_hit_and_moves_the_last_use(resize, images, user):
    params = _params(resize, width=20)
    key, _, _ = _first_run(resize, owner=user, inputs=images, parameters=params)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    StepCacheEntry.objects.filter(key=key).update(last_used_at=an_hour_ago)
    before = cache.cache_stats()
    assert cache.cache_lookup(key) is not None
    assert cache.cache_lookup("f" * 64) is None
    cache.cache_miss()
    entry = StepCacheEntry.objects.get(key=key)
    assert entry.hits == 1 and entry.last_used_at > an_hour_ago + timedelta(minutes=59)
    after = cache.cache_stats()
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (1, 1)


def test_the_first_record_of_a_key_stays_and_a_gone_output_records_nothing(resize, images, user):
    params = _params(resize, width=20)
    key, _, outputs = _first_run(resize, owner=user, inputs=images, parameters=params)
    entry = StepCacheEntry.objects.get(key=key)
    assert entry.bytes == sum(f.file_size for f in outputs) > 0
    assert entry.storage_paths == [f.storage_path for f in outputs]
    assert [o["storage_path"] for o in entry.outputs] == entry.storage_paths
    assert all("execution_id" not in o["metadata"] for o in entry.outputs)
    # a second record of the key (a duplicate completion) changes nothing
    cache.cache_record(key=key, item_id=None, outputs=outputs[:1], component=resize)
    assert StepCacheEntry.objects.get(key=key).storage_paths == entry.storage_paths
    # an output deleted before its record: no entry names its (deleted) object
    file_delete(file=File.objects.get(pk=outputs[0].pk))
    cache.cache_record(key="a" * 64, item_id=None, outputs=outputs, component=resize)
    assert not StepCacheEntry.objects.filter(key="a" * 64).exists()
    assert cache.cache_stats()["entries"] == 1


def test_materializing_an_evicted_entry_inserts_nothing(resize, images, user, settings):
    params = _params(resize, width=20)
    key, _, _ = _first_run(resize, owner=user, inputs=images, parameters=params)
    hit = cache.cache_lookup(key)
    settings.STEP_CACHE_MAX_BYTES = 0
    cache.cache_evict()
    context = _context(resize, owner=user, inputs=images)
    files_before = File.objects.count()
    with pytest.raises(cache.CacheEntryGone):
        cache.cache_materialize(hit, context=context)
    assert File.objects.count() == files_before and context.created_files == []


# --- reference counting -------------------------------------------------------------------------

def test_an_object_lives_while_a_row_or_an_entry_names_it(resize, images, user, settings):
    # given A's output, its cache entry, and B's row made from the entry: three references
    params = _params(resize, width=20)
    key, _, outputs = _first_run(resize, owner=user, inputs=images, parameters=params)
    other = factories.UserFactory()
    theirs = cache.cache_materialize(cache.cache_lookup(key), context=_context(resize, owner=other, inputs=images))
    object_key = outputs[0].storage_path
    # when A deletes the original, B's file still has its bytes
    file_delete(file=outputs[0])
    assert default_storage.exists(object_key)
    assert file_read_bytes(File.objects.get(pk=theirs[0].pk)) == file_read_bytes(theirs[0])
    # when the entry is evicted, B's row still names it
    settings.STEP_CACHE_MAX_BYTES = 0
    assert cache.cache_evict()["evicted"] == 1
    assert default_storage.exists(object_key)
    # and the last reference takes the object with it
    file_delete(file=File.objects.get(pk=theirs[0].pk))
    assert not default_storage.exists(object_key)
    # (the other output's object is still named by both its rows)
    assert default_storage.exists(outputs[1].storage_path)


def test_an_entry_alone_keeps_an_object_and_its_eviction_deletes_it(resize, images, user, settings):
    params = _params(resize, width=20)
    key, _, outputs = _first_run(resize, owner=user, inputs=images, parameters=params)
    for output in outputs:
        file_delete(file=output)
    assert all(default_storage.exists(o.storage_path) for o in outputs)
    # a later item still gets the bytes
    made = cache.cache_materialize(cache.cache_lookup(key), context=_context(resize, owner=user, inputs=images))
    assert Image.open(io.BytesIO(file_read_bytes(made[0]))).size == (20, 15)
    for output in made:
        file_delete(file=output)
    settings.STEP_CACHE_MAX_BYTES = 0
    result = cache.cache_evict()
    assert result["evicted"] == 1 and result["objects_deleted"] == 2
    assert not any(default_storage.exists(o.storage_path) for o in outputs)


# --- eviction -----------------------------------------------------------------------------------

def test_eviction_removes_the_least_recently_used_first_down_to_the_budget(resize, images, user, settings):
    # given three entries (widths 10, 20, 30) last used 3, 2 and 1 hours ago
    keys, outputs = [], []
    for hours, width in [(3, 10), (2, 20), (1, 30)]:
        key, _, made = _first_run(resize, owner=user, inputs=images, parameters=_params(resize, width=width))
        StepCacheEntry.objects.filter(key=key).update(last_used_at=timezone.now() - timedelta(hours=hours))
        keys.append(key)
        outputs.append(made)
    sizes = [StepCacheEntry.objects.get(key=k).bytes for k in keys]
    # and the oldest entry's rows deleted (only the entry names its objects)
    for output in outputs[0]:
        file_delete(file=output)
    # when the budget holds the newest entry and a byte less than the middle one
    settings.STEP_CACHE_MAX_BYTES = sizes[2] + sizes[1] - 1
    result = cache.cache_evict()
    # then the two oldest are evicted, the newest stays
    assert list(StepCacheEntry.objects.values_list("key", flat=True)) == [keys[2]]
    assert result["evicted"] == 2 and result["bytes_freed"] == sizes[0] + sizes[1]
    assert result["bytes"] == sizes[2] <= settings.STEP_CACHE_MAX_BYTES
    # the oldest entry's objects had no rows left: deleted; the middle one's rows keep theirs
    assert result["objects_deleted"] == 2
    assert not any(default_storage.exists(o.storage_path) for o in outputs[0])
    assert all(default_storage.exists(o.storage_path) for o in outputs[1])
    stats = cache.cache_stats()
    assert (stats["entries"], stats["bytes"]) == (1, sizes[2])
    # under the budget, nothing more goes
    assert cache.cache_evict()["evicted"] == 0


def test_the_evict_task_is_on_beats_schedule(settings):
    from executions.tasks import step_cache_evict

    entry = settings.CELERY_BEAT_SCHEDULE["executions-step-cache-evict"]
    assert entry["task"] == step_cache_evict.name == "executions.tasks.step_cache_evict"
    assert step_cache_evict() == {"evicted": 0, "bytes_freed": 0, "objects_deleted": 0, "entries": 0, "bytes": 0,
                                  "max_bytes": settings.STEP_CACHE_MAX_BYTES}


# --- statistics, API, dashboard -----------------------------------------------------------------

def test_stats_count_entries_bytes_hits_and_misses(resize, images, user, settings):
    settings.STEP_CACHE_MAX_BYTES = 5_000_000
    assert cache.cache_stats() == {"enabled": True, "entries": 0, "bytes": 0, "max_bytes": 5_000_000, "hits": 0,
                                   "misses": 0, "hit_rate": None}
    key, _, outputs = _first_run(resize, owner=user, inputs=images, parameters=_params(resize, width=20))
    for _ in range(3):
        cache.cache_lookup(key)
    cache.cache_miss(count=1)
    stats = cache.cache_stats()
    assert stats == {"enabled": True, "entries": 1, "bytes": sum(f.file_size for f in outputs),
                     "max_bytes": 5_000_000, "hits": 3, "misses": 1, "hit_rate": 0.75}


def test_the_api_answers_the_stats_to_signed_in_users(resize, images, user):
    key, _, outputs = _first_run(resize, owner=user, inputs=images, parameters=_params(resize, width=20))
    cache.cache_lookup(key)
    cache.cache_miss(count=3)
    client = APIClient()
    assert client.get("/api/v1/cache/").status_code == 401
    client.force_authenticate(user)
    response = client.get("/api/v1/cache/")
    assert response.status_code == 200
    assert response.json() == {"enabled": True, "entries": 1, "bytes": sum(f.file_size for f in outputs),
                               "max_bytes": 10 * 1024 ** 3, "hits": 1, "misses": 3, "hit_rate": 0.25}


def test_the_dashboard_shows_the_cache_card(staff_client, resize, images, user, settings):
    settings.STEP_CACHE_MAX_BYTES = 2 * 1024 ** 2
    key, _, _ = _first_run(resize, owner=user, inputs=images, parameters=_params(resize, width=20))
    cache.cache_lookup(key)
    cache.cache_miss(count=1)
    response = staff_client.get("/admin/dashboard/")
    assert response.status_code == 200
    card = response.context["step_cache"]
    assert (card["entries"], card["hits"], card["misses"]) == (1, 1, 1)
    html = response.content.decode()
    section = html[html.index('id="dash-step-cache"'):]
    section = section[:section.index("</section>")]
    assert "50.0 %" in section and "2.0\xa0MB" in section


def test_the_builtin_runner_counts_its_decodes(resize, images, user):
    # the figure a benchmark reads to show a cached run decodes nothing
    mapped = BuiltinRunner().run(_context(resize, owner=user, inputs=images, parameters=_params(resize, width=20)))
    board = Component.objects.get(name="side_by_side")
    merged = BuiltinRunner().run(_context(board, owner=user, inputs=images, parameters=_params(board)))
    passthrough = Component.objects.get(name="passthrough")
    passed = BuiltinRunner().run(_context(passthrough, owner=user, inputs=images, parameters={"sleep_seconds": 0}))
    assert (mapped.metrics["decoded"], len(mapped.outputs)) == (2, 2)
    assert (merged.metrics["decoded"], len(merged.outputs)) == (2, 1)
    assert passed.metrics["decoded"] == 0


# --- end to end: a real worker runs the same pipeline twice -----------------------------------------

def _decoded(execution) -> int:
    return sum((item.metrics or {}).get("decoded", 0) for item in StepItem.objects.filter(execution=execution))


@pytest.mark.worker
@pytest.mark.timeout(240)
def test_a_second_run_of_the_same_images_is_completed_from_the_cache(engine_settings, builtins, pipeline_of,
                                                                     jpeg_file, user):
    from executions.models import ExecutionStatus
    from executions.services import execution_start
    from tests.executions.conftest import ProcessWorker, _purge_queue, node, wait_finished

    # given a worker of two processes, items of 2 images, and a 3-step chain on 4 images
    engine_settings.STEP_ITEM_BATCH = 2
    _purge_queue()
    worker = ProcessWorker(extra_env={"STEP_ITEM_BATCH": "2", "STEP_CACHE_ENABLED": "true"})
    try:
        pipeline = pipeline_of([node("small", "resize", width=120), node("gray", "grayscale"),
                                node("soft", "blur", radius=2)],
                               [{"from": "small", "to": "gray"}, {"from": "gray", "to": "soft"}])
        sources = [jpeg_file(320 + 8 * i, 240) for i in range(4)]

        def run(**overrides):
            execution = wait_finished(execution_start(pipeline=pipeline, inputs=[s.id for s in sources], user=user,
                                                      **overrides), timeout=120)
            assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
            return execution, {s.node_id: s for s in execution.steps.all()}

        # when it runs the first time, every item runs and decodes its images
        first, first_steps = run()
        assert {n: (s.item_count, s.items_cached) for n, s in first_steps.items()} == {
            "small": (2, 0), "gray": (2, 0), "soft": (2, 0)}
        assert _decoded(first) == 12  # 4 images x 3 steps
        # then the second run on the same images completes every item from the cache, decoding none
        second, second_steps = run()
        assert {n: (s.item_count, s.items_cached) for n, s in second_steps.items()} == {
            "small": (2, 2), "gray": (2, 2), "soft": (2, 2)}
        assert _decoded(second) == 0
        firsts = [File.objects.get(pk=f) for f in first_steps["soft"].output_data["files"]]
        seconds = [File.objects.get(pk=f) for f in second_steps["soft"].output_data["files"]]
        assert [f.checksum for f in seconds] == [f.checksum for f in firsts]
        assert [f.storage_path for f in seconds] == [f.storage_path for f in firsts]
        assert {f.id for f in seconds}.isdisjoint({f.id for f in firsts})
        assert all(f.metadata["execution_id"] == str(second.pk) for f in seconds)
        # and a changed parameter misses where it changes the key: blur runs, the steps before it do not
        third, third_steps = run(parameters={"soft": {"radius": 3}})
        assert {n: s.items_cached for n, s in third_steps.items()} == {"small": 2, "gray": 2, "soft": 0}
        assert _decoded(third) == 4
        thirds = [File.objects.get(pk=f) for f in third_steps["soft"].output_data["files"]]
        assert {f.checksum for f in thirds}.isdisjoint({f.checksum for f in firsts})
        stats = cache.cache_stats()
        assert (stats["entries"], stats["hits"], stats["misses"]) == (8, 10, 8)
    finally:
        worker.stop()
        _purge_queue()
