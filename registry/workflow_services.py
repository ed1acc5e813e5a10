"""Writes of the workflow registry. Every change of a workflow (metadata, nodes, edges, params)
goes through `_commit_change`, which in the same transaction writes the graph, refreshes the
search and similarity columns, stores an immutable version snapshot, bumps `version` and writes
the audit entry. An update names the version it was based on; a stale one is refused
(`WorkflowVersionConflict`, HTTP 409) under a row lock, so two concurrent updates never
silently overwrite each other."""

from __future__ import annotations

import copy
from typing import Any

from django.conf import settings
from django.contrib.postgres.search import SearchVector
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Value

from imageflow.audit.services import audit_record
from imageflow.orgs.models import Organization
from registry.models import (
    CARRIER_PIPELINE_CATEGORY,
    Tag,
    Workflow,
    WorkflowAccess,
    WorkflowEdge,
    WorkflowNode,
    WorkflowParam,
    WorkflowVersion,
)
from registry.similarity import (
    name_tokens,
    registered_component_names,
    workflow_features,
    workflow_similarity_text,
)
from registry.workflow_document import clean_document
from registry.workflow_selectors import workflow_document


class WorkflowVersionConflict(Exception):
    def __init__(self, *, current: int, based_on: int | None) -> None:
        self.current = current
        self.based_on = based_on
        super().__init__(
            f"The workflow is at version {current}; this change was based on version {based_on}. "
            "Fetch the current version, re-apply the change and send it again."
        )


# --- the graph ---------------------------------------------------------------------------------

def _write_graph(workflow: Workflow, document: dict[str, Any]) -> None:
    """Make the rows equal to the document; nodes and params keep their ids by key."""
    existing_nodes = {n.key: n for n in WorkflowNode.objects.filter(workflow=workflow)}
    wanted = {n["key"]: n for n in document["nodes"]}
    WorkflowNode.objects.filter(workflow=workflow).exclude(key__in=list(wanted)).delete()
    to_create, to_update = [], []
    for key, data in wanted.items():
        node = existing_nodes.get(key)
        if node is None:
            to_create.append(WorkflowNode(workflow=workflow, key=key, node_type=data["node_type"], name=data["name"],
                                          parameters=data["parameters"], order_index=data["order_index"]))
        elif (node.node_type, node.name, node.parameters, node.order_index) != (
                data["node_type"], data["name"], data["parameters"], data["order_index"]):
            node.node_type, node.name = data["node_type"], data["name"]
            node.parameters, node.order_index = data["parameters"], data["order_index"]
            to_update.append(node)
    WorkflowNode.objects.bulk_create(to_create)
    WorkflowNode.objects.bulk_update(to_update, ["node_type", "name", "parameters", "order_index"])
    node_ids = dict(WorkflowNode.objects.filter(workflow=workflow).values_list("key", "id"))

    existing_edges = {(e.parent_node_id, e.child_node_id): e for e in WorkflowEdge.objects.filter(workflow=workflow)}
    wanted_edges = {(node_ids[e["parent"]], node_ids[e["child"]]): e for e in document["edges"]}
    stale = [e.pk for pair, e in existing_edges.items() if pair not in wanted_edges]
    WorkflowEdge.objects.filter(pk__in=stale).delete()
    new_edges, changed_edges = [], []
    for pair, data in wanted_edges.items():
        edge = existing_edges.get(pair)
        if edge is None:
            new_edges.append(WorkflowEdge(workflow=workflow, parent_node_id=pair[0], child_node_id=pair[1],
                                          handoff_data=data["handoff_data"]))
        elif edge.handoff_data != data["handoff_data"]:
            edge.handoff_data = data["handoff_data"]
            changed_edges.append(edge)
    WorkflowEdge.objects.bulk_create(new_edges)
    WorkflowEdge.objects.bulk_update(changed_edges, ["handoff_data"])

    existing_params = {p.key: p for p in WorkflowParam.objects.filter(workflow=workflow)}
    wanted_params = {p["key"]: p for p in document["params"]}
    WorkflowParam.objects.filter(workflow=workflow).exclude(key__in=list(wanted_params)).delete()
    new_params, changed_params = [], []
    fields = ("value_type", "required", "default_value", "metadata")
    for key, data in wanted_params.items():
        param = existing_params.get(key)
        if param is None:
            new_params.append(WorkflowParam(workflow=workflow, key=key, **{f: data[f] for f in fields}))
        elif any(getattr(param, f) != data[f] for f in fields):
            for f in fields:
                setattr(param, f, data[f])
            changed_params.append(param)
    WorkflowParam.objects.bulk_create(new_params)
    WorkflowParam.objects.bulk_update(changed_params, list(fields))

    workflow.tags.set([Tag.objects.get_or_create(name=name)[0] for name in document["tags"]])


def _search_texts(document: dict[str, Any]) -> tuple[str, str, str]:
    """Weight A: name; B: description, node names, category, tags; C: parameters and params."""
    b = [document.get("description") or "", document.get("category") or "", " ".join(document["tags"])]
    b += [n["name"] for n in document["nodes"]]
    c: list[str] = []

    def flatten(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                c.append(str(k))
                flatten(v)
        elif isinstance(value, list):
            for v in value:
                flatten(v)
        elif value is not None:
            c.append(str(value))

    for node in document["nodes"]:
        c.append(node["node_type"])
        flatten(node.get("parameters"))
    for param in document["params"]:
        c.append(param["key"])
        if param["default_value"]:
            c.append(param["default_value"])
    return document["name"], " ".join(b), " ".join(c)[:100_000]


def _refresh_derived(workflow: Workflow, document: dict[str, Any]) -> None:
    config = settings.WORKFLOW_SEARCH_CONFIG
    a, b, c = _search_texts(document)
    Workflow.objects.filter(pk=workflow.pk).update(
        search_vector=(SearchVector(Value(a), weight="A", config=config)
                       + SearchVector(Value(b), weight="B", config=config)
                       + SearchVector(Value(c), weight="C", config=config)),
        similarity_text=workflow_similarity_text(document),
        name_tokens=name_tokens(document["name"]),
        structure_features=workflow_features(document, registered_component_names(document)),
    )


def _apply_fields(workflow: Workflow, document: dict[str, Any]) -> None:
    workflow.name = document["name"]
    workflow.description = document["description"]
    workflow.category = document["category"]
    workflow.metadata = document["metadata"]


def _commit_change(*, workflow: Workflow, document: dict[str, Any], user, change: str,
                   before: dict[str, Any] | None, restored_from: int | None = None,
                   audit_action: str | None = None, extra: dict | None = None) -> Workflow:
    """Inside a transaction holding the workflow's row lock: store the graph, snapshot it as the
    next version, and audit. Returns the workflow at its new version."""
    _write_graph(workflow, document)
    _refresh_derived(workflow, document)
    snapshot = workflow_document(workflow)
    WorkflowVersion.objects.create(workflow=workflow, version=workflow.version, snapshot=snapshot, change=change,
                                   restored_from=restored_from, created_by=user if _is_user(user) else None)
    audit_record(action=audit_action or ("create" if before is None else "update"), object_type="workflow",
                 object_id=workflow.pk, object_repr=f"{workflow.name} (v{workflow.version})",
                 before=before, after=snapshot, user=user,
                 extra={"version": workflow.version, **({"restored_from": restored_from} if restored_from else {}),
                        **(extra or {})})
    return workflow


def _is_user(user) -> bool:
    return user is not None and getattr(user, "is_authenticated", False)


def _check_organization(organization: Organization | None, user) -> None:
    if organization is None or user is None or getattr(user, "is_staff", False):
        return
    if not organization.memberships.filter(user=user).exists():
        # Worded as the serializer's answer for an id that does not exist (ORGANIZATION_ERRORS in
        # registry/api/workflow_serializers.py): whether an organization exists is not revealed.
        raise ValidationError({"organization": [f"No such organization: {organization.pk}."]})


# --- create / replace / delete / restore -------------------------------------------------------

def workflow_create(*, user, data: dict[str, Any], organization: Organization | None = None,
                    request_id: str | None = None, change: str = "create") -> tuple[Workflow, bool]:
    """Create a workflow with its nodes, edges and params in one transaction. With a
    `request_id`, a repeat of the same user's request returns the existing workflow
    (`created` False) instead of a second one."""
    document = clean_document(data)
    if request_id is not None and (not isinstance(request_id, str) or not request_id.strip() or len(request_id) > 255):
        raise ValidationError({"request_id": ["must be a non-empty string of at most 255 characters."]})
    _check_organization(organization, user)
    creator = user if _is_user(user) else None
    if request_id and creator is not None:
        existing = Workflow.objects.filter(created_by=creator, request_id=request_id).first()
        if existing is not None:
            return existing, False
    try:
        with transaction.atomic():
            workflow = Workflow(version=1, created_by=creator, organization=organization,
                                request_id=request_id if creator is not None else None)
            _apply_fields(workflow, document)
            workflow.save()
            _commit_change(workflow=workflow, document=document, user=user, change=change, before=None,
                           audit_action="import" if change == "import" else "create")
    except IntegrityError:
        # A concurrent request with the same request_id won the unique constraint.
        if request_id and creator is not None:
            existing = Workflow.objects.filter(created_by=creator, request_id=request_id).first()
            if existing is not None:
                return existing, False
        raise
    workflow.refresh_from_db()
    return workflow, True


def _lock(workflow: Workflow) -> Workflow:
    return Workflow.objects.select_for_update().get(pk=workflow.pk)


def _check_version(locked: Workflow, based_on: int | None) -> None:
    if based_on is None or int(based_on) != locked.version:
        raise WorkflowVersionConflict(current=locked.version, based_on=based_on)


def workflow_replace(*, workflow: Workflow, user, data: dict[str, Any], based_on_version: int | None,
                     organization: Organization | None = None) -> Workflow:
    """Replace the whole workflow (metadata and graph). `based_on_version` is the version the
    client edited; if the workflow moved on meanwhile the change is refused."""
    document = clean_document(data)
    _check_organization(organization, user)
    with transaction.atomic():
        locked = _lock(workflow)
        _check_version(locked, based_on_version)
        before = workflow_document(locked)
        if before == document:
            if organization is not None and organization.pk != locked.organization_id:
                # A move to another organization changes scope, not content: audited, no version.
                previous = locked.organization_id
                Workflow.objects.filter(pk=locked.pk).update(organization=organization)
                audit_record(action="update", object_type="workflow", object_id=locked.pk,
                             object_repr=f"{locked.name} (v{locked.version})", user=user,
                             before={"organization": previous}, after={"organization": organization.pk},
                             extra={"version": locked.version})
                locked.refresh_from_db()
            return locked
        locked.version += 1
        _apply_fields(locked, document)
        if organization is not None:
            locked.organization = organization
        locked.save()
        _commit_change(workflow=locked, document=document, user=user, change="update", before=before)
    locked.refresh_from_db()
    return locked


def workflow_update(*, workflow: Workflow, user, changes: dict[str, Any], based_on_version: int | None) -> Workflow:
    """A partial update: the given top-level keys replace those of the current document."""
    current = workflow_document(workflow)
    merged = {**current, **{k: v for k, v in changes.items() if k in current}}
    return workflow_replace(workflow=workflow, user=user, data=merged, based_on_version=based_on_version)


def workflow_restore(*, workflow: Workflow, version: int, user, based_on_version: int | None = None) -> Workflow:
    """Make an old version current again, as a new version (history is never rewritten)."""
    with transaction.atomic():
        locked = _lock(workflow)
        if based_on_version is not None:
            _check_version(locked, based_on_version)
        try:
            old = WorkflowVersion.objects.get(workflow=locked, version=version)
        except WorkflowVersion.DoesNotExist:
            raise ValidationError({"version": [f"workflow has no version {version}."]}) from None
        document = clean_document(copy.deepcopy(old.snapshot))
        before = workflow_document(locked)
        locked.version += 1
        _apply_fields(locked, document)
        locked.save()
        _commit_change(workflow=locked, document=document, user=user, change="restore", before=before,
                       restored_from=version, audit_action="restore")
    locked.refresh_from_db()
    return locked


def workflow_delete(*, workflow: Workflow, user, based_on_version: int | None = None) -> None:
    with transaction.atomic():
        locked = _lock(workflow)
        if based_on_version is not None:
            _check_version(locked, based_on_version)
        before = workflow_document(locked)
        audit_record(action="delete", object_type="workflow", object_id=locked.pk,
                     object_repr=f"{locked.name} (v{locked.version})", before=before, user=user,
                     extra={"version": locked.version})
        locked.delete()


def workflow_record_external_change(*, workflow: Workflow, user, before: dict[str, Any] | None,
                                    organization_before: Any = None) -> Workflow:
    """After rows were edited outside the services (the admin's form and inlines): snapshot the
    result as a new version and audit it, unless nothing changed. A change of organization
    alone (scope, not content) is audited without a new version."""
    with transaction.atomic():
        locked = _lock(workflow)
        rows_document = workflow_document(locked)
        try:
            document = clean_document(rows_document)
        except ValidationError:
            document = rows_document
        if before is not None and document == before:
            if organization_before != locked.organization_id:
                audit_record(action="update", object_type="workflow", object_id=locked.pk,
                             object_repr=f"{locked.name} (v{locked.version})", user=user,
                             before={"organization": organization_before},
                             after={"organization": locked.organization_id}, extra={"version": locked.version})
            return locked
        if before is not None:
            locked.version = (WorkflowVersion.objects.filter(workflow=locked).order_by("-version")
                              .values_list("version", flat=True).first() or 0) + 1
            Workflow.objects.filter(pk=locked.pk).update(version=locked.version)
        _refresh_derived(locked, document)
        snapshot = workflow_document(locked)
        WorkflowVersion.objects.create(workflow=locked, version=locked.version, snapshot=snapshot,
                                       change="create" if before is None else "update",
                                       created_by=user if _is_user(user) else None)
        audit_record(action="create" if before is None else "update", object_type="workflow", object_id=locked.pk,
                     object_repr=f"{locked.name} (v{locked.version})", before=before, after=snapshot, user=user,
                     extra={"version": locked.version})
    return locked


# --- usage -------------------------------------------------------------------------------------

COUNTER_BY_KIND = {
    WorkflowAccess.Kind.READ: "read_count",
    WorkflowAccess.Kind.APPLY: "apply_count",
    WorkflowAccess.Kind.REUSE: "reuse_count",
}


def workflow_access_record(*, workflow: Workflow, user, kind: str) -> None:
    """Access log row plus the aggregated counter on the workflow, in one transaction."""
    with transaction.atomic():
        WorkflowAccess.objects.create(workflow=workflow, user=user if _is_user(user) else None, kind=kind,
                                      version=workflow.version)
        counter = COUNTER_BY_KIND.get(kind)
        if counter:
            Workflow.objects.filter(pk=workflow.pk).update(**{counter: F(counter) + 1})


def workflow_clone(*, workflow: Workflow, user, name: str | None = None,
                   organization: Organization | None = None) -> Workflow:
    """A new workflow from an existing one (a generator reusing it); counted as a reuse."""
    document = workflow_document(workflow)
    if name:
        document["name"] = name
    document["metadata"] = {**(document.get("metadata") or {}), "cloned_from": {"id": str(workflow.pk),
                                                                                "version": workflow.version}}
    with transaction.atomic():
        clone, _ = workflow_create(user=user, data=document, organization=organization or workflow.organization)
        workflow_access_record(workflow=workflow, user=user, kind=WorkflowAccess.Kind.REUSE)
    return clone


# --- pipelines: registry labels --------------------------------------------------------------------

def pipeline_labels_check(*, category: str | None = None, tags: list[str] | None = None) -> None:
    """Raise ValidationError naming `category` or `tags` unless they can label a pipeline (the
    admin's form runs this before it saves, so its errors show on the fields)."""
    if category is not None and (not isinstance(category, str) or len(category) > 100):
        raise ValidationError({"category": ["must be a string of at most 100 characters."]})
    if category is not None and category.strip() == CARRIER_PIPELINE_CATEGORY:
        raise ValidationError({"category": [f"{CARRIER_PIPELINE_CATEGORY!r} is reserved for pipelines that carry an "
                                            f"applied workflow."]})
    if tags is not None and not all(isinstance(t, str) and t.strip() and len(t.strip()) <= 100 for t in tags):
        raise ValidationError({"tags": ["must be a list of non-empty strings of at most 100 characters."]})


def pipeline_set_labels(*, pipeline, user, category: str | None = None, tags: list[str] | None = None,
                        organization: Organization | None = None, set_organization: bool = False):
    """Category, tags and organization of a pipeline (its definition and versions are untouched)."""
    from registry.models import Pipeline

    pipeline_labels_check(category=category, tags=tags)
    if set_organization:
        _check_organization(organization, user)
    with transaction.atomic():
        locked = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
        before = {"category": locked.category, "tags": sorted(locked.tags.values_list("name", flat=True)),
                  "organization": str(locked.organization_id) if locked.organization_id else None}
        if category is not None:
            locked.category = category.strip()
        if set_organization:
            locked.organization = organization
        Pipeline.objects.filter(pk=locked.pk).update(category=locked.category, organization=locked.organization)
        if tags is not None:
            locked.tags.set([Tag.objects.get_or_create(name=t.strip().lower())[0] for t in tags])
        after = {"category": locked.category, "tags": sorted(locked.tags.values_list("name", flat=True)),
                 "organization": str(locked.organization_id) if locked.organization_id else None}
        if after != before:
            audit_record(action="update", object_type="pipeline", object_id=locked.pk, object_repr=str(locked),
                         before=before, after=after, user=user)
    return locked


def workflow_reindex(*, workflow: Workflow) -> None:
    """Recompute the search vector and the similarity columns from the stored rows (after a
    change of WORKFLOW_SEARCH_CONFIG, or for rows written before the registry columns existed)."""
    with transaction.atomic():
        locked = _lock(workflow)
        _refresh_derived(locked, workflow_document(locked))
