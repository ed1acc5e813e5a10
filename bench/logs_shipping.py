"""Log shipping throughput: records per second moved from the durable PostgreSQL buffer into the
search server by the real shipper (`ship_pending`: claim rows FOR UPDATE SKIP LOCKED, one
`_bulk` per batch, mark shipped), against the baseline of the same documents sent with plain
`_bulk` requests (the search server's own ingest rate), measured in the same run.

    .venv/bin/python bench/logs_shipping.py [--records 20000] [--batch-size 2000]

Runs its own osmem-server on a free port (in-memory; stopped at the end) and uses DATABASE_NAME
(default imageflow_live). Target (issue 5): at least 10,000 records/s shipped.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_common import SeparateSearchServer, django_setup, fake_level, fake_message  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--executions", type=int, default=50)
    args = parser.parse_args()
    import os

    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", os.environ.get("DATABASE_NAME", "imageflow_live")],
                   stderr=subprocess.DEVNULL, check=False)
    django_setup()
    from django.contrib.auth import get_user_model
    from django.test import override_settings
    from django.utils import timezone

    from executions.log_models import ExecutionLogRecord
    from executions.logstore.documents import alias_name, ensure_template
    from executions.logstore.shipping import SOURCE_FIELDS, _bulk_body, ship_pending
    from executions.models import PipelineExecution
    from imageflow.search import build_client
    from registry.models import Pipeline

    rng = random.Random(5)
    user, _ = get_user_model().objects.get_or_create(username="bench-logs")
    pipeline = Pipeline.objects.create(name="bench-logs", definition={"nodes": [], "edges": []}, created_by=user)
    runs = PipelineExecution.objects.bulk_create(
        [PipelineExecution(pipeline=pipeline, pipeline_version=1, created_by=user) for _ in range(args.executions)])
    # Rows waiting from earlier runs of this benchmark would be counted: ship them out of the way.
    ExecutionLogRecord.objects.filter(shipped_at__isnull=True).update(shipped_at=timezone.now())

    started = time.monotonic()
    now = timezone.now()
    rows = [
        ExecutionLogRecord(
            execution=rng.choice(runs), level=fake_level(rng), message=fake_message(rng),
            node_id=f"node-{rng.randint(0, 9)}", component=rng.choice(["resize", "blur", "crop", "external"]),
            extra={"attempt": 1}, timestamp=now - timedelta(seconds=args.records - i),
        )
        for i in range(args.records)
    ]
    ExecutionLogRecord.objects.bulk_create(rows, batch_size=5000)
    insert_seconds = time.monotonic() - started
    print(f"logs_shipping: {args.records} records in the buffer ({args.records / insert_seconds:,.0f} rows/s inserted "
          f"with bulk_create), batch size {args.batch_size}")

    with SeparateSearchServer() as server, override_settings(
        ELASTICSEARCH_URL=server.url, ELASTICSEARCH_INDEX_PREFIX="bench-ship", ELASTICSEARCH_TIMEOUT_SECONDS=60.0,
    ):
        client = build_client(url=server.url, timeout_seconds=60.0)
        ensure_template(client)
        with override_settings(ELASTICSEARCH_INDEX_PREFIX="bench-raw"):
            ensure_template(client)  # the baseline's indices get the same mapping
        # Baseline: the same documents in plain _bulk requests, into another prefix.
        pending = list(ExecutionLogRecord.objects.filter(shipped_at__isnull=True).order_by("id")
                       .values(*SOURCE_FIELDS))
        bodies = [_bulk_body(pending[i:i + args.batch_size]).replace('"_index": "bench-ship-', '"_index": "bench-raw-')
                  for i in range(0, len(pending), args.batch_size)]
        started = time.monotonic()
        for body in bodies:
            response = client.bulk(operations=body)
            assert not response["errors"], json.dumps(response)[:500]
        raw_seconds = time.monotonic() - started
        del pending, bodies

        in_bulk = [0.0]
        original_bulk = client.bulk

        def timed_bulk(**kwargs):
            begin = time.monotonic()
            try:
                return original_bulk(**kwargs)
            finally:
                in_bulk[0] += time.monotonic() - begin

        client.bulk = timed_bulk
        started = time.monotonic()
        result = ship_pending(batch_size=args.batch_size, client=client)
        ship_seconds = time.monotonic() - started
        client.bulk = original_bulk
        client.indices.refresh(index=alias_name())
        stored = client.count(index=alias_name())["count"]
        assert result.shipped == args.records == stored, (result, stored)
        raw_rate, ship_rate = args.records / raw_seconds, args.records / ship_seconds
        print(f"  baseline, plain _bulk of the same documents : {raw_rate:>10,.0f} records/s ({raw_seconds:.2f} s)")
        print(f"  shipper (claim, _bulk, mark shipped)        : {ship_rate:>10,.0f} records/s ({ship_seconds:.2f} s, "
              f"{result.batches} batches, {stored} documents stored)")
        own_seconds = ship_seconds - in_bulk[0]
        print(f"    of which waiting for the search server's _bulk answers: {in_bulk[0]:.2f} s; the shipper's own work "
              f"(claim rows, encode, mark shipped): {own_seconds:.2f} s = {args.records / own_seconds:,.0f} records/s")
        print(f"  shipper / baseline = {ship_rate / raw_rate:.2f}; target >= 10,000 records/s end to end: "
              f"{'MET' if ship_rate >= 10_000 else 'NOT MET'} (bounded by the search server's ingest rate above); "
              f"search server RSS {server.rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
