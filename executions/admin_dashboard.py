"""The admin dashboard (/admin/dashboard/, linked from the admin index): runs per status per day
over the last 14 days (SVG bars drawn here), failure rate per pipeline, the slowest components
(median and p95 execution time), recent failures, the runs going on and the step cache (hit
rate, entries, size against its budget). Every figure comes from
an aggregate query in executions/dashboard_selectors.py; the aggregates of the 14 days are
refreshed by a beat task every DASHBOARD_REFRESH_SECONDS and read here from the cache (the page
says when they were computed), the running runs and the failures are read on each view."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from executions import dashboard_selectors as selectors
from executions.models import ExecutionStatus, PipelineExecution

DAYS = selectors.DASHBOARD_DAYS
STATUS_COLORS = {
    ExecutionStatus.COMPLETED: "#2e9e2e", ExecutionStatus.FAILED: "#ba2121", ExecutionStatus.CANCELLED: "#8a6d3b",
    ExecutionStatus.RUNNING: "#1f6fb2", ExecutionStatus.PENDING: "#78909c",
}
STACK_ORDER = [ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED,
               ExecutionStatus.RUNNING, ExecutionStatus.PENDING]


def _f(value: float) -> str:
    return f"{value:.1f}"


def runs_chart_svg(days: list[dict]) -> SafeString:
    """Stacked bars, one per day, one segment per status, with the day's total on top."""
    width, height, left, bottom, top = 720, 220, 36, 30, 16
    plot_h = height - bottom - top
    peak = max([d["total"] for d in days] + [1])
    slot = (width - left - 8) / max(len(days), 1)
    bar_w = slot * 0.7
    parts = []
    for tick in (0, peak / 2, peak):
        y = top + plot_h - plot_h * tick / peak
        parts.append(format_html('<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#ddd"/>'
                                 '<text x="{}" y="{}" font-size="10" text-anchor="end" fill="#666">{}</text>',
                                 left, width - 8, _f(y), _f(y), left - 4, _f(y + 3), round(tick)))
    for i, day in enumerate(days):
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h
        for status in STACK_ORDER:
            n = day["counts"].get(status, 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            parts.append(format_html('<rect class="bar status-{}" data-day="{}" data-status="{}" data-count="{}" x="{}" '
                                     'y="{}" width="{}" height="{}" fill="{}"><title>{} {}: {}</title></rect>',
                                     status, day["day"].isoformat(), status, n, _f(x), _f(y), _f(bar_w), _f(h),
                                     STATUS_COLORS[status], day["day"].isoformat(), status, n))
        if day["total"]:
            parts.append(format_html('<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>',
                                     _f(x + bar_w / 2), _f(y - 3), day["total"]))
        parts.append(format_html('<text x="{}" y="{}" font-size="10" text-anchor="middle" fill="#666">{}</text>',
                                 _f(x + bar_w / 2), height - bottom + 14, day["day"].strftime("%d %b")))
    legend = format_html_join("", '<rect x="{}" y="0" width="10" height="10" fill="{}"/>'
                                  '<text x="{}" y="9" font-size="10">{}</text>',
                              ((left + j * 90, STATUS_COLORS[s], left + j * 90 + 14, s) for j, s in enumerate(STACK_ORDER)))
    return format_html('<svg class="runs-chart" viewBox="0 0 {} {}" width="{}" height="{}" role="img" '
                       'aria-label="Runs per status per day">{}{}</svg>',
                       width, height, width, height, legend, format_html_join("", "{}", ((p,) for p in parts)))


def dashboard_view(request):
    if not request.user.has_perm("executions.view_pipelineexecution"):
        raise PermissionDenied
    now = timezone.now()
    figures = selectors.dashboard_aggregates(days=DAYS, now=now)
    days = figures["days"]
    running = list(selectors.running_with_progress())
    for run in running:
        run.percent = round(100 * run.steps_finished / run.steps_total) if run.steps_total else 0
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "days": DAYS,
        "runs_chart": runs_chart_svg(days),
        "runs_total": sum(d["total"] for d in days),
        "failure_rates": figures["failure_rates"],
        "slowest": figures["slowest"],
        "computed_at": figures["computed_at"],
        "figures_age_seconds": max(0, round((now - figures["computed_at"]).total_seconds())),
        "figures_refresh_seconds": round(selectors.AGGREGATES_REFRESH_SECONDS),
        "failures": selectors.recent_failures(),
        "step_cache": selectors.step_cache_summary(),
        "running": running,
        "execution_opts": PipelineExecution._meta,
    }
    return TemplateResponse(request, "admin/dashboard.html", context)
