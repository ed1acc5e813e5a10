"""Full-text log search latency through the API's query code (`executions.logstore.queries`:
simple query string, filters, highlighting, search_after) over N records, with the same query
mix over N/10 records as the baseline of the same run.

    .venv/bin/python bench/logs_search.py [--records 100000] [--queries 200]

Runs its own osmem-server on a free port (in-memory; its memory is printed, then freed).
Documents are loaded with plain `_bulk` requests through the project's index template.
Target (issue 5): p95 < 100 ms over 1,000,000 records; the in-memory server's footprint bounds
how many fit on this machine (see the printed RSS per record).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_common import WORDS, SeparateSearchServer, django_setup, fake_level, fake_message, percentile  # noqa: E402

START = datetime(2026, 9, 1, tzinfo=UTC)
SPAN_SECONDS = 90 * 24 * 3600  # three monthly indices


def load(client, index_name_for, *, first: int, count: int, rng, executions, pipelines, batch: int = 5000) -> None:
    for offset in range(first, first + count, batch):
        lines = []
        for record_id in range(offset, min(offset + batch, first + count)):
            when = START + timedelta(seconds=rng.randrange(SPAN_SECONDS), microseconds=rng.randrange(1000) * 1000)
            execution = rng.choice(executions)
            source = {
                "record_id": record_id, "execution_id": execution, "pipeline_id": pipelines[hash(execution) % len(pipelines)],
                "pipeline_name": "bench", "owner_id": None, "step_id": None, "node_id": f"node-{rng.randint(0, 9)}",
                "component": rng.choice(["resize", "blur", "crop", "external"]), "level": fake_level(rng),
                "message": fake_message(rng), "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "extra": {"attempt": 1},
            }
            lines.append(json.dumps({"index": {"_index": index_name_for(when), "_id": str(record_id)}}))
            lines.append(json.dumps(source))
        response = client.bulk(operations="\n".join(lines) + "\n")
        assert not response["errors"], json.dumps(response)[:300]


def query_mix(rng, executions, pipelines, n: int) -> list[tuple[str, dict]]:
    mix = []
    for i in range(n):
        kind = ("phrase", "words", "words+level", "words+range", "level+pipeline", "execution page")[i % 6]
        a, b = rng.choice(WORDS), rng.choice(WORDS)
        since = START + timedelta(days=rng.randint(0, 80))
        options = {
            "phrase": {"text": f'"{a} {b}"'},
            "words": {"text": f"{a} {b}"},
            "words+level": {"text": a, "levels": ["error", "warning"]},
            "words+range": {"text": f"{a} {b}", "since": since, "until": since + timedelta(days=7)},
            "level+pipeline": {"levels": ["error"], "pipelines": [rng.choice(pipelines)]},
            "execution page": {"execution_id": rng.choice(executions)},
        }[kind]
        mix.append((kind, options))
    return mix


def measure(mix) -> dict[str, list[float]]:
    from executions.logstore import queries

    timings: dict[str, list[float]] = {}
    for kind, options in mix:
        started = time.perf_counter()
        if kind == "execution page":
            page = queries.execution_logs(size=100, **options)
        else:
            page = queries.search_logs(size=50, **options)
        timings.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
        assert page.total >= 0
    return timings


def report(label: str, timings: dict[str, list[float]]) -> float:
    every = [t for values in timings.values() for t in values]
    parts = ", ".join(f"{kind} p95 {percentile(values, 95):.1f}" for kind, values in timings.items())
    p95 = percentile(every, 95)
    print(f"  {label}: all queries median {sorted(every)[len(every) // 2]:.1f} ms p95 {p95:.1f} ms  ({parts} ms)")
    return p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=240)
    args = parser.parse_args()
    django_setup()
    from django.test import override_settings

    from executions.logstore.documents import alias_name, ensure_template, monthly_index_name
    from imageflow.search import build_client

    rng = random.Random(7)
    executions = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(2000)]
    pipelines = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(50)]
    with SeparateSearchServer() as server, override_settings(
        ELASTICSEARCH_URL=server.url, ELASTICSEARCH_INDEX_PREFIX="bench-search", ELASTICSEARCH_TIMEOUT_SECONDS=120.0,
    ):
        client = build_client(url=server.url, timeout_seconds=120.0)
        ensure_template(client)
        base_rss = server.rss_mb()
        small = max(1, args.records // 10)
        print(f"logs_search: {args.queries} queries per size (phrase, words, words+level, words+range, "
              f"level+pipeline, one run's page), own osmem-server at {server.url}")
        started = time.monotonic()
        load(client, monthly_index_name, first=0, count=small, rng=rng, executions=executions, pipelines=pipelines)
        client.indices.refresh(index=alias_name())
        print(f"  loaded {small:,} records in {time.monotonic() - started:.1f} s")
        measure(query_mix(rng, executions, pipelines, 12))  # warm-up
        baseline = report(f"baseline {small:>9,} records", measure(query_mix(rng, executions, pipelines, args.queries)))
        started = time.monotonic()
        load(client, monthly_index_name, first=small, count=args.records - small, rng=rng, executions=executions,
             pipelines=pipelines)
        client.indices.refresh(index=alias_name())
        stored = client.count(index=alias_name())["count"]
        rss = server.rss_mb()
        print(f"  loaded {args.records - small:,} more in {time.monotonic() - started:.1f} s; {stored:,} stored; "
              f"search server RSS {rss:,.0f} MB (~{(rss - base_rss) * 1e3 / stored:.1f} kB per record)")
        full = report(f"full     {stored:>9,} records", measure(query_mix(rng, executions, pipelines, args.queries)))
        print(f"  p95 ratio full / baseline = {full / baseline:.2f}; target p95 < 100 ms at this size: "
              f"{'MET' if full < 100 else 'NOT MET'} ({full:.1f} ms)")


if __name__ == "__main__":
    main()
