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
