"""Execution history at scale: GET /api/v1/executions/ filtered by status + date range +
pipeline, first page and a page DEPTH pages deep (cursor), with ROWS executions in the table.

Prints the EXPLAIN (ANALYZE) plan of each page's query and the p50/p95 server time of the API
request (Django in process: routing, auth, filtering, query, serialization), for a staff user
(sees every row) and a non-staff owner (sees their own rows). Target: p95 < 50 ms, index scans.

    DATABASE_NAME=imageflow_api .venv/bin/python bench/api_executions_list.py            # 1,000,000 rows
    DATABASE_NAME=imageflow_api .venv/bin/python bench/api_executions_list.py --rows 200000 --depth 200

Rows are generated once with INSERT ... SELECT generate_series (re-used by later runs with the
same --rows); --regenerate forces it. Use a database of your own: the table is filled.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta

from _setup import django_setup, percentile

STATUS_MIX = "CASE WHEN r < 0.60 THEN 'completed' WHEN r < 0.75 THEN 'failed' WHEN r < 0.80 THEN 'cancelled' " \
             "WHEN r < 0.90 THEN 'running' ELSE 'pending' END"
PIPELINES = 5
SECONDS_APART = 30


def seed(rows: int, regenerate: bool):
    from django.core.management import call_command
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from registry.models import Pipeline
    from tests.factories import StaffFactory, UserFactory

    call_command("migrate", verbosity=0)
    staff = StaffFactory(username="bench-staff")
    owner = UserFactory(username="bench-owner")
    other = UserFactory(username="bench-other")
    pipelines = []
    for n in range(PIPELINES):
        pipeline, _ = Pipeline.objects.get_or_create(
            name=f"bench-pipeline-{n}", defaults={"definition": {"nodes": [], "edges": []}, "created_by": owner,
                                                   "description": "benchmark"})
        pipelines.append(pipeline)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pipeline_executions")
        existing = cursor.fetchone()[0]
        if existing != rows or regenerate:
            print(f"generating {rows:,} executions (table had {existing:,}) ...", flush=True)
            started = time.perf_counter()
            cursor.execute("DELETE FROM component_executions")
            cursor.execute("DELETE FROM pipeline_executions")
            pipeline_array = "ARRAY[" + ",".join(f"'{p.pk}'::uuid" for p in pipelines) + "]"
            cursor.execute(f"""
                INSERT INTO pipeline_executions (id, pipeline_id, pipeline_version, status, input_data, error_message,
                                                 started_at, completed_at, created_by, created_at, updated_at)
                SELECT gen_random_uuid(), ({pipeline_array})[1 + (i %% {PIPELINES})], 1, status, '{{}}'::jsonb,
                       CASE WHEN status = 'failed' THEN 'step ' || (i %% 7) || ' failed: out of memory' END,
                       CASE WHEN status <> 'pending' THEN ts + interval '2 seconds' END,
                       CASE WHEN status IN ('completed', 'failed', 'cancelled') THEN ts + interval '20 seconds' END,
                       CASE WHEN (i / 3) %% 2 = 0 THEN %s::uuid ELSE %s::uuid END, ts, ts
                FROM (SELECT i, {STATUS_MIX} AS status, ts
                      FROM (SELECT i, random() AS r, now() - i * interval '{SECONDS_APART} seconds' AS ts
                            FROM generate_series(1, %s) AS i) raw) s
            """, [owner.pk, other.pk, rows])
            cursor.execute("ANALYZE pipeline_executions")
            print(f"generated in {time.perf_counter() - started:.1f} s", flush=True)
    return staff, owner, pipelines, Token


def explain(sql_with_params: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql_with_params)
        return "\n".join("    " + row[0] for row in cursor.fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--depth", type=int, default=1000, help="pages deep for the deep-page measurement")
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--regenerate", action="store_true")
    args = parser.parse_args()

    django_setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from executions.models import PipelineExecution
    from imageflow.api.ownership import scope_to_user
    from imageflow.api.pagination import KeysetPagination

    staff, owner, pipelines, Token = seed(args.rows, args.regenerate)
    now = timezone.now()
    params = {"status": "completed", "pipeline": str(pipelines[0].pk), "page_size": str(args.page_size),
              "created_after": (now - timedelta(days=400)).isoformat(),
              "created_before": (now - timedelta(hours=1)).isoformat()}
    print(f"\nrows: {PipelineExecution.objects.count():,}; page size {args.page_size}, "
          f"deep page = {args.depth} pages deep")

    failures = []
    base = PipelineExecution.objects.filter(created_at__gte=now - timedelta(days=400),
                                            created_at__lt=now - timedelta(hours=1))
    scenarios = [
        # (label, user, query parameters, the same filter as a queryset)
        ("staff (all rows): status + pipeline + range", staff, params,
         base.filter(status="completed", pipeline=pipelines[0])),
        ("owner (own rows): status + pipeline + range", owner, params,
         base.filter(status="completed", pipeline=pipelines[0])),
        ("staff: two statuses + range", staff,
         {k: v for k, v in params.items() if k != "pipeline"} | {"status": "failed,running"},
         base.filter(status__in=["failed", "running"])),
        ("owner: no filter (own history)", owner, {"page_size": str(args.page_size)},
         PipelineExecution.objects.all()),
    ]
    for label, user, scenario_params, filtered in scenarios:
        client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
        matching = scope_to_user(filtered, user=user).order_by("-created_at", "-id")
        offset = args.depth * args.page_size
        boundary = matching.values_list("created_at", "id")[offset - 1: offset]
        if not boundary:
            print(f"\n{label}: fewer than {offset:,} matching rows; use more --rows or a smaller --depth")
            continue
        cursor = KeysetPagination.encode_cursor(time_value=boundary[0][0], row_id=boundary[0][1])
        for page_label, extra in (("first page", {}), (f"page {args.depth + 1} (cursor)", {"cursor": cursor})):
            query = {**scenario_params, **extra}
            response = client.get("/api/v1/executions/", query)
            assert response.status_code == 200, response.content[:300]
            assert len(response.json()["results"]) == args.page_size
            timings = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                client.get("/api/v1/executions/", query)
                timings.append((time.perf_counter() - started) * 1000)
            with CaptureQueriesContext(connection) as queries:
                client.get("/api/v1/executions/", query)
            page_sql = next(q["sql"] for q in queries.captured_queries
                            if 'FROM "pipeline_executions"' in q["sql"] and "LIMIT" in q["sql"])
            plan = explain(page_sql)
            p95 = percentile(timings, 95)
            uses_index = "Index" in plan and "Seq Scan on pipeline_executions" not in plan
            ok = p95 < 50 and uses_index
            if not ok:
                failures.append(f"{label} {page_label}")
            print(f"\n== {label}, {page_label}: p50 {statistics.median(timings):.1f} ms, p95 {p95:.1f} ms "
                  f"over {args.repeat} requests; index used: {uses_index} -> {'OK' if ok else 'MISSED'}")
            print(plan)
    print("\nresult:", "all targets met (p95 < 50 ms, index scans)" if not failures else f"MISSED: {failures}")


if __name__ == "__main__":
    main()
