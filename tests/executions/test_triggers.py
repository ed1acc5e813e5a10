"""Triggers on the real services: uploads through the API (the real upload path and object store)
matched in their transaction, runs started by a real Celery worker; exactly one run per file
(or batch) under concurrent uploads, a file announced twice, a broker that is down."""

from __future__ import annotations

import io
import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from executions import triggers
from executions.automation_models import Trigger, TriggerFile, TriggerFileStatus
from executions.models import PipelineExecution
from files.models import File
from files.services import file_uploaded_announce
from imageflow.orgs.models import Membership, Organization
from tests.api.conftest import client_for
from tests.executions.conftest import make_jpeg, node, wait_for
from tests.factories import UserFactory


def upload(api, name: str, *, color=(200, 60, 30), tags=None):
    handle = io.BytesIO(make_jpeg(64, 48, color))
    handle.name = name
    data = {"file": handle, **({"tags": tags} if tags else {})}
    response = api.post("/api/v1/files/", data, format="multipart")
    assert response.status_code == 201, response.content
    return File.objects.get(pk=response.json()["id"])


def runs_of(pipeline) -> list[PipelineExecution]:
    return list(PipelineExecution.objects.filter(pipeline=pipeline).order_by("created_at"))


@pytest.fixture
def gray_pipeline(builtins, pipeline_of):
    return pipeline_of([node("gray", "grayscale")])


# --- matching ------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_rule_matches_mime_type_name_pattern_and_tag(user, gray_pipeline):
    trigger = triggers.trigger_create(user=user, pipeline=gray_pipeline, name="scans", match_mime_type="image/*",
                                      match_name_pattern="scan-*.jpg", match_tag="inbox")
    file = File(original_name="Scan-0001.JPG", mime_type="image/jpeg", metadata={"tags": ["inbox", "x"]})
    assert triggers.trigger_matches(trigger, file)
    assert not triggers.trigger_matches(trigger, File(original_name="photo.jpg", mime_type="image/jpeg",
                                                      metadata={"tags": ["inbox"]}))
    assert not triggers.trigger_matches(trigger, File(original_name="scan-1.jpg", mime_type="image/jpeg",
                                                      metadata={"tags": ["other"]}))
    trigger.match_mime_type = "image/png"
    assert not triggers.trigger_matches(trigger, file)


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_a_matching_upload_starts_exactly_one_run_and_others_none(thread_worker, user, gray_pipeline):
    # given a trigger on JPEGs named scan-* tagged "inbox"
    trigger = triggers.trigger_create(user=user, pipeline=gray_pipeline, name="scans", match_name_pattern="scan-*",
                                      match_tag="inbox")
    api = client_for(user)
    # when three files are uploaded: one matching, one with another name, one without the tag
    matching = upload(api, "scan-1.jpg", tags=["inbox"])
    upload(api, "holiday.jpg", tags=["inbox"])
    upload(api, "scan-2.jpg")
    # then exactly one run starts, as the uploader, on the matching file, and completes
    match = wait_for(lambda: TriggerFile.objects.filter(trigger=trigger, status="started").first(),
                     timeout=30, what="the trigger's run")
    run = wait_for(lambda: PipelineExecution.objects.filter(pk=match.execution_id, status="completed").first(),
                   timeout=30, what="the run to complete")
    assert [r.pk for r in runs_of(gray_pipeline)] == [run.pk]
    assert run.input_data["inputs"] == [str(matching.pk)] and run.created_by_id == user.pk
    assert TriggerFile.objects.filter(trigger=trigger).count() == 1
    assert File.objects.get(pk=matching.pk).metadata["tags"] == ["inbox"]


@pytest.mark.worker
@pytest.mark.timeout(180)
def test_concurrent_uploads_start_one_run_each_across_worker_processes(process_worker, user, gray_pipeline):
    # given a per-file trigger, and a two-process worker that starts the runs
    trigger = triggers.trigger_create(user=user, pipeline=gray_pipeline, name="all")
    # when 6 clients upload different files at the same moment
    barrier = threading.Barrier(6)
    uploaded: list[File] = []
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            api = client_for(user)
            barrier.wait()
            uploaded.append(upload(api, f"photo-{i}.jpg", color=(i * 40, 10, 10)))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # then each file got exactly one run, of it alone
    wait_for(lambda: TriggerFile.objects.filter(trigger=trigger, status="started").count() == 6, timeout=60,
             what="six runs")
    runs = runs_of(gray_pipeline)
    assert len(runs) == 6
    assert sorted(r.input_data["inputs"][0] for r in runs) == sorted(str(f.pk) for f in uploaded)
    assert all(len(r.input_data["inputs"]) == 1 for r in runs)
    wait_for(lambda: all(PipelineExecution.objects.get(pk=r.pk).status == "completed" for r in runs), timeout=60,
             what="the runs to complete")


# --- exactly once without a worker (tasks queue up; the services are called here) ----------------

@pytest.mark.django_db(transaction=True)
def test_the_same_file_announced_twice_makes_one_run(user, gray_pipeline):
    trigger = triggers.trigger_create(user=user, pipeline=gray_pipeline, name="all")
    file = upload(client_for(user), "a.jpg")
    # when the upload is announced again (a second notification of the same object) and both
    # announcements are processed, twice each
    file_uploaded_announce(file)
    for _ in range(2):
        triggers.trigger_process(trigger_id=trigger.pk)
    # then one match and one run
    assert TriggerFile.objects.filter(trigger=trigger).count() == 1
    runs = runs_of(gray_pipeline)
    assert len(runs) == 1 and runs[0].input_data["inputs"] == [str(file.pk)]
    # even a match put back to pending (a crash between the run's start and the match's record,
    # were they not one transaction) starts no second run: the run's idempotency key names it
    TriggerFile.objects.filter(trigger=trigger).update(status=TriggerFileStatus.PENDING, execution=None)
    triggers.trigger_process(trigger_id=trigger.pk)
    assert [r.pk for r in runs_of(gray_pipeline)] == [runs[0].pk]
    assert TriggerFile.objects.get(trigger=trigger).execution_id == runs[0].pk


@pytest.mark.django_db(transaction=True)
def test_batches_of_n_and_the_window_for_the_rest(user, gray_pipeline, settings):
    # given a trigger batching 3 files, with a window of an hour
    trigger = triggers.trigger_create(user=user, pipeline=gray_pipeline, name="batches", batch_size=3,
                                      batch_window_seconds=3600)
    api = client_for(user)
    files = [upload(api, f"b-{i}.jpg", color=(i * 30, 100, 100)) for i in range(7)]
    # when the trigger is processed: two full batches start, in upload order; the 7th waits
    assert triggers.trigger_process(trigger_id=trigger.pk) == {"started": 2, "failed": 0}
    runs = runs_of(gray_pipeline)
    assert [r.input_data["inputs"] for r in runs] == [[str(f.pk) for f in files[0:3]], [str(f.pk) for f in files[3:6]]]
    assert list(TriggerFile.objects.filter(status="pending").values_list("file_id", flat=True)) == [files[6].pk]
    assert triggers.trigger_process(trigger_id=trigger.pk) == {"started": 0, "failed": 0}
    # when its window has passed, the sweep starts the partial batch
    settings.TRIGGER_SWEEP_INTERVAL_SECONDS = 0
    TriggerFile.objects.filter(status="pending").update(created_at=timezone.now() - timedelta(hours=2))
    assert triggers.triggers_sweep() == 1
    runs = runs_of(gray_pipeline)
    assert len(runs) == 3 and runs[2].input_data["inputs"] == [str(files[6].pk)]
    assert not TriggerFile.objects.filter(status="pending").exists()


@pytest.mark.django_db(transaction=True)
def test_broker_down_at_upload_the_match_waits_for_the_sweep(user, gray_pipeline, settings, monkeypatch):
    from celery import current_app
    from kombu.exceptions import OperationalError

    trigger = triggers.trigger_create(user=user, pipeline=gray_pipeline, name="all")
    task = current_app.tasks[triggers.PROCESS_TASK]

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(task, "apply_async", broker_down)
    # when a file is uploaded while the broker is down: the upload succeeds, the match is kept
    file = upload(client_for(user), "a.jpg")
    match = TriggerFile.objects.get(trigger=trigger)
    assert match.status == "pending" and match.file_id == file.pk and runs_of(gray_pipeline) == []
    # then the sweep, once the broker is back, starts its one run
    monkeypatch.undo()
    settings.TRIGGER_SWEEP_INTERVAL_SECONDS = 0
    assert triggers.triggers_sweep() == 1
    runs = runs_of(gray_pipeline)
    assert len(runs) == 1 and runs[0].input_data["inputs"] == [str(file.pk)]


@pytest.mark.django_db(transaction=True)
def test_organization_trigger_matches_its_members_uploads_run_as_the_uploader(user, gray_pipeline):
    org = Organization.objects.create(name="Lab", slug="lab")
    member, outsider = UserFactory(), UserFactory()
    Membership.objects.create(organization=org, user=user)
    Membership.objects.create(organization=org, user=member)
    trigger = triggers.trigger_create(user=user, pipeline=gray_pipeline, name="org", organization=org)
    from_member = upload(client_for(member), "m.jpg")
    upload(client_for(outsider), "o.jpg")
    triggers.trigger_process(trigger_id=trigger.pk)
    runs = runs_of(gray_pipeline)
    assert [(r.created_by_id, r.input_data["inputs"]) for r in runs] == [(member.pk, [str(from_member.pk)])]


@pytest.mark.django_db(transaction=True)
def test_a_run_that_cannot_start_marks_its_files_failed(user, gray_pipeline):
    trigger = triggers.trigger_create(user=user, pipeline=gray_pipeline, name="all")
    file = upload(client_for(user), "a.jpg")
    # the pipeline's component went away meanwhile: the definition no longer validates
    Trigger.objects.filter(pk=trigger.pk).update(parameters={"gray": {"no_such_parameter": 1}})
    assert triggers.trigger_process(trigger_id=trigger.pk) == {"started": 0, "failed": 1}
    match = TriggerFile.objects.get(file=file)
    assert match.status == "failed" and "no_such_parameter" in match.error_message


# --- the API -------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_trigger_api_validates_and_scopes(user, gray_pipeline, pipeline_of):
    api = client_for(user)
    response = api.post("/api/v1/triggers/", {"name": "t", "pipeline": str(gray_pipeline.pk), "batch_size": 5,
                                              "batch_window_seconds": 30, "match_mime_type": "image/jpeg"},
                        format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["batch_size"], body["batch_window_seconds"], body["created_by"]) == (5, 30, str(user.pk))
    assert client_for(UserFactory()).get(f"/api/v1/triggers/{body['id']}/").status_code == 404
    theirs = pipeline_of([node("gray", "grayscale")], owner=UserFactory())
    refused = api.post("/api/v1/triggers/", {"name": "t", "pipeline": str(theirs.pk)}, format="json")
    assert refused.status_code == 400 and "pipeline" in refused.json()["errors"]
    bad_params = api.post("/api/v1/triggers/", {"name": "t", "pipeline": str(gray_pipeline.pk),
                                                "parameters": {"gray": {"nope": 1}}}, format="json")
    assert bad_params.status_code == 400
    # a tag that is not a word is refused before anything is stored
    handle = io.BytesIO(make_jpeg(16, 16))
    handle.name = "a.jpg"
    before = File.objects.count()
    bad_tag = api.post("/api/v1/files/", {"file": handle, "tags": ["bad tag!"]}, format="multipart")
    assert bad_tag.status_code == 400 and "tags" in bad_tag.json()["errors"]
    assert File.objects.count() == before
