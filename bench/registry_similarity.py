"""Benchmark: top-10 similar workflows among N stored workflows (target: < 100 ms at N=100,000).

    .venv/bin/python bench/registry_similarity.py                 # N = 100,000
    .venv/bin/python bench/registry_similarity.py --n 20000 --queries 30

Uses the development database (DATABASE_NAME, e.g. imageflow_registry). Workflows are
generated with COPY (name, description, node names from a vocabulary; node types, components and
typed edges as structural features) and tagged category='bench', so reruns reuse them and other
rows are left alone. Only the columns the similarity query reads are generated (no node rows).

Printed, measured in the same run:
- the indexed two-stage lookup (trigram KNN + selective-feature GIN candidates, exact rescoring):
  median and p95 per query;
- the baseline: the same exact score computed over every row (sequential scan), median;
- recall@10 of the indexed lookup against the exact top 10, and how often a near-duplicate
  draft (a stored workflow with a word and a feature changed) finds its source first.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imageflow.settings")
os.environ.setdefault("DATABASE_NAME", "imageflow_registry")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from registry.models import Workflow  # noqa: E402
from registry.similarity import SimilarityQuery, TrigramStructureBackend, name_tokens  # noqa: E402

WORDS = """summarize translate classify extract invoice email report customer ticket support news article
page web crawl scrape search index vector embed chat reply draft review approve reject route escalate
notify slack teams calendar meeting schedule remind lead crm sales deal update sync sheet table
database query sql csv json xml parse validate clean dedupe merge enrich geocode address phone
image photo resize thumbnail caption describe detect label moderate ocr pdf scan sign contract legal
policy risk fraud score payment refund order shipping track inventory stock price forecast weekly
daily monthly digest summary brief outline blog post tweet social schedule publish seo keyword
audio transcribe voice call record podcast video clip subtitle recipe travel booking hotel flight
weather alert monitor uptime incident log error deploy build test release github issue pull code
doctor patient clinic appointment school student grade homework quiz lesson survey feedback form
""".split()
NODE_TYPES = ["agent"] * 6 + ["tool"] * 8 + ["trigger"] * 2 + ["http", "code", "router", "memory", "webhook", "email"]
COMPONENTS = [f"comp_{i:03d}" for i in range(300)]


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_row(rng: random.Random) -> tuple[str, str, str, list[str]]:
    """name, description, similarity text, structural features of one generated workflow."""
    name = words(rng, rng.randint(2, 4))
    description = words(rng, rng.randint(6, 12))
    n_nodes = rng.randint(2, 7)
    labels, node_names, features = [], [], set()
    for _ in range(n_nodes):
        if rng.random() < 0.3:
            component = rng.choice(COMPONENTS)
            features.add(f"t:{component}")
            features.add(f"c:{component}")
            labels.append(component)
        else:
            node_type = rng.choice(NODE_TYPES)
            features.add(f"t:{node_type}")
            labels.append(node_type)
        node_names.append(words(rng, rng.randint(1, 3)))
    for a, b in zip(labels, labels[1:]):
        features.add(f"e:{a}>{b}")
    text = " ".join(f"{name} {description} {' '.join(node_names)}".lower().split())[:600]
    return name, description, text, sorted(features)


def generate(n: int, seed: int) -> None:
    existing = Workflow.objects.filter(category="bench").count()
    if existing == n:
        print(f"reusing {n:,} generated workflows")
        return
    Workflow.objects.filter(category="bench").delete()
    rng = random.Random(seed)
    started = time.perf_counter()
    buffer = io.StringIO()
    for _ in range(n):
        name, description, text, features = make_row(rng)
        array = "{" + ",".join(features) + "}"
        tokens = "{" + ",".join(name_tokens(name)) + "}"
        buffer.write("\t".join([str(uuid.uuid4()), name, description, text, array, tokens]) + "\n")
    buffer.seek(0)
    with connection.cursor() as cursor:
        raw = cursor.cursor
        with raw.copy("COPY workflow (id, name, description, similarity_text, structure_features, name_tokens, "
                      "version, category, read_count, apply_count, reuse_count, created_at, updated_at) "
                      "FROM STDIN") as copy:
            for line in buffer:
                copy.write(line.rstrip("\n") + "\t1\tbench\t0\t0\t0\tnow\tnow\n")
    # VACUUM flushes the GIN indexes' pending lists (fast-update) and ANALYZE collects the
    # element statistics the candidate stage reads.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE workflow")
    print(f"generated {n:,} workflows with COPY in {time.perf_counter() - started:.1f} s")


def query_from_row(rng: random.Random) -> SimilarityQuery:
    """A draft close to a random stored workflow: its structure with a feature changed, its text
    with a word replaced (what a generator produces when it nearly repeats itself)."""
    name, _, text, features = make_row(rng)
    return SimilarityQuery(text=text, features=features, text_weight=0.5, name=name.lower())


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return (time.perf_counter() - started) * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="stored workflows (default 100,000)")
    parser.add_argument("--queries", type=int, default=40, help="timed lookups (default 40)")
    parser.add_argument("--baseline-queries", type=int, default=4, help="full-scan lookups (default 4)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    generate(args.n, args.seed)
    total = Workflow.objects.count()
    backend = TrigramStructureBackend()
    queryset = Workflow.objects.all()
    rng = random.Random(args.seed + 1)
    queries = [query_from_row(rng) for _ in range(args.queries)]
    # Some queries are near-duplicates of stored rows: take stored rows and perturb them.
    stored = list(Workflow.objects.filter(category="bench").order_by("?").values_list(
        "id", "name", "similarity_text", "structure_features")[: args.queries // 2])
    sources = {}
    for source_id, name, text, features in stored:
        sources[len(queries)] = source_id
        words_ = text.split()
        if words_:
            words_[rng.randrange(len(words_))] = rng.choice(WORDS)
        queries.append(SimilarityQuery(text=" ".join(words_), features=list(features)[:-1] or list(features),
                                       text_weight=0.5, name=name.lower()))
    text = "summarize customer support tickets and reply"
    queries.append(SimilarityQuery(text=text, features=[], text_weight=1.0, name=text))

    backend.similar(queryset=queryset, query=queries[0], limit=10)  # warm the cache
    fast_ms, fast_results = [], []
    for query in queries:
        ms, rows = timed(lambda q=query: backend.similar(queryset=queryset, query=q, limit=10))
        fast_ms.append(ms)
        fast_results.append(rows)
    hits = sum(1 for index, source_id in sources.items()
               if fast_results[index] and fast_results[index][0].workflow_id == source_id)
    base_ms, recalls = [], []
    for index in range(min(args.baseline_queries, len(queries))):
        query = queries[index * len(queries) // max(1, args.baseline_queries)]
        ms, exact = timed(lambda q=query: backend.exact(queryset=queryset, query=q, limit=10))
        base_ms.append(ms)
        fast = backend.similar(queryset=queryset, query=query, limit=10)
        exact_ids = {r.workflow_id for r in exact}
        recalls.append(len(exact_ids & {r.workflow_id for r in fast}) / max(1, len(exact_ids)))

    p95 = sorted(fast_ms)[max(0, int(len(fast_ms) * 0.95) - 1)]
    fast_median = statistics.median(fast_ms)
    base_median = statistics.median(base_ms)
    print(f"\nworkflows stored: {total:,}   queries: {len(queries)} (drafts, near-duplicates, one plain text)")
    print(f"indexed top-10 (GIN name-word + feature candidates, exact rescoring): median {fast_median:.1f} ms, "
          f"p95 {p95:.1f} ms, max {max(fast_ms):.1f} ms")
    print(f"baseline exact top-10 over every row (seq scan):                median {base_median:.1f} ms "
          f"({len(base_ms)} queries)")
    print(f"speed-up (baseline median / indexed median): {base_median / fast_median:.1f}x")
    print(f"recall@10 of the indexed lookup vs the exact ranking: mean {statistics.mean(recalls):.2f}, "
          f"min {min(recalls):.2f}")
    print(f"near-duplicate drafts whose source ranks first: {hits}/{len(sources)}")
    print(f"target p95 < 100 ms: {'met' if p95 < 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
