"""Log search latency through the API, against the same queries sent straight to the search
server, same server, same corpus, same run.

    .venv/bin/python bench/logs_search.py [--records 20000] [--queries 240]

Loads `--records` documents into an osmem-server of its own (plain `_bulk` through the project's
index template), serves the project with one uvicorn process (`imageflow.asgi`, pointed at
that server), and for each query of a mix (phrase, words, words+level, words+7-day range,
level+pipeline, one run's records) times, in alternating order from the same client process:
- the API: `GET /api/v1/logs/?q=...` as a (non-staff) user with a token: HTTP, middleware, auth,
  DRF, the query built by `executions.logstore.queries`, the search, the page rendered;
- the baseline: the very request body the API sends (`queries.search_request`), POSTed straight
  to the server's `_search` with the same HTTP client.
Each pair must agree on the number of matches. Prints median and p95 of both and their ratio, by
kind and over the mix. Target (issue 14): API p95 <= 1.2 x the baseline's p95.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_common import WORDS, django_setup, fake_level, fake_message, percentile, search_server  # noqa: E402

START = datetime(2026, 9, 1, tzinfo=UTC)
SPAN_SECONDS = 90 * 24 * 3600  # three monthly indices
PREFIX = "bench-search"
KINDS = ("phrase", "words", "words+level", "words+range", "level+pipeline", "one run")


def load(client, index_name_for, *, count: int, rng, executions, pipelines, owner_id: str, batch: int = 5000) -> None:
    for offset in range(0, count, batch):
        lines = []
        for record_id in range(offset, min(offset + batch, count)):
            when = START + timedelta(seconds=rng.randrange(SPAN_SECONDS), microseconds=rng.randrange(1000) * 1000)
            execution = rng.choice(executions)
            source = {
                "record_id": record_id, "execution_id": execution, "pipeline_id": pipelines[hash(execution) % len(pipelines)],
                "pipeline_name": "bench", "owner_id": owner_id, "step_id": None, "node_id": f"node-{rng.randint(0, 9)}",
                "component": rng.choice(["resize", "blur", "crop", "external"]), "level": fake_level(rng),
                "message": fake_message(rng), "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "extra": {"attempt": 1},
            }
            lines.append(json.dumps({"index": {"_index": index_name_for(when), "_id": f"{execution}.{record_id}"}}))
            lines.append(json.dumps(source))
        response = client.bulk(operations="\n".join(lines) + "\n")
        assert not response["errors"], json.dumps(response)[:300]


def query_mix(rng, executions, pipelines, n: int) -> list[tuple[str, dict]]:
    """(kind, options of `queries.search_request`) for n queries."""
    mix = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        a, b = rng.choice(WORDS), rng.choice(WORDS)
        since = START + timedelta(days=rng.randint(0, 80))
        options = {
            "phrase": {"text": f'"{a} {b}"'},
            "words": {"text": f"{a} {b}"},
            "words+level": {"text": a, "levels": ["error", "warning"]},
            "words+range": {"text": f"{a} {b}", "since": since, "until": since + timedelta(days=7)},
            "level+pipeline": {"levels": ["error"], "pipelines": [rng.choice(pipelines)]},
            "one run": {"executions": [rng.choice(executions)]},
        }[kind]
        mix.append((kind, options))
    return mix


def api_params(options: dict) -> dict:
    params = {"page_size": 50}
    if options.get("text"):
        params["q"] = options["text"]
    for option, name in (("levels", "level"), ("pipelines", "pipeline"), ("executions", "execution")):
        if options.get(option):
            params[name] = ",".join(options[option])
    for name in ("since", "until"):
        if options.get(name):
            params[name] = options[name].isoformat()
    return params


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=240)
    parser.add_argument("--search-url", help="an existing search server (a real Elasticsearch node: also set "
                        "ELASTICSEARCH_PLAIN_JSON=false) instead of an osmem-server of the benchmark's own")
    args = parser.parse_args()
    os.environ.setdefault("DATABASE_NAME", "imageflow_live")
    os.environ.setdefault("DEBUG", "false")
    sys.path.insert(0, str(ROOT))
    from bench._setup import ensure_database

    ensure_database()
    django_setup()
    import requests
    from django.test import override_settings
    from rest_framework.authtoken.models import Token

    from executions.logstore import queries
    from executions.logstore.documents import alias_name, delete_log_indices, ensure_template, monthly_index_name
    from imageflow.accounts.models import User
    from imageflow.search import build_client

    user, _ = User.objects.get_or_create(username="bench-log-search", defaults={"is_staff": False})
    token, _ = Token.objects.get_or_create(user=user)
    rng = random.Random(7)
    executions = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(2000)]
    pipelines = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(50)]
    with search_server(args.search_url) as server, override_settings(ELASTICSEARCH_URL=server.url,
                                                             ELASTICSEARCH_INDEX_PREFIX=PREFIX):
        client = build_client(url=server.url, timeout_seconds=120.0)
        delete_log_indices(client)  # an existing server may hold an earlier run's
        ensure_template(client)
        started = time.monotonic()
        load(client, monthly_index_name, count=args.records, rng=rng, executions=executions, pipelines=pipelines,
             owner_id=str(user.pk))
        client.indices.refresh(index=alias_name())
        stored = client.count(index=alias_name())["count"]
        print(f"logs_search: {stored:,} records loaded in {time.monotonic() - started:.1f} s into {server.url}; "
              f"{args.queries} queries; load average {os.getloadavg()[0]:.1f}")

        port = free_port()
        env = {**os.environ, "ELASTICSEARCH_URL": server.url, "ELASTICSEARCH_INDEX_PREFIX": PREFIX,
               "LOG_LEVEL": "WARNING"}
        logs = ROOT / "var" / "log"
        logs.mkdir(parents=True, exist_ok=True)
        web = subprocess.Popen(
            [str(Path(sys.executable).parent / "uvicorn"), "imageflow.asgi:application", "--host", "127.0.0.1",
             "--port", str(port), "--lifespan", "off", "--no-access-log"],
            cwd=ROOT, env=env, stdout=(logs / "bench-logs-search-web.log").open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            api, direct = requests.Session(), requests.Session()
            api.headers["Authorization"] = f"Token {token.key}"
            for _ in range(300):
                try:
                    if api.get(f"{base}/livez", timeout=2).ok:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.2)

            def through_api(options: dict) -> tuple[float, int]:
                began = time.perf_counter()
                response = api.get(f"{base}/api/v1/logs/", params=api_params(options), timeout=60)
                elapsed = (time.perf_counter() - began) * 1000
                assert response.status_code == 200, response.text[:300]
                return elapsed, response.json()["count"]

            def straight(options: dict) -> tuple[float, int]:
                index, body = queries.search_request(owner_id=user.pk, size=50, **options)
                params = {} if index == alias_name() else {"ignore_unavailable": "true", "allow_no_indices": "true"}
                began = time.perf_counter()
                response = direct.post(f"{server.url}/{index}/_search", params=params, data=json.dumps(body),
                                       headers={"Content-Type": "application/json"}, timeout=60)
                elapsed = (time.perf_counter() - began) * 1000
                assert response.status_code == 200, response.text[:300]
                return elapsed, response.json()["hits"]["total"]["value"]

            for _, options in query_mix(rng, executions, pipelines, 24):  # warm-up: connections, caches
                through_api(options)
                straight(options)
            timings: dict[str, dict[str, list[float]]] = {"api": {}, "direct": {}}
            for number, (kind, options) in enumerate(query_mix(rng, executions, pipelines, args.queries)):
                pair = (("api", through_api), ("direct", straight))
                counts = {}
                for side, call in (pair if number % 2 == 0 else pair[::-1]):
                    elapsed, counts[side] = call(options)
                    timings[side].setdefault(kind, []).append(elapsed)
                assert counts["api"] == counts["direct"], (kind, options, counts)
        finally:
            web.terminate()
            web.wait(timeout=30)
            delete_log_indices(client)

    def line(label: str, api_ms: list[float], direct_ms: list[float]) -> float:
        api_p95, direct_p95 = percentile(api_ms, 95), percentile(direct_ms, 95)
        print(f"  {label:<15} API median {percentile(api_ms, 50):6.1f} p95 {api_p95:6.1f} ms | straight to the "
              f"server median {percentile(direct_ms, 50):6.1f} p95 {direct_p95:6.1f} ms | p95 ratio "
              f"{api_p95 / direct_p95:.2f}")
        return api_p95 / direct_p95

    for kind in KINDS:
        line(kind, timings["api"][kind], timings["direct"][kind])
    every = {side: [t for values in by_kind.values() for t in values] for side, by_kind in timings.items()}
    ratio = line("all queries", every["api"], every["direct"])
    print(f"  API p95 / straight p95 = {ratio:.2f}; target <= 1.20: {'MET' if ratio <= 1.2 else 'NOT MET'}")


if __name__ == "__main__":
    main()
