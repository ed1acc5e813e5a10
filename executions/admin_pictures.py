"""The pictures of a run's admin page: its DAG with nodes colored by step status (the live
panel's script moves the colors on as the run goes), and the run timeline (a Gantt chart of the
steps: start, end, duration, status), drawn server-side from one query of the steps and redrawn
by timeline_live.js from each live state the panel receives."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from executions.models import ComponentExecution, PipelineExecution
from registry import dag_picture
from registry.models import PipelineVersion


def execution_steps_for_pictures(execution: PipelineExecution) -> list[dict[str, Any]]:
    """The steps' node ids, statuses and times, read once per page (kept on the execution)."""
    cached = getattr(execution, "_steps_for_pictures", None)
    if cached is None:
        cached = list(ComponentExecution.objects.filter(execution_id=execution.pk).order_by("created_at", "node_id")
                      .values("node_id", "status", "started_at", "completed_at", "execution_time_ms"))
        execution._steps_for_pictures = cached
    return cached


def _definition_of(execution: PipelineExecution) -> Any:
    """The definition of the version the run executed (the pipeline's own when no version row)."""
    found = (PipelineVersion.objects.filter(pipeline_id=execution.pipeline_id, version=execution.pipeline_version)
             .values_list("definition", flat=True).first())
    return found if found is not None else execution.pipeline.definition


def execution_picture_html(execution: PipelineExecution) -> SafeString:
    # The uncolored picture is the pipeline version's (shared cache entry); the statuses are
    # classes set on it per request.
    pic = dag_picture.picture("pipeline", execution.pipeline_id, execution.pipeline_version,
                              lambda: _build(execution))
    statuses = {step["node_id"]: step["status"] for step in execution_steps_for_pictures(execution)}
    if pic.svg:
        pic = dag_picture.Picture(svg=dag_picture.with_statuses(pic.svg, statuses), errors=pic.errors,
                                  problem=pic.problem)
    legend = format_html_join("", '<span class="lg-{0}">{0}</span>',
                              ((s,) for s in ("pending", "running", "completed", "failed", "skipped", "cancelled")))
    return format_html('<div id="dag-live" data-role="dag-live">{}<p class="dag-legend">{}</p></div>',
                       dag_picture.as_html(pic), legend)


def _build(execution: PipelineExecution):
    definition = _definition_of(execution)
    errors = dag_picture.definition_errors(definition)
    return dag_picture.pipeline_dot(definition, errors=errors), errors


def _ms(delta) -> float:
    return delta.total_seconds() * 1000.0


def _duration_text(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{int(ms // 60_000)} min {int(ms % 60_000 // 1000)} s"


def timeline_rows(steps: list[dict[str, Any]], *, now: datetime) -> dict[str, Any]:
    """Bars of a Gantt chart: each started step's offset and width in % of the run's span (the
    first start to the last end, or now for a step still running), the slowest step marked."""
    started = [s for s in steps if s["started_at"] is not None]
    if not started:
        return {"rows": [], "span_ms": 0}
    t0 = min(s["started_at"] for s in started)
    ends = [s["completed_at"] or now for s in started]
    span = max(_ms(max(ends) - t0), 1.0)
    rows = []
    for step in steps:
        if step["started_at"] is None:
            rows.append({"node_id": step["node_id"], "status": step["status"], "left": 0.0, "width": 0.0,
                         "duration": None, "start_ms": None, "bar": False})
            continue
        end = step["completed_at"] or now
        duration = _ms(end - step["started_at"])
        rows.append({"node_id": step["node_id"], "status": step["status"], "bar": True,
                     "start_ms": _ms(step["started_at"] - t0), "duration": duration,
                     "left": round(100.0 * _ms(step["started_at"] - t0) / span, 2),
                     "width": round(max(100.0 * duration / span, 0.3), 2)})
    timed = [r for r in rows if r["bar"]]
    slowest = max(timed, key=lambda r: r["duration"]) if len(timed) > 1 else None
    for row in rows:
        row["slowest"] = row is slowest
    return {"rows": rows, "span_ms": span}


def execution_timeline_html(execution: PipelineExecution, *, now: datetime) -> SafeString:
    # In a box that executions/static/executions/timeline_live.js redraws from each live state.
    return format_html('<div id="run-timeline-live" data-role="run-timeline-live">{}</div>',
                       _timeline_table(execution, now=now))


def _timeline_table(execution: PipelineExecution, *, now: datetime) -> SafeString:
    chart = timeline_rows(execution_steps_for_pictures(execution), now=now)
    if not chart["rows"]:
        return mark_safe('<p class="run-timeline-empty">No step has started yet.</p>')
    body = format_html_join(
        "",
        '<tr class="tl-row{}" data-node-id="{}"><td class="tl-node" title="{}">{}</td><td class="tl-chart"><div class="tl-track">{}</div></td>'
        '<td class="tl-time">{}</td></tr>',
        ((" tl-slowest" if row["slowest"] else "", row["node_id"], row["node_id"], row["node_id"],
          format_html('<div class="tl-bar status-{}" style="left:{}%;width:{}%" title="{}: {} from +{} ({})"></div>',
                      row["status"], row["left"], row["width"], row["node_id"], _duration_text(row["duration"]),
                      _duration_text(row["start_ms"]), row["status"]) if row["bar"] else "",
          format_html("{}{}", _duration_text(row["duration"]), " · slowest" if row["slowest"] else ""))
         for row in chart["rows"]),
    )
    axis = format_html('<div class="tl-axis"><span>0</span><span>{}</span><span>{}</span></div>',
                       _duration_text(chart["span_ms"] / 2), _duration_text(chart["span_ms"]))
    return format_html('<table class="run-timeline" data-role="run-timeline"><tbody>{}</tbody>'
                       '<tfoot><tr><td></td><td class="tl-chart">{}</td><td></td></tr></tfoot></table>', body, axis)
