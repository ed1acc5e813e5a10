"""Similar workflows: given a workflow, a draft graph or plain text, the stored workflows most
like it, with a score, so a generator can reuse one instead of creating a near-duplicate.

Score (0..1) = w * text + (1 - w) * structure, where
- text: pg_trgm `similarity()` of the workflows' similarity text (name, description, node names);
- structure: Jaccard overlap of structural features (node types `t:`, components `c:`, typed
  edges `e:parent>child`, labelled by component name or node type);
- w: `WORKFLOW_SIMILARITY_TEXT_WEIGHT` (1.0 for a plain-text query, which has no structure).

Finding the top 10 among 100,000 rows without scoring them all: candidates come from two
indexes, then only the candidates are scored exactly:
1. the K nearest by trigram distance (GiST `gist_trgm_ops` KNN: `ORDER BY text <-> query`);
2. the K with most shared features among rows holding the query's *selective* features (GIN
   on the features array; a feature held by more than `SELECTIVE_CAP` rows says little and
   would make the candidate set large, so it is left to the exact scoring).

The backend is chosen by the dotted path in `WORKFLOW_SIMILARITY_BACKEND`. An embedding backend
(pgvector) implements the same `similar()` method: keep an embedding per workflow (e.g. from
`feature_embedding()` or a text model) in a `vector` column, order candidates by `<=>`, and
return `SimilarWorkflow` rows; the API and services call only `find_similar()`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.postgres.search import TrigramDistance, TrigramSimilarity
from django.db import connection
from django.db.models import F, FloatField, QuerySet, Value
from django.db.models.expressions import RawSQL
from django.utils.module_loading import import_string

from registry.models import Component, Workflow

SIMILARITY_TEXT_MAX = 600
SELECTIVE_CAP = 2000
MAX_SELECTIVE_FEATURES = 8


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

    def selective_features(self, queryset: QuerySet, features: list[str]) -> list[str]:
        if not features:
            return []
        table = Workflow._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT f, (SELECT count(*) FROM (SELECT 1 FROM {table} w WHERE w.structure_features @> ARRAY[f]"
                f" LIMIT %s) s) FROM unnest(%s::varchar[]) AS f",
                [SELECTIVE_CAP, features],
            )
            counts = cursor.fetchall()
        selective = sorted((count, feature) for feature, count in counts if 0 < count < SELECTIVE_CAP)
        return [feature for _, feature in selective[:MAX_SELECTIVE_FEATURES]]

    def candidate_ids(self, queryset: QuerySet, query: SimilarityQuery) -> set:
        if query.exclude_id is not None:
            queryset = queryset.exclude(pk=query.exclude_id)
        ids: set = set()
        if query.text and query.text_weight > 0:
            ids.update(queryset.annotate(distance=TrigramDistance("similarity_text", Value(query.text)))
                       .order_by("distance").values_list("id", flat=True)[: self.candidates])
        if query.features and query.text_weight < 1:
            selective = self.selective_features(queryset, query.features)
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
        rows = (self.score(Workflow.objects.filter(pk__in=ids), query)
                .order_by("-score", "id").values_list("id", "score", "text_score", "structure_score")[:limit])
        return [SimilarWorkflow(workflow_id=r[0], score=round(float(r[1]), 4), text_score=round(float(r[2]), 4),
                                structure_score=round(float(r[3]), 4)) for r in rows]

    def exact(self, *, queryset: QuerySet, query: SimilarityQuery, limit: int) -> list[SimilarWorkflow]:
        """Every row scored (no candidate stage): the reference the benchmark compares with."""
        if query.exclude_id is not None:
            queryset = queryset.exclude(pk=query.exclude_id)
        rows = (self.score(queryset, query).order_by("-score", "id")
                .values_list("id", "score", "text_score", "structure_score")[:limit])
        return [SimilarWorkflow(workflow_id=r[0], score=round(float(r[1]), 4), text_score=round(float(r[2]), 4),
                                structure_score=round(float(r[3]), 4)) for r in rows]


def get_backend():
    return import_string(settings.WORKFLOW_SIMILARITY_BACKEND)()


def build_query(*, document: dict[str, Any] | None = None, text: str | None = None,
                exclude_id: Any = None) -> SimilarityQuery:
    """A query from a (clean) workflow document, or from plain text (text only)."""
    if document is not None:
        features = workflow_features(document, registered_component_names(document))
        return SimilarityQuery(text=workflow_similarity_text(document), features=features,
                               text_weight=settings.WORKFLOW_SIMILARITY_TEXT_WEIGHT if features else 1.0,
                               exclude_id=exclude_id)
    return SimilarityQuery(text=" ".join((text or "").lower().split())[:SIMILARITY_TEXT_MAX], features=[],
                           text_weight=1.0, exclude_id=exclude_id)


def find_similar(*, queryset: QuerySet, query: SimilarityQuery, limit: int = 10) -> list[SimilarWorkflow]:
    return get_backend().similar(queryset=queryset, query=query, limit=limit)
