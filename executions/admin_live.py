"""The live panel of the pipeline execution admin page: progress bar, steps (with a map step's
item counts), latest log lines.

The page renders the current state server-side; `live_progress.js` then follows the run over
the WebSocket (the admin's session cookie authenticates it) and refreshes the panel from the
`<id>/live/` JSON view on each status event, or every few seconds when WebSockets are
unavailable; a step_items event (a few a second per run at most) updates its step's items in
place, without a request.
"""

from __future__ import annotations

from django.contrib.admin.utils import unquote
from django.http import Http404, JsonResponse
from django.urls import path, reverse

from executions import events
from executions.log_models import ExecutionLogRecord

LATEST_LOG_LINES = 50


def live_state(execution_id, *, lines: int = LATEST_LOG_LINES) -> dict:
    """The snapshot of the run plus its latest log lines (from the durable buffer, so they show
    even while the search server is down)."""
    snapshot = events.snapshot(execution_id) or {}
    latest = list(
        ExecutionLogRecord.objects.filter(execution_id=execution_id).order_by("-id")
        .values("id", "timestamp", "level", "node_id", "message")[:lines]
    )
    latest.reverse()
    snapshot["logs"] = [
        {"id": row["id"], "timestamp": row["timestamp"].isoformat(), "time": _display(row["timestamp"].isoformat()),
         "level": row["level"], "node_id": row["node_id"], "message": row["message"]}
        for row in latest
    ]
    for step in snapshot.get("steps", []):
        step["started"], step["completed"] = _display(step["started_at"]), _display(step["completed_at"])
        step["items_text"], step["items_percentage"] = items_text(step["items"]), items_percentage(step["items"])
    snapshot["run_items_text"] = items_text(snapshot.get("run_items"))
    return snapshot


def items_text(items: dict[str, int] | None) -> str:
    """'37/120 items, 2 failed, 10 cached' (what is nought is left out); '' when not itemized.
    live_progress.js writes the same from a step_items event."""
    if not items:
        return ""
    parts = [f"{items['completed']}/{items['total']} items"]
    parts += [f"{items[name]} {name}" for name in ("failed", "skipped", "cached") if items[name]]
    return ", ".join(parts)


def items_percentage(items: dict[str, int] | None) -> float:
    """The share of the step's items that have finished, completed, failed or skipped."""
    if not items or not items["total"]:
        return 0.0
    return round(100.0 * (items["completed"] + items["failed"] + items["skipped"]) / items["total"], 1)


def _display(iso: str | None) -> str:
    """'2026-11-26 13:23:19.929' (UTC) for the panel; the JSON keeps the full ISO value."""
    return iso[:23].replace("T", " ") if iso else ""


class LiveProgressAdminMixin:
    def get_urls(self):
        info = (self.model._meta.app_label, self.model._meta.model_name)
        live = path("<path:object_id>/live/", self.admin_site.admin_view(self.live_view), name="%s_%s_live" % info)
        return [live, *super().get_urls()]

    def live_view(self, request, object_id):
        execution = self.get_object(request, unquote(object_id))
        if execution is None or not self.has_view_permission(request, execution):
            raise Http404("No such execution.")
        return JsonResponse(live_state(execution.pk))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        execution = self.get_object(request, unquote(object_id))
        if execution is not None:
            info = (self.model._meta.app_label, self.model._meta.model_name)
            extra_context.update(
                live_state=live_state(execution.pk),
                live_url=reverse(f"admin:{info[0]}_{info[1]}_live", args=[execution.pk], current_app=self.admin_site.name),
                live_ws_path=f"/ws/executions/{execution.pk}/",
            )
        return super().change_view(request, object_id, form_url, extra_context)
