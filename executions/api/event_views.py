"""`GET /api/v1/executions/<id>/events/`: the WebSocket's events over plain HTTP.

- `Accept: text/event-stream` (or `?stream=1`): Server-Sent Events. The snapshot (skipped when
  the client resumes with `Last-Event-ID` / `?after=`), then every event, each with `id: <seq>`
  and `event: <type>`; the stream ends after the final event.
- Otherwise a long poll: `?after=<seq>&timeout=<seconds>` answers
  `{"events": [...], "last_seq": n, "final": bool}` as soon as there is an event after `after`,
  or empty after `timeout` (at most PROGRESS_LONG_POLL_MAX_SECONDS). Without `after` it answers
  the snapshot at once. When the history no longer reaches back to `after`, the answer is a
  fresh snapshot (type "snapshot"), so the client resyncs.

An async Django view (DRF has no async views): the session, an `Authorization: Token` header or
a single-use `?ticket=` (POST /api/v1/ws-tickets/); a `?token=` in the URL is refused with 401
(docs/security.md). Errors in the API's error shape.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import redis
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import JsonResponse, StreamingHttpResponse

from executions import events
from executions.models import PipelineExecution
from imageflow.api.errors import problem
from imageflow.api.ownership import is_owner
from imageflow.ws_auth import credential_in_query

SSE_HEARTBEAT_SECONDS = 15.0


def _error(status: int, type_: str, detail: str, errors: dict | None = None) -> JsonResponse:
    return JsonResponse(problem(status_code=status, type_=type_, detail=detail, errors=errors), status=status)


@sync_to_async
def _token_user(key: str):
    """The legacy or a scoped token (imageflow/accounts/authentication.py), which for these
    read-only events needs the read scope."""
    from imageflow.accounts.authentication import TokenRejected, api_key_user, has_scope

    try:
        user, _ = api_key_user(key)
    except TokenRejected:
        return None
    return user if has_scope(user, "read") else None


@sync_to_async
def _ticket_user(ticket: str):
    from imageflow.accounts.services import ws_ticket_redeem

    return ws_ticket_redeem(ticket=ticket)


async def _user(request):
    """The header token, a single-use ticket (`?ticket=`, what an EventSource can send) or the
    session. A token in the URL is never read (see imageflow/ws_auth.py): the caller answers 401."""
    header = request.headers.get("Authorization", "")
    parts = header.split()
    if len(parts) == 2 and parts[0].lower() == "token":
        return await _token_user(parts[1])
    if request.GET.get("ticket"):
        return await _ticket_user(request.GET["ticket"])
    user = await request.auser()
    return user if user.is_authenticated else None


@sync_to_async
def _visible(execution_id, user) -> bool:
    execution = PipelineExecution.objects.filter(id=execution_id).only("id", "created_by").first()
    return execution is not None and is_owner(execution, user=user)


class _Subscription:
    """A channel in the run's group that wakes the view when an event is published.

    One receive runs for the whole subscription: cancelling a pub/sub layer's receive drops the
    channel, so a timed-out wait only stops waiting on the wake-up flag."""

    def __init__(self, execution_id) -> None:
        self.layer = get_channel_layer()
        self.group = events.group_name(execution_id)
        self.channel: str | None = None
        self._woken = asyncio.Event()
        self._reader: asyncio.Task | None = None

    async def __aenter__(self):
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc):
        await self.layer.group_discard(self.group, self.channel)
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, redis.exceptions.TimeoutError):
                pass

    async def _read(self) -> None:
        while True:
            await self.layer.receive(self.channel)
            self._woken.set()

    async def wait(self, timeout: float) -> bool:
        """True when an event was published since the last call, False after `timeout`."""
        try:
            await asyncio.wait_for(self._woken.wait(), timeout=timeout)
        except TimeoutError:
            return False
        self._woken.clear()
        return True


def _int_param(request, name: str, *, default: float | None, minimum: float = 0) -> tuple[float | None, JsonResponse | None]:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default, None
    try:
        value = float(raw) if name == "timeout" else int(raw)
    except ValueError:
        return None, _error(400, "validation_error", f"{name}: must be a number.", {name: ["Must be a number."]})
    if value < minimum:
        return None, _error(400, "validation_error", f"{name}: must be at least {minimum}.",
                            {name: [f"Must be at least {minimum}."]})
    return value, None


async def execution_events(request, pk):
    if request.method != "GET":
        return _error(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
    if credential_in_query(request.GET):
        return _error(401, "token_in_url", "API tokens are not accepted in URLs (they end up in logs): send "
                      "`Authorization: Token <key>`, or a single-use ticket from POST /api/v1/ws-tickets/ as ?ticket=.")
    user = await _user(request)
    if user is None:
        return _error(401, "not_authenticated", "Authentication credentials were not provided or are invalid.")
    try:
        execution_id = uuid.UUID(str(pk))
    except ValueError:
        return _error(404, "not_found", "Not found.")
    if not await _visible(execution_id, user):
        return _error(404, "not_found", "Not found.")
    after, problem_response = _int_param(request, "after", default=None)
    if problem_response:
        return problem_response
    last_event_id = request.headers.get("Last-Event-ID")
    if after is None and last_event_id and last_event_id.isdigit():
        after = int(last_event_id)
    wants_stream = "text/event-stream" in request.headers.get("Accept", "") or request.GET.get("stream") in ("1", "true")
    if wants_stream:
        response = StreamingHttpResponse(_sse(execution_id, after), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    timeout, problem_response = _int_param(request, "timeout", default=settings.PROGRESS_LONG_POLL_MAX_SECONDS)
    if problem_response:
        return problem_response
    if after is None:
        return JsonResponse(await _long_poll(execution_id, None, 0))
    # The wait happens while the body streams, on the event loop: a sync middleware in the stack
    # would otherwise hold a worker thread for the whole poll.
    response = StreamingHttpResponse(
        _json_body(_long_poll(execution_id, after, min(timeout, settings.PROGRESS_LONG_POLL_MAX_SECONDS))),
        content_type="application/json",
    )
    response["Cache-Control"] = "no-cache"
    return response


async def _json_body(result):
    yield json.dumps(await result).encode()


async def _pending_events(execution_id, after: int) -> list[dict] | None:
    """Events after `after` from the history; None when the history no longer reaches back."""
    return await sync_to_async(events.history_after)(execution_id, after=after)


async def _long_poll(execution_id, after: int | None, timeout: float) -> dict:
    snapshot_of = sync_to_async(events.snapshot)
    if after is None:
        snapshot = await snapshot_of(execution_id)
        return {"events": [snapshot], "last_seq": snapshot["seq"], "final": snapshot["final"]}
    async with _Subscription(execution_id) as subscription:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            pending = await _pending_events(execution_id, after)
            if pending is None:
                snapshot = await snapshot_of(execution_id)
                return {"events": [snapshot], "last_seq": snapshot["seq"], "final": snapshot["final"]}
            if pending:
                return {"events": pending, "last_seq": pending[-1]["seq"], "final": bool(pending[-1].get("final"))}
            snapshot = await snapshot_of(execution_id)
            if snapshot["final"]:
                return {"events": [], "last_seq": max(after, snapshot["seq"]), "final": True}
            remaining = deadline - loop.time()
            if remaining <= 0 or not await subscription.wait(remaining):
                return {"events": [], "last_seq": after, "final": False}


def _sse_frame(event: dict) -> bytes:
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def _sse(execution_id, after: int | None):
    snapshot_of = sync_to_async(events.snapshot)
    async with _Subscription(execution_id) as subscription:
        yield b"retry: 2000\n\n"
        if after is None:
            snapshot = await snapshot_of(execution_id)
            yield _sse_frame(snapshot)
            if snapshot["final"]:
                return
            last = snapshot["seq"]
        else:
            last = after
        while True:
            pending = await _pending_events(execution_id, last)
            if pending is None:
                snapshot = await snapshot_of(execution_id)
                yield _sse_frame(snapshot)
                if snapshot["final"]:
                    return
                last = snapshot["seq"]
                continue
            for event in pending:
                yield _sse_frame(event)
                last = event["seq"]
                if event.get("final"):
                    return
            if not pending:
                snapshot = await snapshot_of(execution_id)
                if snapshot["final"] and snapshot["seq"] <= last:
                    return
            if not await subscription.wait(SSE_HEARTBEAT_SECONDS):
                yield b": keep-alive\n\n"
