"""Reads of components and pipelines; ownership scoping comes from imageflow.api.ownership."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from imageflow.api.ownership import scope_to_user

from .models import CARRIER_PIPELINE_CATEGORY, Component, Pipeline, PipelineVersion


def component_list(*, search: str | None = None) -> QuerySet[Component]:
    queryset = Component.objects.all().order_by("name", "version")
    if search:
        queryset = queryset.filter(Q(name__icontains=search) | Q(description__icontains=search))
    return queryset


def pipeline_list(*, user, search: str | None = None, tags: list[str] | None = None,
                  category: str | None = None, carriers: bool = False) -> QuerySet[Pipeline]:
    """Pipelines the user may see, most recently updated first. Carrier pipelines (a workflow
    version materialized to run it) belong to their workflow's runs: a list leaves them out unless
    `carriers` or their category is asked for (a run's pipeline link still opens them)."""
    queryset = scope_to_user(Pipeline.objects.all(), user=user).order_by("-updated_at", "id")
    if search:
        queryset = queryset.filter(Q(name__icontains=search) | Q(description__icontains=search))
    for tag in tags or []:  # workflow registry: tags and category
        queryset = queryset.filter(tags__name=tag.strip().lower())
    if category:
        queryset = queryset.filter(category=category)
    elif not carriers:
        queryset = queryset.exclude(category=CARRIER_PIPELINE_CATEGORY)
    return queryset.prefetch_related("tags")


def pipeline_version_list(*, pipeline: Pipeline) -> QuerySet[PipelineVersion]:
    return PipelineVersion.objects.filter(pipeline=pipeline).order_by("-version")


# --- outdated component versions -------------------------------------------------------------------

def version_key(version: str) -> tuple:
    """An order of version strings: numbers as numbers (1.10.0 after 1.9.0), and a pre-release
    (`2.0.0-rc1`) before its release."""
    import re

    release, _, pre = version.partition("-")
    parts = tuple((1, int(p)) if p.isdigit() else (0, p) for p in re.findall(r"\d+|[^\W\d_]+", release))
    return parts, (0, pre) if pre else (1, "")


def component_latest_versions(names: set[str] | None = None) -> dict[str, str]:
    """{component name: its newest version} (one query of names and versions)."""
    queryset = Component.objects.all()
    if names is not None:
        queryset = queryset.filter(name__in=sorted(names))
    latest: dict[str, str] = {}
    for name, version in queryset.values_list("name", "version"):
        if name not in latest or version_key(version) > version_key(latest[name]):
            latest[name] = version
    return latest


def pipeline_outdated_components(pipeline: Pipeline, *, latest: dict[str, str] | None = None) -> list[dict]:
    """The nodes of the pipeline's definition that name a component version of which a newer one
    exists: [{"node", "name", "version", "latest"}], in node order. Pipelines keep naming the
    version they were built with; this says which could move on. `latest`: from
    component_latest_versions(), when a list of pipelines shares it."""
    nodes = [n for n in ((pipeline.definition or {}).get("nodes") or []) if isinstance(n, dict)]
    refs = [(n.get("id"), n.get("component")) for n in nodes]
    refs = [(node_id, ref["name"], ref["version"]) for node_id, ref in refs if isinstance(ref, dict)
            and isinstance(ref.get("name"), str) and isinstance(ref.get("version"), str)]
    if latest is None:
        latest = component_latest_versions({name for _, name, _ in refs})
    return [{"node": node_id, "name": name, "version": version, "latest": latest[name]}
            for node_id, name, version in refs
            if name in latest and version_key(latest[name]) > version_key(version)]


def pipelines_outdated(queryset: QuerySet[Pipeline]) -> QuerySet[Pipeline]:
    """Those of the pipelines with at least one node naming an outdated component version (their
    definitions are read once: a registry holds thousands of pipelines, not millions)."""
    latest = component_latest_versions()
    ids = [pipeline.pk for pipeline in queryset.only("id", "definition")
           if pipeline_outdated_components(pipeline, latest=latest)]
    return queryset.filter(pk__in=ids)
