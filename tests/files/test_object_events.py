"""Object-store event notifications on the real object store: objects put straight into the
bucket under inbox/<username>/ become that user's files when MinIO's (or AWS's, through SNS)
S3 event is POSTed, validated as uploads, registered once however often notified, and they fire
the triggers."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote_plus

import pytest
from django.conf import settings as django_settings
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from executions import triggers
from executions.automation_models import TriggerFile
from executions.catalogue import builtin_components_register
from executions.models import PipelineExecution
from files.models import File
from registry.models import Pipeline
from tests.executions.conftest import make_jpeg

TOKEN = "object-events-token-for-the-tests-0123456789"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def events_on(settings):
    settings.OBJECT_EVENTS_TOKEN = TOKEN
    return settings


def put_object(key: str, content: bytes) -> None:
    default_storage.bucket.Object(key).put(Body=content)


def minio_event(key: str, *, bucket: str | None = None, event: str = "s3:ObjectCreated:Put") -> dict:
    bucket = bucket or django_settings.S3_BUCKET
    encoded = quote_plus(key, safe="/")
    return {"EventName": event, "Key": f"{bucket}/{encoded}", "Records": [{
        "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "", "eventName": event,
        "userIdentity": {"principalId": "minio"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": encoded, "size": 1234, "eTag": "abc", "sequencer": "17A"}}}]}


def post(body: dict, token: str | None = TOKEN, content_type: str = "application/json"):
    client = APIClient()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.post("/api/v1/object-events/", json.dumps(body), content_type=content_type, **headers)


def test_a_created_object_becomes_the_users_file_once_and_fires_its_trigger(events_on, user):
    builtin_components_register()
    pipeline = Pipeline.objects.create(name="gray", created_by=user, definition={"nodes": [
        {"id": "gray", "component": {"name": "grayscale", "version": "1.0.0"}}], "edges": []})
    trigger = triggers.trigger_create(user=user, pipeline=pipeline, name="inbox", match_name_pattern="*.jpg")
    key = f"inbox/{user.username}/scans/page 1-{uuid.uuid4().hex[:6]}.jpg"
    content = make_jpeg(80, 60)
    put_object(key, content)
    # when MinIO notifies the object, twice (a retried notification)
    first = post(minio_event(key))
    second = post(minio_event(key))
    # then one file of that user, validated like an upload, under a key of its own
    assert first.status_code == 200, first.content
    assert first.json()["records"][0]["outcome"] == "registered"
    assert second.json()["records"][0]["outcome"] == "already registered"
    file = File.objects.get(pk=first.json()["records"][0]["file"])
    assert second.json()["records"][0]["file"] == str(file.pk)
    assert file.created_by_id == user.pk and file.original_name.startswith("page 1-")
    assert file.mime_type == "image/jpeg" and (file.metadata["width"], file.metadata["height"]) == (80, 60)
    assert file.metadata["source"] == {"bucket": django_settings.S3_BUCKET, "key": key}
    assert file.storage_path.startswith("uploads/") and file.storage_path != key
    assert File.objects.filter(metadata__source__key=key).count() == 1
    # and the trigger matched it once and started one run on it
    assert list(TriggerFile.objects.filter(trigger=trigger).values_list("file_id", flat=True)) == [file.pk]
    triggers.trigger_process(trigger_id=trigger.pk)
    runs = PipelineExecution.objects.filter(pipeline=pipeline)
    assert [r.input_data["inputs"] for r in runs] == [[str(file.pk)]]


def test_aws_sns_envelope_non_images_other_prefixes_and_events(events_on, user):
    good = f"inbox/{user.username}/{uuid.uuid4().hex[:8]}.jpg"
    text = f"inbox/{user.username}/{uuid.uuid4().hex[:8]}.jpg"
    put_object(good, make_jpeg(20, 20))
    put_object(text, b"not an image at all\n" * 20)
    aws = {"Records": [
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": django_settings.S3_BUCKET}, "object": {"key": good}}},
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": django_settings.S3_BUCKET}, "object": {"key": text}}},
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": django_settings.S3_BUCKET},
                                                  "object": {"key": "uploads/2026/01/01/x.jpg"}}},
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "another-bucket"}, "object": {"key": good}}},
        {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": django_settings.S3_BUCKET},
                                                     "object": {"key": good}}},
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": django_settings.S3_BUCKET},
                                                  "object": {"key": "inbox/nobody-by-this-name/a.jpg"}}},
    ]}
    sns = {"Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:eu-west-1:1:imageflow",
           "Message": json.dumps(aws)}
    response = post(sns, content_type="text/plain; charset=UTF-8")  # as SNS sends it
    assert response.status_code == 200, response.content
    outcomes = [r["outcome"] for r in response.json()["records"]]
    assert outcomes[0] == "registered"
    assert outcomes[1].startswith("refused:") and "image" in outcomes[1]
    assert outcomes[2] == "not under inbox/"
    assert outcomes[3].startswith("bucket another-bucket is not")
    assert outcomes[4] == "not an ObjectCreated event"
    assert outcomes[5] == "no such user"
    assert File.objects.filter(metadata__source__key=text).count() == 0
    assert post({"Event": "s3:TestEvent"}).json() == {"records": []}
    assert post({"hello": "world"}).status_code == 400


def test_the_shared_secret_is_required(events_on, user, settings):
    assert post(minio_event("inbox/x/y.jpg"), token=None).status_code == 401
    assert post(minio_event("inbox/x/y.jpg"), token="wrong-token").status_code == 401
    settings.OBJECT_EVENTS_TOKEN = ""
    assert post(minio_event("inbox/x/y.jpg")).status_code == 404


def test_one_object_notified_twice_at_the_same_moment_is_one_file(events_on, user):
    import threading

    from django.db import connections

    key = f"inbox/{user.username}/{uuid.uuid4().hex[:8]}.jpg"
    put_object(key, make_jpeg(40, 30))
    barrier = threading.Barrier(3)
    answers: list = []

    def notify() -> None:
        try:
            barrier.wait()
            answers.append(post(minio_event(key)).json()["records"][0])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=notify) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a["outcome"] for a in answers) == ["already registered", "already registered", "registered"]
    assert len({a["file"] for a in answers}) == 1
    assert File.objects.filter(metadata__source__key=key).count() == 1
