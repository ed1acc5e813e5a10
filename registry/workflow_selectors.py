"""Reads of the workflow registry: who sees which workflows, the nested document, search,
versions, usage."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.postgres.search import SearchQuery, SearchRank
from django.core.exceptions import ValidationError
from django.db.models import Count, F, QuerySet
from django.http import Http404

from registry.models import Workflow, WorkflowAccess, WorkflowVersion
from registry.workflow_document import canonical


def visible_to(queryset: QuerySet, *, user) -> QuerySet:
    """Staff see all; others see rows they created and rows of their organizations."""
    from imageflow.api.ownership import scope_to_user

    return scope_to_user(queryset, user=user)


def workflow_document(workflow: Workflow) -> dict[str, Any]:
    """The workflow as a document (see registry/workflow_document.py), read from its rows."""
    nodes = list(workflow.nodes.order_by("order_index", "key").values("id", "key", "node_type", "name", "parameters",
                                                                      "order_index"))
    keys = {n["id"]: n["key"] for n in nodes}
    edges = [{"parent": keys[e["parent_node_id"]], "child": keys[e["child_node_id"]], "handoff_data": e["handoff_data"]}
             for e in workflow.edges.values("parent_node_id", "child_node_id", "handoff_data")
             if e["parent_node_id"] in keys and e["child_node_id"] in keys]
    params = list(workflow.params.values("key", "value_type", "required", "default_value", "metadata"))
    for node in nodes:
        node.pop("id")
    return canonical({
        "name": workflow.name, "description": workflow.description, "category": workflow.category,
        "tags": list(workflow.tags.values_list("name", flat=True)), "metadata": workflow.metadata,
        "nodes": nodes, "edges": edges, "params": params,
    })


def workflow_list(*, user, search: str | None = None, tags: list[str] | None = None, category: str | None = None,
                  organization: str | None = None, node_type: str | None = None) -> QuerySet:
    queryset = visible_to(Workflow.objects.select_related("created_by", "organization"), user=user)
    if tags:
        for tag in tags:
            queryset = queryset.filter(tags__name=tag.strip().lower())
    if category:
        queryset = queryset.filter(category=category)
    if organization:
        queryset = queryset.filter(organization_id=organization)
    if node_type:
        queryset = queryset.filter(structure_features__contains=[f"t:{node_type.lower()}"])
    if search and search.strip():
        query = SearchQuery(search.strip(), search_type="websearch", config=settings.WORKFLOW_SEARCH_CONFIG)
        queryset = (queryset.filter(search_vector=query)
                    .annotate(rank=SearchRank(F("search_vector"), query))
                    .order_by("-rank", "-updated_at", "id"))
    return queryset.prefetch_related("tags")


def workflow_get(*, user, pk) -> Workflow:
    try:
        return visible_to(Workflow.objects.select_related("created_by", "organization"), user=user).get(pk=pk)
    except (Workflow.DoesNotExist, ValueError, ValidationError):
        # A malformed id names no workflow: 404 like a well-formed one that is not there (and
        # like every other kind's detail URL), not a 400.
        raise Http404("No such workflow.") from None


def workflow_version_get(*, workflow: Workflow, version: int) -> WorkflowVersion:
    try:
        return workflow.versions.get(version=version)
    except WorkflowVersion.DoesNotExist:
        raise Http404(f"The workflow has no version {version}.") from None


def workflow_usage(*, workflow: Workflow) -> dict[str, Any]:
    counts = dict(WorkflowAccess.objects.filter(workflow=workflow).values("kind").annotate(n=Count("id"))
                  .values_list("kind", "n"))
    readers = (WorkflowAccess.objects.filter(workflow=workflow, user__isnull=False)
               .values("user").distinct().count())
    return {
        "reads": counts.get(WorkflowAccess.Kind.READ, 0),
        "exports": counts.get(WorkflowAccess.Kind.EXPORT, 0),
        "applies": counts.get(WorkflowAccess.Kind.APPLY, 0),
        "reuses": counts.get(WorkflowAccess.Kind.REUSE, 0),
        "distinct_users": readers,
        "last_access": (WorkflowAccess.objects.filter(workflow=workflow).order_by("-created_at")
                        .values_list("created_at", flat=True).first()),
    }

