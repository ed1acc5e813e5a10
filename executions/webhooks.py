"""Webhooks: signed POSTs of run events to subscribed URLs (docs/automation.md#webhooks).

A run's status signal (executions/signals.py, sent after the engine's commit) makes one
`WebhookDelivery` per matching subscription with one INSERT ... SELECT, and sends a Celery task
per delivery. The task makes one attempt: a signed POST with a short timeout, recorded as a
`WebhookAttempt`; a 5xx, 408, 429, a timeout or a refused connection is tried again after a
pause that doubles (WEBHOOK_RETRY_BACKOFF_SECONDS up to WEBHOOK_RETRY_BACKOFF_MAX_SECONDS) for
WEBHOOK_RETRY_WINDOW_SECONDS; another 4xx fails the delivery at once. The engine never waits for
any of this: a receiver that is down costs the run nothing. The periodic sweep sends the
deliveries whose task was lost (broker down, worker killed mid-attempt).

An attempt is claimed by a conditional UPDATE (status pending, the attempts seen, due), so the
sweep and a retry message never both POST the same attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from executions.automation_models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)
from executions.models import ComponentExecution, ExecutionStatus, PipelineExecution
from executions.signals import execution_status_changed, step_status_changed

logger = logging.getLogger(__name__)

DELIVER_TASK = "executions.automation_tasks.webhook_deliver"
SIGNATURE_HEADER = "X-ImageFlow-Signature"
TIMESTAMP_HEADER = "X-ImageFlow-Timestamp"
EVENT_HEADER = "X-ImageFlow-Event"
DELIVERY_HEADER = "X-ImageFlow-Delivery"
RUN_EVENTS = {ExecutionStatus.COMPLETED: WebhookEvent.EXECUTION_COMPLETED,
              ExecutionStatus.FAILED: WebhookEvent.EXECUTION_FAILED,
              ExecutionStatus.CANCELLED: WebhookEvent.EXECUTION_CANCELLED}
_RETRIED_4XX = {408, 425, 429}


# --- subscriptions -------------------------------------------------------------------------------

def webhook_subscription_check(*, url: str, events, organization, user, secret: str | None = None) -> list[str]:
    """The checks of a subscription's fields (the admin's form runs them too); returns the events."""
    errors: dict[str, list[str]] = {}
    if secret is not None and len(secret) < 16:
        errors["secret"] = ["At least 16 characters."]
    if not isinstance(events, (list, tuple)) or not events:
        errors["events"] = ["Name at least one event."]
    else:
        unknown = [str(e) for e in events if e not in WebhookEvent.values]
        if unknown:
            errors["events"] = [f"Unknown events: {', '.join(unknown)} (one of {', '.join(WebhookEvent.values)})."]
    if not str(url).lower().startswith(("http://", "https://")):
        errors["url"] = ["Must be an http:// or https:// URL."]
    if organization is not None and not _is_member(user, organization):
        errors["organization"] = ["You are not a member of this organization."]
    if errors:
        raise ValidationError(errors)
    return list(dict.fromkeys(events))


def _is_member(user, organization) -> bool:
    from imageflow.orgs.models import Membership

    return bool(user and (user.is_staff or Membership.objects.filter(user=user, organization=organization).exists()))


def webhook_subscription_create(*, url: str, events: list[str], user, organization=None, description: str = "",
                                secret: str | None = None, active: bool = True) -> WebhookSubscription:
    """A new subscription; without `secret` one is made (32 random bytes, URL-safe)."""
    events = webhook_subscription_check(url=url, events=events, organization=organization, user=user, secret=secret)
    subscription = WebhookSubscription(url=url, events=events, created_by=user, organization=organization,
                                       description=description or "", secret=secret or secrets.token_urlsafe(32),
                                       active=active)
    subscription.full_clean()
    subscription.save()
    return subscription


def webhook_subscription_update(*, subscription: WebhookSubscription, user, data: dict) -> WebhookSubscription:
    """Change url, events, description, active, organization or secret (the others are kept)."""
    fields = {"url", "events", "description", "active", "organization", "secret"}
    for key, value in data.items():
        if key in fields:
            setattr(subscription, key, value)
    subscription.events = webhook_subscription_check(url=subscription.url, events=subscription.events,
                                                     organization=subscription.organization, user=user,
                                                     secret=subscription.secret or "")
    subscription.full_clean()
    subscription.save()
    return subscription


def webhook_subscription_delete(*, subscription: WebhookSubscription) -> None:
    subscription.delete()


# --- deliveries from the run's signals -----------------------------------------------------------

_CREATE_SQL = f"""
INSERT INTO {WebhookDelivery._meta.db_table}
       (id, subscription_id, event, event_key, execution_id, step_id, status, attempts, first_attempt_at,
        next_attempt_at, last_error, created_at)
SELECT gen_random_uuid(), s.id, %(event)s, %(event_key)s, e.id, %(step_id)s, 'pending', 0, now(), now(), '', now()
  FROM {WebhookSubscription._meta.db_table} s
  JOIN {PipelineExecution._meta.db_table} e ON e.id = %(execution_id)s
  JOIN pipelines p ON p.id = e.pipeline_id
 WHERE s.active AND %(event)s = ANY(s.events)
   AND (s.created_by = e.created_by OR s.organization_id = p.organization_id)
ON CONFLICT (subscription_id, event_key) DO NOTHING
RETURNING id
"""


def webhook_deliveries_create(*, execution_id, event: str, step_id=None) -> list[str]:
    """One pending delivery per active subscription that wants `event` of this run (one
    statement: no subscription, one cheap query), then a task per delivery. Returns their ids."""
    event_key = f"{step_id or execution_id}:{event}"
    with connection.cursor() as cursor:
        cursor.execute(_CREATE_SQL, {"event": str(event), "event_key": event_key, "execution_id": str(execution_id),
                                     "step_id": str(step_id) if step_id else None})
        ids = [str(row[0]) for row in cursor.fetchall()]
    for delivery_id in ids:
        _send_task(delivery_id)
    return ids


def _send_task(delivery_id: str, *, countdown: float | None = None) -> None:
    """Broker down: the delivery stays pending and due, and the sweep sends it."""
    try:
        current_app.tasks[DELIVER_TASK].apply_async(args=[delivery_id], countdown=countdown,
                                                    queue=settings.WEBHOOK_QUEUE or None)
    except Exception as exc:
        logger.warning("could not enqueue webhook delivery %s (%s: %s); the sweep will", delivery_id,
                       type(exc).__name__, exc)


def _on_execution_status(sender, *, execution_id, status, **kwargs) -> None:
    event = RUN_EVENTS.get(status)
    if event is None:
        return
    try:
        webhook_deliveries_create(execution_id=execution_id, event=event)
    except Exception:  # a webhook must never break the engine's process
        logger.exception("could not record webhook deliveries of run %s (%s)", execution_id, event)


def _on_step_status(sender, *, execution_id, step_id, status, **kwargs) -> None:
    if status != "failed":
        return
    try:
        webhook_deliveries_create(execution_id=execution_id, event=WebhookEvent.STEP_FAILED, step_id=step_id)
    except Exception:
        logger.exception("could not record webhook deliveries of step %s", step_id)


execution_status_changed.connect(_on_execution_status, dispatch_uid="executions.webhooks.execution_status")
step_status_changed.connect(_on_step_status, dispatch_uid="executions.webhooks.step_status")


# --- the body and its signature ------------------------------------------------------------------

def _iso(value) -> str | None:
    return value.isoformat() if value else None


def webhook_payload(delivery: WebhookDelivery) -> dict:
    """The JSON body: the event, the delivery's id, the run (and the step) as they are now."""
    body: dict = {"id": str(delivery.pk), "event": delivery.event, "created_at": _iso(delivery.created_at)}
    execution = (PipelineExecution.objects.select_related("pipeline").filter(pk=delivery.execution_id).first()
                 if delivery.execution_id else None)
    if execution is not None:
        body["execution"] = {
            "id": str(execution.pk), "status": execution.status,
            "pipeline": {"id": str(execution.pipeline_id), "name": execution.pipeline.name,
                         "version": execution.pipeline_version},
            "created_by": str(execution.created_by_id) if execution.created_by_id else None,
            "error_message": execution.error_message,
            "created_at": _iso(execution.created_at), "started_at": _iso(execution.started_at),
            "completed_at": _iso(execution.completed_at),
            "inputs": (execution.input_data or {}).get("inputs", []),
            "outputs": (execution.output_data or {}).get("outputs", []),
            "path": reverse("api:execution-detail", args=[execution.pk]),
        }
    if delivery.step_id:
        step = ComponentExecution.objects.filter(pk=delivery.step_id).select_related("component").first()
        if step is not None:
            body["step"] = {"id": str(step.pk), "node_id": step.node_id, "status": step.status,
                            "component": {"name": step.component.name, "version": step.component.version},
                            "error_message": step.error_message, "attempts": step.attempts}
    return body


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body under the secret>`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def webhook_signature_verify(*, secret: str, header: str, body: bytes, tolerance: float = 300.0,
                             now: float | None = None) -> bool:
    """The receiver's side (documented as a snippet): the header's signature of this body, made
    less than `tolerance` seconds ago."""
    try:
        parts = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    expected = webhook_signature(secret=secret, timestamp=timestamp, body=body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def _body_bytes(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


# --- an attempt ----------------------------------------------------------------------------------

def _backoff(attempts: int) -> float:
    return min(settings.WEBHOOK_RETRY_BACKOFF_SECONDS * 2 ** max(attempts - 1, 0),
               settings.WEBHOOK_RETRY_BACKOFF_MAX_SECONDS)


def _claim(delivery_id) -> WebhookDelivery | None:
    """Take the next attempt: pending, due, not taken by another process meanwhile. The lease
    (next_attempt_at moved past the timeout) lets the sweep retry an attempt whose worker died."""
    delivery = WebhookDelivery.objects.filter(pk=delivery_id).select_related("subscription").first()
    now = timezone.now()
    if delivery is None or delivery.status != DeliveryStatus.PENDING or (
            delivery.next_attempt_at and delivery.next_attempt_at > now):
        return None
    lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + 30)
    won = WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING,
                                         attempts=delivery.attempts).update(attempts=F("attempts") + 1,
                                                                            next_attempt_at=lease)
    if not won:
        return None
    delivery.attempts += 1
    return delivery


def webhook_attempt(*, delivery_id) -> str:
    """One attempt of a delivery (the task's body). Returns what happened."""
    import requests

    delivery = _claim(delivery_id)
    if delivery is None:
        return "not due"
    subscription = delivery.subscription
    if delivery.payload is None:
        delivery.payload = webhook_payload(delivery)
        WebhookDelivery.objects.filter(pk=delivery.pk, payload__isnull=True).update(payload=delivery.payload)
    body = _body_bytes(delivery.payload)
    timestamp = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": "ImageFlow-Webhook/1",
               EVENT_HEADER: delivery.event, DELIVERY_HEADER: str(delivery.pk), TIMESTAMP_HEADER: str(timestamp),
               SIGNATURE_HEADER: webhook_signature(secret=subscription.secret, timestamp=timestamp, body=body)}
    started_at, started = timezone.now(), time.monotonic()
    code, error = None, ""
    try:
        response = requests.post(subscription.url, data=body, headers=headers,
                                 timeout=settings.WEBHOOK_TIMEOUT_SECONDS, allow_redirects=False)
        code = response.status_code
    except requests.Timeout:
        error = f"timed out after {settings.WEBHOOK_TIMEOUT_SECONDS}s"
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    duration_ms = int((time.monotonic() - started) * 1000)
    return _record(delivery=delivery, started_at=started_at, code=code, error=error, duration_ms=duration_ms)


def _record(*, delivery: WebhookDelivery, started_at, code: int | None, error: str, duration_ms: int) -> str:
    now = timezone.now()
    if code is not None and 200 <= code < 300:
        status, next_at, outcome = DeliveryStatus.DELIVERED, None, "delivered"
    elif code is not None and 300 <= code < 500 and code not in _RETRIED_4XX:
        status, next_at, outcome = DeliveryStatus.FAILED, None, f"refused ({code})"
        error = error or f"the receiver answered {code}: not retried"
    else:
        pause = _backoff(delivery.attempts)
        window_end = (delivery.first_attempt_at or now) + timedelta(seconds=settings.WEBHOOK_RETRY_WINDOW_SECONDS)
        if now + timedelta(seconds=pause) > window_end:
            status, next_at, outcome = DeliveryStatus.FAILED, None, "gave up"
            error = (error or f"the receiver answered {code}") + (
                f"; gave up after {delivery.attempts} attempts ({settings.WEBHOOK_RETRY_WINDOW_SECONDS:.0f}s window)")
        else:
            status, next_at, outcome = DeliveryStatus.PENDING, now + timedelta(seconds=pause), f"retry in {pause:g}s"
    with transaction.atomic():
        WebhookAttempt.objects.create(delivery_id=delivery.pk, number=delivery.attempts, started_at=started_at,
                                      status_code=code, duration_ms=duration_ms, error=error)
        # Only if the claim still holds (a redeliver meanwhile restarted the delivery).
        WebhookDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(
            status=status, next_attempt_at=next_at, last_status_code=code, last_error=error,
            last_duration_ms=duration_ms, delivered_at=now if status == DeliveryStatus.DELIVERED else None)
        if status == DeliveryStatus.PENDING:
            transaction.on_commit(lambda: _send_task(str(delivery.pk), countdown=_backoff(delivery.attempts)))
    return outcome


def webhook_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again, whatever its status: the same body (a new timestamp and signature),
    a new retry window; its attempts so far stay in the log."""
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.PENDING, first_attempt_at=timezone.now(), next_attempt_at=timezone.now(),
            delivered_at=None)
        transaction.on_commit(lambda: _send_task(str(delivery.pk)))
    delivery.refresh_from_db()
    return delivery


def webhook_deliveries_sweep() -> int:
    """Beat: send again the pending deliveries due for longer than the sweep's interval (their
    message was lost, or their worker died mid-attempt and the lease ran out)."""
    due_before = timezone.now() - timedelta(seconds=settings.WEBHOOK_SWEEP_INTERVAL_SECONDS)
    ids = list(WebhookDelivery.objects.filter(Q(next_attempt_at__lte=due_before) | Q(next_attempt_at__isnull=True),
                                              status=DeliveryStatus.PENDING)
               .order_by("next_attempt_at").values_list("id", flat=True)[:1000])
    for delivery_id in ids:
        _send_task(str(delivery_id))
    return len(ids)
