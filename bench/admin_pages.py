"""Staff admin pages at scale: the server time of every admin list and change page (files,
executions, pipelines, pipeline versions, workflows, workflow versions, the dashboard and the run
form) with EXECUTIONS runs (STEPS steps each) and FILES files in the tables, as a logged-in
superuser through Django's test Client in process (DEBUG off: middleware, admin, templates,
queries). Next to each, in the same run, a bare Django admin changelist of the same list size
(a plain ModelAdmin of the same model, plain fields only, on a throwaway AdminSite) as the
baseline. For every page it also prints the query count at list_per_page 20 and 100 (a list
whose count grows with the page size has per-row queries) and the object-store requests the
page views sent (botocore's before-send hook on the storage client). Target: p95 < 150 ms,
query count independent of page size, zero store requests.

    DATABASE_NAME=imageflow_admin_bench DATABASE_POOL=false .venv/bin/python bench/admin_pages.py
    ... bench/admin_pages.py --executions 2000 --files 20000 --repeat 20

The database (default imageflow_admin_bench) is created if missing, migrated and filled once
with INSERT ... SELECT generate_series (files with metadata and a thumbnails record, nothing
uploaded: the pages must not read the store); a later run with the same sizes re-uses it,
--regenerate refills it. Use a database of your own: its tables are filled.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from contextlib import contextmanager

os.environ.setdefault("DATABASE_NAME", "imageflow_admin_bench")
os.environ.setdefault("DATABASE_POOL", "false")
os.environ.setdefault("DEBUG", "false")

from _setup import django_setup, ensure_database, percentile  # noqa: E402

TARGET_MS = 150
STATUS_MIX = ("CASE WHEN r < 0.60 THEN 'completed' WHEN r < 0.75 THEN 'failed' WHEN r < 0.80 THEN 'cancelled' "
              "WHEN r < 0.90 THEN 'running' ELSE 'pending' END")
STEP_STATUS = ("CASE e.status WHEN 'completed' THEN 'completed' WHEN 'failed' THEN "
               "CASE WHEN s.n = 0 THEN 'failed' ELSE 'skipped' END WHEN 'running' THEN "
               "CASE WHEN s.n < 3 THEN 'completed' WHEN s.n = 3 THEN 'running' ELSE 'pending' END "
               "WHEN 'cancelled' THEN 'cancelled' ELSE 'pending' END")
SECONDS_APART = 120  # 10,000 runs over ~14 days, so the dashboard's window is full


def seed(*, executions: int, steps: int, files: int, regenerate: bool):
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from registry.models import Component, Pipeline, Workflow
    from registry.services import pipeline_create
    from registry.workflow_services import workflow_create

    call_command("migrate", verbosity=0)
    User = get_user_model()
    admin_user = User.objects.filter(username="bench-admin").first()
    if admin_user is None:
        admin_user = User.objects.create_superuser("bench-admin", "bench-admin@example.com", "bench-admin")
    components = []
    for n in range(steps):
        component, _ = Component.objects.get_or_create(
            name=f"bench-step-{n}", version="1.0.0",
            defaults={"docker_image": f"example/bench-step-{n}:1.0.0", "input_schema": {"type": "object"},
                      "output_schema": {"type": "object"}, "resource_requirements": {"cpu": 1}})
        components.append(component)
    pipeline = Pipeline.objects.filter(name="bench-pipeline").first()
    if pipeline is None:
        nodes = [{"id": f"step{n}", "component": {"name": c.name, "version": c.version}, "parameters": {}}
                 for n, c in enumerate(components)]
        edges = [{"from": f"step{n}", "to": f"step{n + 1}"} for n in range(steps - 1)]
        pipeline = pipeline_create(name="bench-pipeline", definition={"nodes": nodes, "edges": edges},
                                   created_by=admin_user, description="admin page benchmark")
    workflow = Workflow.objects.filter(name="bench-workflow").first()
    if workflow is None:
        workflow, _ = workflow_create(user=admin_user, data={
            "name": "bench-workflow", "description": "admin page benchmark", "category": "bench", "tags": ["bench"],
            "metadata": {}, "params": [{"key": "size", "value_type": "int", "required": False, "default_value": "3",
                                         "metadata": None}],
            "nodes": [{"key": f"n{n}", "node_type": "tool", "name": f"Node {n}", "parameters": {}, "order_index": n}
                      for n in range(steps)],
            "edges": [{"parent": f"n{n}", "child": f"n{n + 1}", "handoff_data": None} for n in range(steps - 1)]})

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM files")
        have_files = cursor.fetchone()[0]
        if have_files != files or regenerate:
            print(f"generating {files:,} files (table had {have_files:,}) ...", flush=True)
            started = time.perf_counter()
            cursor.execute("DELETE FROM file_lineage")  # names files and steps (no ON DELETE CASCADE in SQL)
            cursor.execute("DELETE FROM files")
            cursor.execute("""
                INSERT INTO files (id, original_name, mime_type, file_size, storage_path, checksum, metadata,
                                   thumbnails, created_at, created_by)
                SELECT id, 'photo-' || i || '.jpg', 'image/jpeg', 200000 + i, 'bench/originals/' || id || '.jpg',
                       md5(id::text) || md5(i::text),
                       jsonb_build_object('format', 'JPEG', 'width', 4000, 'height', 3000,
                                          'exif', jsonb_build_object('Make', 'Canon', 'Model', 'EOS 40D')),
                       jsonb_build_object('256', jsonb_build_object('key', 'bench/thumbnails/' || id || '-256.jpg',
                                          'width', 256, 'height', 192, 'mime_type', 'image/jpeg', 'bytes', 9000)),
                       now() - i * interval '12 seconds', %s::uuid
                FROM (SELECT i, gen_random_uuid() AS id FROM generate_series(1, %s) AS i) g
            """, [admin_user.pk, files])
            cursor.execute("VACUUM ANALYZE files")
            print(f"  in {time.perf_counter() - started:.1f} s", flush=True)
            regenerate = True  # steps name file ids: refill them too
        cursor.execute("SELECT count(*) FROM pipeline_executions")
        have_runs = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM component_executions")
        have_steps = cursor.fetchone()[0]
        if have_runs != executions or have_steps != executions * steps or regenerate:
            print(f"generating {executions:,} executions, {executions * steps:,} steps "
                  f"(tables had {have_runs:,}, {have_steps:,}) ...", flush=True)
            started = time.perf_counter()
            cursor.execute("DELETE FROM file_lineage")
            cursor.execute("DELETE FROM component_executions")
            cursor.execute("DELETE FROM pipeline_executions")
            cursor.execute("CREATE TEMP TABLE bench_files AS SELECT row_number() OVER (ORDER BY id) - 1 AS n, id "
                           "FROM files")
            cursor.execute("CREATE INDEX ON bench_files (n)")
            cursor.execute(f"""
                INSERT INTO pipeline_executions (id, pipeline_id, pipeline_version, status, input_data, output_data,
                                                 error_message, started_at, completed_at, created_by, created_at,
                                                 updated_at)
                SELECT gen_random_uuid(), %s::uuid, 1, status,
                       jsonb_build_object('inputs', jsonb_build_array(f.id::text), 'parameters', '{{}}'::jsonb),
                       '{{}}'::jsonb,
                       CASE WHEN status = 'failed' THEN 'step0 failed: out of memory' END,
                       CASE WHEN status <> 'pending' THEN ts + interval '2 seconds' END,
                       CASE WHEN status IN ('completed', 'failed', 'cancelled') THEN ts + interval '20 seconds' END,
                       %s::uuid, ts, ts
                FROM (SELECT i, {STATUS_MIX} AS status, now() - i * interval '{SECONDS_APART} seconds' AS ts
                      FROM (SELECT i, random() AS r FROM generate_series(1, %s) AS i) raw) s
                JOIN bench_files f ON f.n = (s.i * %s) %% (SELECT count(*) FROM bench_files)
            """, [pipeline.pk, admin_user.pk, executions, steps])
            component_array = "ARRAY[" + ",".join(f"'{c.pk}'::uuid" for c in components) + "]"
            cursor.execute(f"""
                INSERT INTO component_executions (id, execution_id, component_id, node_id, status, input_data,
                                                  output_data, execution_time_ms, attempts, started_at, completed_at,
                                                  worker, waiting_parents, enqueue_failed, created_at, updated_at)
                SELECT gen_random_uuid(), e.id, ({component_array})[s.n + 1], 'step' || s.n, {STEP_STATUS},
                       jsonb_build_object('parameters', '{{}}'::jsonb,
                                          'parents', CASE WHEN s.n = 0 THEN '[]'::jsonb
                                                     ELSE jsonb_build_array('step' || (s.n - 1)) END,
                                          'inputs', CASE WHEN s.n = 0 THEN e.input_data -> 'inputs' END),
                       CASE WHEN {STEP_STATUS} = 'completed'
                            THEN jsonb_build_object('files', jsonb_build_array(fo.id::text)) END,
                       1500, 1, e.started_at, e.completed_at, 'bench:1', 0, false, e.created_at, e.created_at
                FROM (SELECT *, row_number() OVER (ORDER BY id) - 1 AS rn FROM pipeline_executions) e
                CROSS JOIN generate_series(0, %s - 1) AS s(n)
                JOIN bench_files fo ON fo.n = (e.rn * %s + s.n + 1) %% (SELECT count(*) FROM bench_files)
            """, [steps, steps])
            cursor.execute("DROP TABLE bench_files")
            cursor.execute("VACUUM ANALYZE pipeline_executions")
            cursor.execute("VACUUM ANALYZE component_executions")
            print(f"  in {time.perf_counter() - started:.1f} s", flush=True)
    return admin_user, pipeline, workflow


@contextmanager
def store_requests():
    """Every request the storage client sends while the block runs (presigning sends nothing)."""
    from django.core.files.storage import default_storage

    seen: list[tuple[str, str]] = []
    client = default_storage.connection.meta.client

    def record(request, **kwargs):
        seen.append((request.method, request.url))

    client.meta.events.register("before-send.s3", record)
    try:
        yield seen
    finally:
        client.meta.events.unregister("before-send.s3", record)


def baseline_site():
    """A throwaway AdminSite with plain ModelAdmins of the big models (plain fields, Django's
    defaults for everything else), mounted at /bench-admin/ next to the real URLs."""
    from django.conf import settings
    from django.contrib import admin
    from django.urls import clear_url_caches, include, path

    from executions.models import PipelineExecution
    from files.models import File

    site = admin.AdminSite(name="bench_admin")

    class PlainFileAdmin(admin.ModelAdmin):
        list_display = ("id", "original_name", "mime_type", "file_size", "created_at")

    class PlainExecutionAdmin(admin.ModelAdmin):
        list_display = ("id", "status", "pipeline_version", "created_at")

    # As many rows a page as the list it is the baseline of.
    PlainFileAdmin.list_per_page = admin.site._registry[File].list_per_page
    PlainExecutionAdmin.list_per_page = admin.site._registry[PipelineExecution].list_per_page
    site.register(File, PlainFileAdmin)
    site.register(PipelineExecution, PlainExecutionAdmin)
    original = __import__(settings.ROOT_URLCONF, fromlist=["urlpatterns"])
    urlconf = types.ModuleType("bench_admin_urls")
    urlconf.urlpatterns = [path("bench-admin/", site.urls), path("", include(original.urlpatterns))]
    sys.modules["bench_admin_urls"] = urlconf
    settings.ROOT_URLCONF = "bench_admin_urls"
    clear_url_caches()
    return site


@contextmanager
def per_page(size: int):
    from django.contrib import admin

    saved = {model_admin: model_admin.list_per_page for model_admin in admin.site._registry.values()}
    for model_admin in saved:
        model_admin.list_per_page = size
    try:
        yield
    finally:
        for model_admin, value in saved.items():
            model_admin.list_per_page = value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=10, help="steps per execution")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated page names to measure (default all)")
    parser.add_argument("--profile", default="", help="a page name: print its cProfile top functions")
    args = parser.parse_args()

    ensure_database()
    django_setup()
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from executions.models import PipelineExecution
    from files.models import File
    from registry.models import PipelineVersion, WorkflowVersion

    settings.DEBUG = False
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    admin_user, pipeline, workflow = seed(executions=args.executions, steps=args.steps, files=args.files,
                                          regenerate=args.regenerate)
    baseline_site()
    client = Client()
    client.force_login(admin_user)

    execution = PipelineExecution.objects.filter(status="completed").order_by("-created_at").first()
    output_id = execution.steps.order_by("node_id").last().output_data["files"][0]
    run_form = ("POST", reverse("admin:registry_pipeline_changelist"),
                {"action": "run_pipelines", "_selected_action": [str(pipeline.pk)]})
    def forget_dashboard_aggregates():
        from django.core.cache import cache
        from django.utils import timezone

        from executions.dashboard_selectors import aggregates_cache_key

        cache.delete(aggregates_cache_key(days=14, now=timezone.now()))

    pages = [
        # (name, (method, url, data[, hook run before each request]), baseline name)
        ("file list", ("GET", reverse("admin:files_file_changelist"), None), "bare file list"),
        ("file page", ("GET", reverse("admin:files_file_change", args=[output_id]), None), "bare file list"),
        ("execution list", ("GET", reverse("admin:executions_pipelineexecution_changelist"), None),
         "bare execution list"),
        ("execution page", ("GET", reverse("admin:executions_pipelineexecution_change", args=[execution.pk]), None),
         "bare execution list"),
        ("pipeline list", ("GET", reverse("admin:registry_pipeline_changelist"), None), "bare execution list"),
        ("pipeline page", ("GET", reverse("admin:registry_pipeline_change", args=[pipeline.pk]), None),
         "bare execution list"),
        ("pipeline version page", ("GET", reverse("admin:registry_pipelineversion_change", args=[
            PipelineVersion.objects.filter(pipeline=pipeline).latest("version").pk]), None), "bare execution list"),
        ("workflow list", ("GET", reverse("admin:registry_workflow_changelist"), None), "bare execution list"),
        ("workflow page", ("GET", reverse("admin:registry_workflow_change", args=[workflow.pk]), None),
         "bare execution list"),
        ("workflow version page", ("GET", reverse("admin:registry_workflowversion_change", args=[
            WorkflowVersion.objects.filter(workflow=workflow).latest("version").pk]), None), "bare execution list"),
        ("dashboard", ("GET", "/admin/dashboard/", None), "bare execution list"),
        # The same page when no aggregates are kept (right after a start, before beat's first
        # refresh): the one view that computes them itself.
        ("dashboard recomputed", ("GET", "/admin/dashboard/", None, forget_dashboard_aggregates),
         "bare execution list"),
        ("run form", run_form, "bare execution list"),
    ]
    baselines = {
        "bare file list": ("GET", "/bench-admin/files/file/", None),
        "bare execution list": ("GET", "/bench-admin/executions/pipelineexecution/", None),
    }
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if only:
        pages = [page for page in pages if page[0] in only]

    def request(spec):
        method, url, data, *before = spec
        for hook in before:
            hook()
        response = client.post(url, data) if method == "POST" else client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.content[:500])
        return response

    def timed(spec) -> list[float]:
        for _ in range(args.warmup):
            request(spec)
        timings = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            request(spec)  # a hook of the spec (forgetting a cache entry) is timed too: under 1 ms
            timings.append((time.perf_counter() - started) * 1000)
        return timings

    def queries(spec, size: int) -> int:
        with per_page(size), CaptureQueriesContext(connection) as captured:
            request(spec)
        return len(captured.captured_queries)

    print(f"\nrows: {PipelineExecution.objects.count():,} executions, "
          f"{PipelineExecution.steps.rel.related_model.objects.count():,} steps, {File.objects.count():,} files; "
          f"{args.repeat} requests each after {args.warmup} warm-up; load average {os.getloadavg()[0]:.2f}")

    if args.profile:
        import cProfile
        import pstats

        spec = dict((name, spec) for name, spec, _ in pages)[args.profile]
        request(spec)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(5):
            request(spec)
        profiler.disable()
        pstats.Stats(profiler).sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(40)
        with CaptureQueriesContext(connection) as captured:
            request(spec)
        for query in captured.captured_queries:
            print(f"{query['time']:>7} {query['sql'][:300]}")
        return

    baseline_p95 = {}
    for name, spec in baselines.items():
        timings = timed(spec)
        baseline_p95[name] = percentile(timings, 95)
        print(f"baseline {name}: p50 {statistics.median(timings):.1f} ms, p95 {baseline_p95[name]:.1f} ms, "
              f"queries {queries(spec, 20)}/{queries(spec, 100)}", flush=True)

    rows, missed = [], []
    for name, spec, baseline in pages:
        with store_requests() as seen:
            timings = timed(spec)
        p50, p95 = statistics.median(timings), percentile(timings, 95)
        at20, at100 = queries(spec, 20), queries(spec, 100)
        ok = p95 < TARGET_MS and at20 == at100 and not seen
        if not ok:
            missed.append(name)
        rows.append((name, p50, p95, baseline_p95[baseline], at20, at100, len(seen), ok))
        print(f"{name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, queries {at20}/{at100}, store requests {len(seen)}"
              f"{'' if ok else '  MISSED'}", flush=True)

    print("\n| page | p50 ms | p95 ms | baseline p95 ms | queries at 20 / 100 per page | store requests | |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, p50, p95, base, at20, at100, stores, ok in rows:
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {base:.1f} | {at20} / {at100} | {stores} | "
              f"{'OK' if ok else 'MISSED'} |")
    print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("result:", f"all pages p95 < {TARGET_MS} ms, per-page-size-independent queries, no store requests"
          if not missed else f"MISSED: {missed}")


if __name__ == "__main__":
    main()
