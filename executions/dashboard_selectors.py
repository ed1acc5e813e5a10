"""Reads of the admin dashboard (executions/admin_dashboard.py): every figure is one aggregate
query, computed by PostgreSQL (counts per day and status, failure rates, percentiles of step
times), never a Python loop over rows. The step cache's card reads its counters (a few rows).

The three aggregates of the last 14 days (runs per day, failure rates, slowest components; the
percentiles sort every completed step of the window, ~200 ms at 100,000 steps) are computed by
the beat task `executions.tasks.dashboard_refresh` every DASHBOARD_REFRESH_SECONDS
(`dashboard_aggregates_refresh`) and kept in the cache; a view reads them
(`dashboard_aggregates`), so a busy system pays the queries once per interval, not once per
view. A view computes them itself only when none are kept (right after start, after midnight
UTC, or once they are AGGREGATES_KEEP_SECONDS old because beat is not running), and stores
them. The running runs and the recent failures are read on every view."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.conf import settings
from django.core.cache import cache
from django.db.models import (
    Aggregate,
    Count,
    ExpressionWrapper,
    F,
    FloatField,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from executions.models import (
    FINISHED_EXECUTION_STATUSES,
    FINISHED_STEP_STATUSES,
    ComponentExecution,
    ExecutionStatus,
    PipelineExecution,
    StepStatus,
)
from imageflow.outages import unavailable_service
from registry.models import Component

logger = logging.getLogger(__name__)

DASHBOARD_DAYS = 14
# How often the beat task refreshes the kept figures (their age on the page is at most about this).
AGGREGATES_REFRESH_SECONDS = settings.DASHBOARD_REFRESH_SECONDS
# How long kept figures are served without a refresh: beyond it (beat stopped) a view computes
# them again, so the page is never more than this stale.
AGGREGATES_KEEP_SECONDS = max(600, 10 * AGGREGATES_REFRESH_SECONDS)
# Part of the cache key: a change of what the aggregates hold must not serve old entries.
AGGREGATES_VERSION = 2


class PercentileCont(Aggregate):
    """PostgreSQL's percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, *, fraction: float, **extra):
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError("fraction must be within [0, 1]")
        super().__init__(expression, fraction=float(fraction), **extra)


def runs_per_status_per_day(*, days: int = 14, now: datetime | None = None) -> list[dict]:
    """[{"day": date, "counts": {status: n}, "total": n}] for each of the last `days` days (UTC,
    today included, days without runs too), by the day a run was created."""
    now = now or timezone.now()
    first = (now - timedelta(days=days - 1)).astimezone(dt_timezone.utc).date()
    start = datetime.combine(first, datetime.min.time(), tzinfo=dt_timezone.utc)
    rows = (PipelineExecution.objects.filter(created_at__gte=start).order_by()
            .annotate(day=TruncDate("created_at", tzinfo=dt_timezone.utc))
            .values("day", "status").annotate(n=Count("id")))
    by_day: dict = {first + timedelta(days=i): {} for i in range(days)}
    for row in rows:
        if row["day"] in by_day:
            by_day[row["day"]][row["status"]] = row["n"]
    return [{"day": day, "counts": counts, "total": sum(counts.values())} for day, counts in by_day.items()]


def failure_rate_per_pipeline(*, days: int = 14, now: datetime | None = None, limit: int = 20) -> list[dict]:
    """Per pipeline with finished runs created in the last `days` days: finished, failed and the
    failure rate (failed / finished, %), highest rate first."""
    since = (now or timezone.now()) - timedelta(days=days)
    finished = list(FINISHED_EXECUTION_STATUSES)
    rows = (PipelineExecution.objects.filter(created_at__gte=since, status__in=finished).order_by()
            .values("pipeline_id", "pipeline__name")
            .annotate(finished=Count("id"), failed=Count("id", filter=Q(status=ExecutionStatus.FAILED)))
            .annotate(rate=ExpressionWrapper(100.0 * F("failed") / F("finished"), output_field=FloatField()))
            .order_by("-rate", "-failed", "pipeline__name")[:limit])
    return [{"pipeline_id": r["pipeline_id"], "pipeline": r["pipeline__name"], "finished": r["finished"],
             "failed": r["failed"], "rate": round(r["rate"], 1)} for r in rows]


def slowest_components(*, days: int = 14, now: datetime | None = None, limit: int = 10) -> list[dict]:
    """Components by the p95 of their completed steps' execution_time_ms (last `days` days), with
    the median and the number of steps; percentiles computed by PostgreSQL (percentile_cont).

    The aggregate groups by component id alone, read from the index of completed steps
    (cexec_completed_created_idx): joining the components' names into it made PostgreSQL sort
    every step of the window by name and version too (111 ms at 62,000 steps, against 50 ms).
    The names are read after, for the few components of the answer."""
    since = (now or timezone.now()) - timedelta(days=days)
    rows = list(ComponentExecution.objects.filter(status=StepStatus.COMPLETED, execution_time_ms__isnull=False,
                                                  created_at__gte=since).order_by()
                .values("component_id")
                .annotate(steps=Count("id"), median_ms=PercentileCont("execution_time_ms", fraction=0.5),
                          p95_ms=PercentileCont("execution_time_ms", fraction=0.95)))
    if not rows:
        return []
    names = dict((pk, (name, version)) for pk, name, version in Component.objects.filter(
        pk__in=[r["component_id"] for r in rows]).values_list("pk", "name", "version"))
    rows.sort(key=lambda r: (-r["p95_ms"], names[r["component_id"]][0]))
    return [{"component": names[r["component_id"]][0], "version": names[r["component_id"]][1], "steps": r["steps"],
             "median_ms": round(r["median_ms"], 1), "p95_ms": round(r["p95_ms"], 1)} for r in rows[:limit]]


def recent_failures(*, limit: int = 10) -> QuerySet[PipelineExecution]:
    """The latest failed runs, with the node and message of their first failed step."""
    failed_step = (ComponentExecution.objects.filter(execution_id=OuterRef("pk"), status=StepStatus.FAILED)
                   .order_by("completed_at", "created_at"))
    # Only the columns shown: the runs' JSON (inputs, outputs) and the pipelines' definitions
    # were most of what the sort of the failed runs carried.
    return (PipelineExecution.objects.filter(status=ExecutionStatus.FAILED).select_related("pipeline")
            .only("id", "status", "error_message", "completed_at", "created_at", "pipeline__id", "pipeline__name")
            .annotate(failed_node=Subquery(failed_step.values("node_id")[:1]),
                      failed_step_error=Subquery(failed_step.values("error_message")[:1]))
            .order_by(F("completed_at").desc(nulls_last=True), "-created_at")[:limit])


def running_with_progress(*, limit: int = 20) -> QuerySet[PipelineExecution]:
    """Runs pending or running, oldest first, with their step counts (finished, total)."""
    steps = ComponentExecution.objects.filter(execution_id=OuterRef("pk")).order_by().values("execution_id")
    total = steps.annotate(n=Count("id")).values("n")
    done = steps.filter(status__in=list(FINISHED_STEP_STATUSES)).annotate(n=Count("id")).values("n")
    return (PipelineExecution.objects.filter(status__in=[ExecutionStatus.PENDING, ExecutionStatus.RUNNING])
            .select_related("pipeline").only("id", "status", "created_at", "pipeline__id", "pipeline__name")
            .annotate(steps_total=Coalesce(Subquery(total, output_field=IntegerField()), Value(0)),
                      steps_finished=Coalesce(Subquery(done, output_field=IntegerField()), Value(0)))
            .order_by("created_at")[:limit])


def step_cache_summary() -> dict:
    """The step cache's card: its statistics (executions.engine.cache.cache_stats, a sum over a
    few counter rows in PostgreSQL, so read on every view and untouched by a Redis outage) and
    how full it is (% of STEP_CACHE_MAX_BYTES)."""
    from executions.engine.cache import cache_stats

    stats = cache_stats()
    rate = stats["hit_rate"]
    return {**stats, "hit_rate_percent": None if rate is None else round(100 * rate, 1),
            "used_percent": round(100 * stats["bytes"] / stats["max_bytes"], 1) if stats["max_bytes"] else None}


def aggregates_cache_key(*, days: int, now: datetime) -> str:
    # The UTC day is in the key: after midnight the chart starts on a new day. No newest-run
    # stamp: a run created since is counted by the next refresh, not by recomputing on a view.
    today = now.astimezone(dt_timezone.utc).date().isoformat()
    return f"admin-dashboard:{AGGREGATES_VERSION}:{days}:{today}"


def dashboard_aggregates_compute(*, days: int, now: datetime) -> dict:
    return {"computed_at": now, "days": runs_per_status_per_day(days=days, now=now),
            "failure_rates": failure_rate_per_pipeline(days=days, now=now),
            "slowest": slowest_components(days=days, now=now)}


def dashboard_aggregates_refresh(*, days: int = DASHBOARD_DAYS, now: datetime | None = None) -> dict:
    """Compute the aggregates and keep them (the beat task's work; a view's when none are kept).
    A cache outage only costs the queries."""
    now = now or timezone.now()
    figures = dashboard_aggregates_compute(days=days, now=now)
    key = aggregates_cache_key(days=days, now=now)
    try:
        cache.set(key, figures, AGGREGATES_KEEP_SECONDS)
    except Exception as exc:
        if unavailable_service(exc) is None:  # a bug, not an outage
            raise
        logger.warning("dashboard cache unavailable (set %s)", key, exc_info=True)
    return figures


def dashboard_aggregates(*, days: int = DASHBOARD_DAYS, now: datetime | None = None) -> dict:
    """{"computed_at", "days", "failure_rates", "slowest"}: the three aggregates of the last
    `days` days as last refreshed (`computed_at`, normally within AGGREGATES_REFRESH_SECONDS),
    computed here only when none are kept."""
    now = now or timezone.now()
    key = aggregates_cache_key(days=days, now=now)
    try:
        cached = cache.get(key)
    except Exception as exc:
        if unavailable_service(exc) is None:
            raise
        logger.warning("dashboard cache unavailable (get %s)", key, exc_info=True)
        cached = None
    if cached is not None:
        return cached
    return dashboard_aggregates_refresh(days=days, now=now)
