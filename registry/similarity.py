"""Similar workflows: given a workflow, a draft graph or plain text, the stored workflows most
like it, with a score, so a generator can reuse one instead of creating a near-duplicate.

Score (0..1) = w * text + (1 - w) * structure, where
- text: pg_trgm `similarity()` of the workflows' similarity text (name, description, node names);
- structure: Jaccard overlap of structural features (node types `t:`, components `c:`, typed
  edges `e:parent>child`, labelled by component name or node type);
- w: `WORKFLOW_SIMILARITY_TEXT_WEIGHT` (1.0 for a plain-text query, which has no structure).

Finding the top 10 among 100,000 rows without scoring them all: candidates come from two
indexes, then only the candidates are scored exactly:
1. text: rows whose name shares two of the query's rarest name words (GIN on `name_tokens`;
   one index intersection per pair, so the set stays small however common single words are),
   topped up with rows sharing its rarest word when that finds few;
2. structure: the K with most shared features among rows holding the query's *selective*
   features (GIN on `structure_features`; a feature held by more than `SELECTIVE_CAP` rows
   says little and would make the candidate set large, so it is left to the exact scoring).
Word and feature rarity come from PostgreSQL's statistics of the array columns. (A trigram
KNN scan over names was measured first: 50-90 ms alone at 100,000 rows, too slow.)

The backend is chosen by the dotted path in `WORKFLOW_SIMILARITY_BACKEND`. An embedding backend
(pgvector) implements the same `similar()` method: keep an embedding per workflow (e.g. from
`feature_embedding()` or a text model) in a `vector` column, order candidates by `<=>`, and
return `SimilarWorkflow` rows; the API and services call only `find_similar()`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.postgres.search import TrigramSimilarity
from django.db import connection
from django.db.models import F, FloatField, Q, QuerySet, Value
from django.db.models.expressions import RawSQL
from django.utils.module_loading import import_string

from registry.models import Component, Workflow

SIMILARITY_TEXT_MAX = 600
SELECTIVE_CAP = 2000
MAX_SELECTIVE_FEATURES = 8
MAX_NAME_TOKENS = 5
MAX_NAME_TOKENS_STORED = 30


# --- what is compared --------------------------------------------------------------------------

def node_component_name(node: dict[str, Any], component_names: set[str]) -> str | None:
    """The registered component a node names: its node_type, or `parameters.component` of a
    `component` node (a name, or {"name", "version"})."""
    if node["node_type"] in component_names:
        return node["node_type"]
    if node["node_type"] == "component":
        ref = (node.get("parameters") or {}).get("component")
        name = ref.get("name") if isinstance(ref, dict) else ref
        if isinstance(name, str) and name:
            return name
    return None


def registered_component_names(document: dict[str, Any]) -> set[str]:
    types = {n["node_type"] for n in document.get("nodes", [])}
    return set(Component.objects.filter(name__in=types).values_list("name", flat=True).distinct())


def workflow_features(document: dict[str, Any], component_names: set[str]) -> list[str]:
    labels: dict[str, str] = {}
    features: set[str] = set()
    for node in document.get("nodes", []):
        component = node_component_name(node, component_names)
        features.add(f"t:{node['node_type'].lower()}"[:300])
        if component:
            features.add(f"c:{component.lower()}"[:300])
        labels[node["key"]] = (component or node["node_type"]).lower()
    for edge in document.get("edges", []):
        if edge["parent"] in labels and edge["child"] in labels:
            features.add(f"e:{labels[edge['parent']]}>{labels[edge['child']]}"[:300])
    return sorted(features)


STOP_WORDS = frozenset("a an and the of to in on for from by with at as or is it this that into via".split())


def name_tokens(text: str) -> list[str]:
    """Distinct lower-case words of a name (what the candidate stage matches on)."""
    words = {w for w in re.findall(r"\w+", (text or "").lower()) if len(w) > 1 and w not in STOP_WORDS}
    return sorted(w[:100] for w in words)[:MAX_NAME_TOKENS_STORED]


def workflow_similarity_text(document: dict[str, Any]) -> str:
    parts = [document.get("name") or "", document.get("description") or ""]
    parts += [n["name"] for n in document.get("nodes", [])]
    return " ".join(" ".join(parts).lower().split())[:SIMILARITY_TEXT_MAX]


def feature_embedding(features: list[str], *, dimensions: int = 256) -> list[float]:
    """A unit vector of hashed features: what an embedding backend without a text model can
    store in a pgvector column (cosine distance then approximates feature overlap)."""
    vector = [0.0] * dimensions
    for feature in features:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "big") % dimensions
        vector[slot] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


# --- the query -----------------------------------------------------------------------------------

@dataclass
class SimilarityQuery:
    text: str
    features: list[str] = field(default_factory=list)
    text_weight: float = 0.5
    exclude_id: Any = None
    name: str = ""  # matched against stored names in the candidate stage (default: the text)


@dataclass
class SimilarWorkflow:
    workflow_id: Any
    score: float
    text_score: float
    structure_score: float


def _overlap_sql(features: list[str]) -> tuple[str, list]:
    # Shared features, counted with the array intersection of two sorted distinct sets.
    return ("(SELECT count(*) FROM unnest(workflow.structure_features) AS f WHERE f = ANY(%s::varchar[]))",
            [features])


class TrigramStructureBackend:
    """pg_trgm text similarity + Jaccard overlap of structural features (see module docstring)."""

    def __init__(self, *, candidates: int | None = None) -> None:
        self.candidates = candidates or settings.WORKFLOW_SIMILARITY_CANDIDATES

    def selective_features(self, features: list[str]) -> list[str]:
        """The query's features that few rows hold, rarest first (see `_element_statistics`)."""
        frequencies, rows = _element_statistics("structure_features")
        cap = SELECTIVE_CAP / max(rows, 1.0)
        rated = sorted((frequencies.get(f, 0.0), f) for f in features)
        return [f for freq, f in rated if freq < cap][:MAX_SELECTIVE_FEATURES]

    def rare_name_tokens(self, tokens: list[str]) -> list[str]:
        frequencies, _ = _element_statistics("name_tokens")
        return [t for _, t in sorted((frequencies.get(t, 0.0), t) for t in tokens)][:MAX_NAME_TOKENS]

    def candidate_ids(self, queryset: QuerySet, query: SimilarityQuery) -> set:
        if query.exclude_id is not None:
            queryset = queryset.exclude(pk=query.exclude_id)
        ids: set = set()
        tokens = self.rare_name_tokens(name_tokens(query.name or query.text))
        if tokens and query.text_weight > 0:
            # Rows whose name shares two of the query's rarest words: each pair is one GIN
            # intersection, so the candidates stay few however common single words are.
            pairs = list(itertools.combinations(tokens, 2))
            if pairs:
                condition = Q()
                for pair in pairs:
                    condition |= Q(name_tokens__contains=list(pair))
                ids.update(queryset.filter(condition).values_list("id", flat=True)[: self.candidates])
            if len(ids) < self.candidates // 4:
                ids.update(queryset.filter(name_tokens__overlap=tokens[:2])
                           .values_list("id", flat=True)[: self.candidates])
        if query.features and query.text_weight < 1:
            selective = self.selective_features(query.features)
            if selective:
                overlap_sql, params = _overlap_sql(query.features)
                ids.update(queryset.filter(structure_features__overlap=selective)
                           .annotate(shared=RawSQL(overlap_sql, params))
                           .order_by("-shared").values_list("id", flat=True)[: self.candidates])
        return ids

    def score(self, queryset: QuerySet, query: SimilarityQuery) -> QuerySet:
        """`queryset` annotated with text_score, structure_score and score (exact)."""
        weight = query.text_weight
        overlap_sql, params = _overlap_sql(query.features)
        n = len(query.features)
        jaccard_sql = (f"CASE WHEN cardinality(workflow.structure_features) + %s = 0 THEN 0.0 ELSE "
                       f"{overlap_sql}::float / (cardinality(workflow.structure_features) + %s - {overlap_sql}) END")
        return queryset.annotate(
            text_score=TrigramSimilarity("similarity_text", Value(query.text or "")),
            structure_score=RawSQL(jaccard_sql, [n, *params, n, *params], output_field=FloatField()),
        ).annotate(score=Value(weight) * F("text_score") + Value(1 - weight) * F("structure_score"))

    def similar(self, *, queryset: QuerySet, query: SimilarityQuery, limit: int) -> list[SimilarWorkflow]:
        ids = self.candidate_ids(queryset, query)
        if not ids:
            return []
        # Exact scores of the candidates: trigram similarity in PostgreSQL, Jaccard in Python.
        rows = (Workflow.objects.filter(pk__in=ids)
                .annotate(text_score=TrigramSimilarity("similarity_text", Value(query.text or "")))
                .values_list("id", "text_score", "structure_features"))
        wanted = set(query.features)
        scored = []
        for workflow_id, text_score, features in rows:
            have = set(features)
            union = len(have | wanted)
            structure = len(have & wanted) / union if union else 0.0
            score = query.text_weight * float(text_score) + (1 - query.text_weight) * structure
            scored.append(SimilarWorkflow(workflow_id=workflow_id, score=round(score, 4),
                                          text_score=round(float(text_score), 4), structure_score=round(structure, 4)))
        scored.sort(key=lambda r: (-r.score, str(r.workflow_id)))
        return scored[:limit]

    def exact(self, *, queryset: QuerySet, query: SimilarityQuery, limit: int) -> list[SimilarWorkflow]:
        """Every row scored (no candidate stage): the reference the benchmark compares with."""
        if query.exclude_id is not None:
            queryset = queryset.exclude(pk=query.exclude_id)
        rows = (self.score(queryset, query).order_by("-score", "id")
                .values_list("id", "score", "text_score", "structure_score")[:limit])
        return [SimilarWorkflow(workflow_id=r[0], score=round(float(r[1]), 4), text_score=round(float(r[2]), 4),
                                structure_score=round(float(r[3]), 4)) for r in rows]


_STATS_CACHE: dict[str, tuple[float, tuple[dict[str, float], float]]] = {}
STATS_TTL_SECONDS = 60.0


def _element_statistics(column: str) -> tuple[dict[str, float], float]:
    """({element: fraction of rows holding it} for the most common elements of an array column,
    row estimate), from PostgreSQL's own statistics (pg_stats.most_common_elems, kept by
    ANALYZE/autovacuum): an element not listed is rare. Cached per process for a minute."""
    now = time.monotonic()
    cached = _STATS_CACHE.get(column)
    if cached is not None and now - cached[0] < STATS_TTL_SECONDS:
        return cached[1]
    table = Workflow._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.most_common_elems::text::varchar[], s.most_common_elem_freqs, c.reltuples "
            "FROM pg_class c LEFT JOIN pg_stats s ON s.tablename = c.relname AND s.attname = %s "
            "AND s.schemaname = current_schema() WHERE c.relname = %s AND c.relkind = 'r'",
            [column, table],
        )
        row = cursor.fetchone()
    frequencies: dict[str, float] = {}
    rows = 0.0
    if row is not None:
        elems, freqs, rows = row[0] or [], row[1] or [], float(row[2] or 0)
        frequencies = dict(zip(elems, freqs))
    _STATS_CACHE[column] = (now, (frequencies, rows))
    return frequencies, rows


def get_backend():
    return import_string(settings.WORKFLOW_SIMILARITY_BACKEND)()


def build_query(*, document: dict[str, Any] | None = None, text: str | None = None,
                exclude_id: Any = None) -> SimilarityQuery:
    """A query from a (clean) workflow document, or from plain text (text only)."""
    if document is not None:
        features = workflow_features(document, registered_component_names(document))
        return SimilarityQuery(text=workflow_similarity_text(document), features=features,
                               text_weight=settings.WORKFLOW_SIMILARITY_TEXT_WEIGHT if features else 1.0,
                               exclude_id=exclude_id, name=(document.get("name") or "").lower())
    return SimilarityQuery(text=" ".join((text or "").lower().split())[:SIMILARITY_TEXT_MAX], features=[],
                           text_weight=1.0, exclude_id=exclude_id)


def find_similar(*, queryset: QuerySet, query: SimilarityQuery, limit: int = 10) -> list[SimilarWorkflow]:
    return get_backend().similar(queryset=queryset, query=query, limit=limit)
