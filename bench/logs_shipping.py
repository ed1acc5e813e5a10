"""Log shipping end to end, against plain `_bulk` requests of the same documents, same server,
same run.

    .venv/bin/python bench/logs_shipping.py [--records 10000] [--rounds 4] [--batch-size 2000] [--profile]

Each round writes `--records` rows to the durable PostgreSQL buffer (not timed), then times, in
alternating order:
- the baseline: the very documents the shipper sends (read and encoded before the clock starts,
  only the index prefix differs), in sequential `_bulk` requests of `--batch-size`, then a
  refresh: the search server's own ingest rate, the ceiling of any shipper;
- the shipper: `ship_pending` (read and encode the rows in PostgreSQL, `_bulk`, mark shipped),
  then the same refresh: rows in PostgreSQL -> searchable.
Both go into fresh indices from the same template (same mapping and settings), deleted after the
round so every round starts from the same server state. It prints each round, the median rates
and the median of the per-round ratios (the machine is shared and noisy: read the ratio of a
round, where both sides met the same load). Target (issue 14): shipper >= 0.9 x baseline.

Runs its own osmem-server on a free port (in-memory; stopped at the end) and uses DATABASE_NAME
(default imageflow_live).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_common import django_setup, fake_level, fake_message, search_server  # noqa: E402

SHIP_PREFIX, RAW_PREFIX = "bench-ship", "bench-raw"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000, help="rows per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--executions", type=int, default=50)
    parser.add_argument("--profile", action="store_true", help="cProfile the shipper in the last round")
    parser.add_argument("--search-url", help="an existing search server (a real Elasticsearch node: also set "
                        "ELASTICSEARCH_PLAIN_JSON=false) instead of an osmem-server of the benchmark's own")
    args = parser.parse_args()
    os.environ.setdefault("DATABASE_NAME", "imageflow_live")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from _setup import ensure_database

    ensure_database()
    django_setup()
    from django.contrib.auth import get_user_model
    from django.test import override_settings
    from django.utils import timezone

    from executions.log_models import ExecutionLogRecord
    from executions.logstore.documents import delete_log_indices, ensure_template
    from executions.logstore.shipping import bulk_body, pending_records, ship_pending
    from executions.models import PipelineExecution
    from imageflow.search import build_client
    from registry.models import Pipeline

    rng = random.Random(5)
    user, _ = get_user_model().objects.get_or_create(username="bench-logs")
    pipeline = Pipeline.objects.create(name="bench-logs", definition={"nodes": [], "edges": []}, created_by=user)
    runs = PipelineExecution.objects.bulk_create([
        PipelineExecution(pipeline=pipeline, pipeline_version=1, created_by=user,
                          input_data={"request_id": f"bench-{i:04d}"}) for i in range(args.executions)])

    def fill() -> None:
        # Rows left unshipped by earlier runs of this benchmark would be counted: out of the way.
        ExecutionLogRecord.objects.filter(shipped_at__isnull=True).update(shipped_at=timezone.now())
        now = timezone.now()
        ExecutionLogRecord.objects.bulk_create([
            ExecutionLogRecord(
                execution=rng.choice(runs), level=fake_level(rng), message=fake_message(rng),
                node_id=f"node-{rng.randint(0, 9)}", component=rng.choice(["resize", "blur", "crop", "external"]),
                extra={"attempt": 1}, timestamp=now - timedelta(seconds=args.records - i),
            )
            for i in range(args.records)
        ], batch_size=5000)

    print(f"logs_shipping: {args.rounds} rounds of {args.records:,} records, batch size {args.batch_size}; "
          f"load average {os.getloadavg()[0]:.1f}")
    rounds: list[dict] = []
    import psutil
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = psutil.Process(cursor.fetchone()[0])
    me = psutil.Process()

    def cpu(process) -> float:
        if process is None:  # --search-url: not a process of this machine's to measure
            return float("nan")
        times = process.cpu_times()
        return times.user + times.system

    with search_server(args.search_url) as server:
        search = psutil.Process(server.process.pid) if server.process else None

        def cpu_now() -> tuple[float, float, float]:
            return cpu(search), cpu(me), cpu(backend)

        def cpu_since(before) -> tuple[float, ...]:
            return tuple(after - b for after, b in zip(cpu_now(), before))
        client = build_client(url=server.url, timeout_seconds=120.0)
        busy = [0.0]
        plain_bulk = client.bulk

        def timed_bulk(**kwargs):
            begin = time.perf_counter()
            try:
                return plain_bulk(**kwargs)
            finally:
                busy[0] += time.perf_counter() - begin

        client.bulk = timed_bulk
        for prefix in (RAW_PREFIX, SHIP_PREFIX):  # an existing server may hold an earlier run's
            with override_settings(ELASTICSEARCH_INDEX_PREFIX=prefix):
                delete_log_indices(client)

        def baseline(bodies: list[str]) -> float:
            started = time.perf_counter()
            for body in bodies:
                response = client.bulk(operations=body)
                assert not response["errors"], str(response)[:500]
            client.indices.refresh(index=f"{RAW_PREFIX}-logs-*")
            return time.perf_counter() - started

        def shipper(profile: bool) -> tuple[float, float]:
            profiler = None
            if profile:
                import cProfile

                profiler = cProfile.Profile()
            with override_settings(ELASTICSEARCH_INDEX_PREFIX=SHIP_PREFIX):
                busy[0] = 0.0
                started = time.perf_counter()
                if profiler:
                    profiler.enable()
                result = ship_pending(batch_size=args.batch_size, client=client)
                client.indices.refresh(index=f"{SHIP_PREFIX}-logs-*")
                seconds = time.perf_counter() - started
                if profiler:
                    profiler.disable()
                    import pstats

                    pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
            assert result.shipped == args.records and result.refused == 0, result
            return seconds, busy[0]

        for number in range(args.rounds):
            fill()
            with override_settings(ELASTICSEARCH_INDEX_PREFIX=RAW_PREFIX):
                ensure_template(client)
                bodies, last_id = [], 0
                while batch := pending_records(after_id=last_id, limit=args.batch_size):
                    bodies.append(bulk_body(batch))
                    last_id = batch[-1].id
            with override_settings(ELASTICSEARCH_INDEX_PREFIX=SHIP_PREFIX):
                ensure_template(client)
            load = os.getloadavg()[0]
            profile = args.profile and number == args.rounds - 1
            for arm in (("raw", "ship") if number % 2 == 0 else ("ship", "raw")):
                before = cpu_now()
                if arm == "raw":
                    raw_seconds = baseline(bodies)
                    raw_cpu = cpu_since(before)
                else:
                    ship_seconds, in_bulk = shipper(profile)
                    ship_cpu = cpu_since(before)
            counts = {prefix: client.count(index=f"{prefix}-logs-*")["count"] for prefix in (RAW_PREFIX, SHIP_PREFIX)}
            assert counts == {RAW_PREFIX: args.records, SHIP_PREFIX: args.records}, counts
            assert not ExecutionLogRecord.objects.filter(shipped_at__isnull=True).exists()
            row = {"raw": args.records / raw_seconds, "ship": args.records / ship_seconds,
                   "ratio": raw_seconds / ship_seconds, "in_bulk": in_bulk, "ship_seconds": ship_seconds}
            rounds.append(row)
            first = "baseline first" if number % 2 == 0 else "shipper first"
            print(f"  round {number + 1} ({first}, load {load:.1f}): baseline {row['raw']:>7,.0f} records/s, "
                  f"shipper {row['ship']:>7,.0f} records/s, ratio {row['ratio']:.2f}; the shipper waited "
                  f"{in_bulk:.2f} of {ship_seconds:.2f} s for _bulk answers")
            print(f"    CPU seconds (search server / this process / its PostgreSQL backend): baseline "
                  f"{' / '.join(f'{v:.2f}' for v in raw_cpu)}, shipper {' / '.join(f'{v:.2f}' for v in ship_cpu)}")
            for prefix in (RAW_PREFIX, SHIP_PREFIX):
                with override_settings(ELASTICSEARCH_INDEX_PREFIX=prefix):
                    delete_log_indices(client)
        rss = server.rss_mb()

    ratio = statistics.median(row["ratio"] for row in rounds)
    each = ", ".join(f"{row['ratio']:.2f}" for row in rounds)
    print(f"  median baseline, plain _bulk of the same documents + refresh : "
          f"{statistics.median(row['raw'] for row in rounds):>8,.0f} records/s")
    print(f"  median shipper, PostgreSQL rows -> searchable               : "
          f"{statistics.median(row['ship'] for row in rounds):>8,.0f} records/s")
    print(f"  shipper / baseline: median {ratio:.2f} (rounds {each}); "
          f"target >= 0.90: {'MET' if ratio >= 0.9 else 'NOT MET'}; search server RSS {rss:,.0f} MB")


if __name__ == "__main__":
    main()
