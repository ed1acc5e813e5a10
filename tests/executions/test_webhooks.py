"""Webhooks on the real services: a local HTTP receiver (a thread with http.server) that verifies
each delivery's HMAC signature and timestamp, real runs on a real Celery worker, the delivery log
through the API."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from executions import webhooks
from executions.automation_models import DeliveryStatus, WebhookDelivery, WebhookEvent, WebhookSubscription
from executions.models import ExecutionStatus
from executions.services import execution_start
from imageflow.orgs.models import Membership, Organization
from tests.api.conftest import client_for
from tests.executions.conftest import node, wait_finished, wait_for
from tests.factories import PipelineExecutionFactory, PipelineFactory, UserFactory

SECRET = "a-receiver-secret-of-some-length"
FAST_WEBHOOKS = {"WEBHOOK_RETRY_BACKOFF_SECONDS": 0.2, "WEBHOOK_RETRY_BACKOFF_MAX_SECONDS": 1.0,
                 "WEBHOOK_TIMEOUT_SECONDS": 2.0}


class Receiver:
    """An HTTP receiver on 127.0.0.1: verifies the signature of every POST (a bad one is a 401),
    answers `fail_first` of the valid ones with 500, then 200; records what it got."""

    def __init__(self, *, secret: str = SECRET, fail_first: int = 0) -> None:
        self.secret, self.fail_first = secret, fail_first
        self.received: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                valid = webhooks.webhook_signature_verify(secret=receiver.secret,
                                                          header=self.headers.get("X-ImageFlow-Signature", ""),
                                                          body=body)
                timestamp = int(self.headers.get("X-ImageFlow-Timestamp", "0"))
                with receiver.lock:
                    valid_count = sum(1 for r in receiver.received if r["valid"])
                    code = 401 if not valid else (500 if valid_count < receiver.fail_first else 200)
                    receiver.received.append({"valid": valid, "code": code, "body": body, "timestamp": timestamp,
                                              "event": self.headers.get("X-ImageFlow-Event"),
                                              "delivery": self.headers.get("X-ImageFlow-Delivery")})
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"ok" if code == 200 else b"no")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]
    yield make
    for r in made:
        r.stop()


@pytest.fixture
def fast_webhooks(settings):
    for key, value in FAST_WEBHOOKS.items():
        setattr(settings, key, value)
    return settings


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/nobody-listens"


def subscribe(user, url, events=("execution.completed",), **kwargs):
    return webhooks.webhook_subscription_create(url=url, events=list(events), user=user, secret=SECRET, **kwargs)


# --- the signature -------------------------------------------------------------------------------

def test_signature_is_hmac_sha256_over_timestamp_and_body():
    body = b'{"event":"execution.completed"}'
    header = webhooks.webhook_signature(secret=SECRET, timestamp=1700000000, body=body)
    # the documented recipe: hex HMAC-SHA256 of "<t>." + body
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert webhooks.webhook_signature_verify(secret=SECRET, header=header, body=body, now=1700000100)
    # a changed body, another secret, a replay 6 minutes later, garbage: refused
    assert not webhooks.webhook_signature_verify(secret=SECRET, header=header, body=body + b" ", now=1700000100)
    assert not webhooks.webhook_signature_verify(secret="another-secret-x", header=header, body=body, now=1700000100)
    assert not webhooks.webhook_signature_verify(secret=SECRET, header=header, body=body, now=1700000360)
    assert not webhooks.webhook_signature_verify(secret=SECRET, header="v1=abc", body=body)


# --- end to end on a worker ----------------------------------------------------------------------

@pytest.mark.worker
@pytest.mark.timeout(120)
def test_failing_receiver_is_retried_until_it_accepts_and_the_log_shows_it(
        thread_worker, fast_webhooks, builtins, pipeline_of, jpeg_file, user, receiver):
    # given a receiver that answers 500 twice, then 200, subscribed to completed runs
    hook = receiver(fail_first=2)
    subscription = subscribe(user, hook.url)
    pipeline = pipeline_of([node("gray", "grayscale")])
    # when a run completes
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user))
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    delivery = wait_for(lambda: WebhookDelivery.objects.filter(subscription=subscription,
                                                               status=DeliveryStatus.DELIVERED).first(),
                        timeout=30, what="the delivery to succeed")
    # then it took three signed attempts with the same body, 500, 500, 200
    assert [r["code"] for r in hook.received] == [500, 500, 200]
    assert all(r["valid"] for r in hook.received)
    assert len({r["body"] for r in hook.received}) == 1
    assert {r["delivery"] for r in hook.received} == {str(delivery.pk)}
    assert {r["event"] for r in hook.received} == {"execution.completed"}
    body = json.loads(hook.received[0]["body"])
    assert body["event"] == "execution.completed" and body["id"] == str(delivery.pk)
    assert body["execution"]["id"] == str(execution.pk) and body["execution"]["status"] == "completed"
    assert body["execution"]["outputs"] == execution.output_data["outputs"]
    assert delivery.attempts == 3 and delivery.last_status_code == 200 and delivery.delivered_at is not None
    # and the delivery log in the API shows each attempt with its code and time
    api = client_for(user)
    listed = api.get(f"/api/v1/webhooks/{subscription.pk}/deliveries/").json()
    assert [(d["id"], d["status"], d["attempts"]) for d in listed["results"]] == [(str(delivery.pk), "delivered", 3)]
    detail = api.get(f"/api/v1/webhook-deliveries/{delivery.pk}/").json()
    assert [a["status_code"] for a in detail["attempt_log"]] == [500, 500, 200]
    assert [a["number"] for a in detail["attempt_log"]] == [1, 2, 3]
    assert all(a["duration_ms"] >= 0 for a in detail["attempt_log"]) and detail["payload"] == body
    # another user does not see it
    assert client_for(UserFactory()).get(f"/api/v1/webhook-deliveries/{delivery.pk}/").status_code == 404


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_a_receiver_that_is_down_never_delays_or_fails_the_run(
        thread_worker, fast_webhooks, builtins, pipeline_of, jpeg_file, user, receiver, settings):
    # given subscriptions to step failures and run ends at an address where nobody listens
    settings.WEBHOOK_RETRY_BACKOFF_SECONDS = 0.5
    dead = subscribe(user, closed_port_url(), events=[e.value for e in WebhookEvent])
    pipeline = pipeline_of([node("gray", "grayscale"), node("blur", "blur", radius=1)], [{"from": "gray", "to": "blur"}])
    started = time.monotonic()
    # when a run goes through
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user))
    elapsed = time.monotonic() - started
    # then it completed, promptly, while its delivery is still failing and being retried
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    assert elapsed < 15
    delivery = wait_for(lambda: WebhookDelivery.objects.filter(subscription=dead, attempts__gte=2).first(),
                        timeout=20, what="two failed attempts")
    assert delivery.status == DeliveryStatus.PENDING and delivery.event == "execution.completed"
    assert delivery.last_status_code is None and "ConnectionError" in delivery.last_error
    assert delivery.next_attempt_at is not None


@pytest.mark.worker
@pytest.mark.timeout(120)
def test_redeliver_sends_the_same_body_again_with_a_new_signature(
        thread_worker, fast_webhooks, builtins, pipeline_of, jpeg_file, user, receiver):
    hook = receiver()
    subscription = subscribe(user, hook.url)
    execution = wait_finished(execution_start(pipeline=pipeline_of([node("gray", "grayscale")]),
                                              inputs=[jpeg_file().id], user=user))
    delivery = wait_for(lambda: WebhookDelivery.objects.filter(subscription=subscription, status="delivered").first(),
                        timeout=30, what="the first delivery")
    assert execution.status == "completed" and len(hook.received) == 1
    # when the owner asks for it again through the API
    response = client_for(user).post(f"/api/v1/webhook-deliveries/{delivery.pk}/redeliver/")
    assert response.status_code == 202, response.json()
    wait_for(lambda: len(hook.received) == 2, timeout=30, what="the redelivery")
    delivery.refresh_from_db()
    # then the receiver got the same bytes under the same delivery id, validly signed again
    assert hook.received[0]["body"] == hook.received[1]["body"]
    assert hook.received[0]["delivery"] == hook.received[1]["delivery"] == str(delivery.pk)
    assert all(r["valid"] for r in hook.received)
    wait_for(lambda: WebhookDelivery.objects.get(pk=delivery.pk).status == "delivered", timeout=10, what="delivered")
    assert list(delivery.attempt_log.values_list("number", "status_code")) == [(1, 200), (2, 200)]


# --- which subscriptions get which events (no worker: the signal's receiver and one attempt) ----

@pytest.mark.django_db(transaction=True)
def test_deliveries_go_to_the_run_owner_and_the_pipeline_organization_only(user):
    org = Organization.objects.create(name="Lab", slug="lab")
    member, outsider = UserFactory(), UserFactory()
    Membership.objects.create(organization=org, user=member)
    mine = subscribe(user, "http://127.0.0.1:9/mine", events=["execution.failed", "execution.completed"])
    org_hook = subscribe(member, "http://127.0.0.1:9/org", events=["execution.failed"], organization=org)
    other = subscribe(outsider, "http://127.0.0.1:9/other", events=["execution.failed"])
    steps_only = subscribe(user, "http://127.0.0.1:9/steps", events=["step.failed"])
    run = PipelineExecutionFactory(pipeline=PipelineFactory(created_by=user, organization=org), created_by=user,
                                   status="failed")
    # when the engine announces the failed run (twice: a duplicate signal makes nothing more)
    for _ in range(2):
        webhooks._on_execution_status(None, execution_id=run.pk, status="failed", previous_status="running")
    # then my subscription and the organization's got one delivery each; the outsider's and the
    # step-only subscription none; a "running" change is no event at all
    webhooks._on_execution_status(None, execution_id=run.pk, status="running", previous_status="pending")
    got = dict(WebhookDelivery.objects.values_list("subscription_id", "event"))
    assert got == {mine.pk: "execution.failed", org_hook.pk: "execution.failed"}
    assert not WebhookDelivery.objects.filter(subscription__in=[other, steps_only]).exists()
    # a step failure goes to the step subscription, with the step in its key
    webhooks._on_step_status(None, execution_id=run.pk, step_id="6a0e8c3e-9d7c-4d0b-8f35-0d7b1b0d7f11",
                             node_id="crop", status="failed", previous_status="running")
    assert WebhookDelivery.objects.get(subscription=steps_only).event_key.startswith("6a0e8c3e")


@pytest.mark.django_db(transaction=True)
def test_a_4xx_fails_at_once_and_a_5xx_gives_up_after_the_window(user, receiver, fast_webhooks, settings):
    run = PipelineExecutionFactory(pipeline=PipelineFactory(created_by=user), created_by=user, status="completed")
    hook = receiver(secret="not-the-subscriptions-secret")  # every signature is wrong: 401
    refused = subscribe(user, hook.url)
    webhooks.webhook_deliveries_create(execution_id=run.pk, event="execution.completed")
    delivery = WebhookDelivery.objects.get(subscription=refused)
    assert webhooks.webhook_attempt(delivery_id=delivery.pk) == "refused (401)"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 1, 401)
    assert [r["valid"] for r in hook.received] == [False]
    # a 500 after the retry window is over: the delivery gives up
    refused.delete()
    settings.WEBHOOK_RETRY_WINDOW_SECONDS = 0.1
    failing = subscribe(user, receiver(fail_first=100).url)
    webhooks.webhook_deliveries_create(execution_id=run.pk, event="execution.completed")
    delivery = WebhookDelivery.objects.get(subscription=failing)
    time.sleep(0.2)
    assert webhooks.webhook_attempt(delivery_id=delivery.pk) == "gave up"
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.last_status_code == 500 and "gave up after 1" in delivery.last_error


@pytest.mark.django_db(transaction=True)
def test_an_attempt_is_claimed_once_and_the_sweep_resends_lost_ones(user, receiver, settings):
    settings.WEBHOOK_SWEEP_INTERVAL_SECONDS = 0
    hook = receiver()
    run = PipelineExecutionFactory(pipeline=PipelineFactory(created_by=user), created_by=user, status="completed")
    subscription = subscribe(user, hook.url)
    webhooks.webhook_deliveries_create(execution_id=run.pk, event="execution.completed")
    delivery = WebhookDelivery.objects.get(subscription=subscription)
    # the message was lost: the sweep finds the delivery due
    assert webhooks.webhook_deliveries_sweep() == 1
    # two deliveries of the same message at once: one POST
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(webhooks.webhook_attempt(delivery_id=delivery.pk)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    from django.db import connections
    connections.close_all()
    assert sorted(results) == ["delivered", "not due"]
    assert len(hook.received) == 1
    assert webhooks.webhook_deliveries_sweep() == 0


# --- the API -------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_subscription_api_shows_the_secret_once_and_scopes_to_the_owner(user):
    api = client_for(user)
    response = api.post("/api/v1/webhooks/", {"url": "https://example.com/hook",
                                              "events": ["execution.completed", "step.failed"]}, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert len(created["secret"]) >= 32 and created["created_by"] == str(user.pk)
    shown = api.get(f"/api/v1/webhooks/{created['id']}/").json()
    assert "secret" not in shown and shown["events"] == ["execution.completed", "step.failed"]
    assert client_for(UserFactory()).get(f"/api/v1/webhooks/{created['id']}/").status_code == 404
    bad = api.post("/api/v1/webhooks/", {"url": "https://example.com/h", "events": ["run.exploded"]}, format="json")
    assert bad.status_code == 400 and "events" in str(bad.json()["errors"])
    org = Organization.objects.create(name="Other", slug="other")
    not_member = api.post("/api/v1/webhooks/", {"url": "https://example.com/h", "events": ["execution.failed"],
                                                "organization": str(org.pk)}, format="json")
    assert not_member.status_code == 400 and "organization" in not_member.json()["errors"]
    patched = api.patch(f"/api/v1/webhooks/{created['id']}/", {"active": False}, format="json")
    assert patched.status_code == 200 and patched.json()["active"] is False


# --- the admin -----------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_admin_creates_a_subscription_through_the_service_and_redelivers(client, receiver, fast_webhooks):
    from tests.factories import StaffFactory

    staff = StaffFactory()
    client.force_login(staff)
    hook = receiver()
    # when staff add a subscription on the admin's page (no secret: one is made and shown once)
    response = client.post("/admin/executions/webhooksubscription/add/",
                           {"url": hook.url, "description": "ops", "events": ["execution.failed"], "active": "on",
                            "organization": "", "secret": ""}, follow=True)
    assert response.status_code == 200
    subscription = WebhookSubscription.objects.get(url=hook.url)
    assert subscription.created_by_id == staff.pk and len(subscription.secret) >= 32
    assert subscription.secret in response.content.decode()
    # and redeliver a failed delivery with the list's action
    run = PipelineExecutionFactory(pipeline=PipelineFactory(created_by=staff), created_by=staff, status="failed")
    webhooks.webhook_deliveries_create(execution_id=run.pk, event="execution.failed")
    delivery = WebhookDelivery.objects.get(subscription=subscription)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed", attempts=4, last_status_code=503)
    response = client.post("/admin/executions/webhookdelivery/", {"action": "redeliver",
                                                                  "_selected_action": [str(delivery.pk)]})
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.attempts == 4
    # the attempt itself (what the task sent on commit runs) signs with the made secret
    hook.secret = subscription.secret
    assert webhooks.webhook_attempt(delivery_id=delivery.pk) == "delivered"
    assert [r["valid"] for r in hook.received] == [True]
    page = client.get(f"/admin/executions/webhookdelivery/{delivery.pk}/change/")
    assert page.status_code == 200 and "execution.failed" in page.content.decode()
