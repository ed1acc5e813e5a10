"""Workflow registry API: nested workflows, versions and diffs, search, similar workflows,
import/export, apply, usage; the pipeline version diff; the staff audit log; organizations.
Views are thin: they check the body's shape and call one service or selector."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.exceptions import ValidationError as DrfValidationError
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from imageflow.api.errors import Conflict
from imageflow.api.params import text_param
from imageflow.api.ownership import scope_to_user
from imageflow.api.schema import ERROR_RESPONSES
from imageflow.audit.models import AuditEntry
from imageflow.orgs.models import Organization
from registry import interchange, similarity
from registry.engine_hooks import workflow_apply
from registry.models import Pipeline, Workflow, WorkflowAccess
from registry.versioning import diff_pipeline_versions, diff_workflow_documents
from registry.workflow_document import clean_document
from registry.workflow_selectors import (
    visible_to,
    workflow_document,
    workflow_get,
    workflow_list,
    workflow_usage,
    workflow_version_get,
)
from registry.workflow_services import (
    WorkflowVersionConflict,
    pipeline_set_labels,
    workflow_access_record,
    workflow_clone,
    workflow_create,
    workflow_delete,
    workflow_replace,
    workflow_restore,
    workflow_update,
)

from .workflow_serializers import (
    ApplyResultSerializer,
    ApplySerializer,
    AuditEntrySerializer,
    CloneSerializer,
    ImportResultSerializer,
    ImportSerializer,
    LabelsSerializer,
    OrganizationSerializer,
    PipelineDiffSerializer,
    RestoreSerializer,
    SimilarRequestSerializer,
    SimilarWorkflowSerializer,
    WorkflowDiffSerializer,
    WorkflowListSerializer,
    WorkflowPatchSerializer,
    WorkflowSerializer,
    WorkflowUsageSerializer,
    WorkflowVersionListSerializer,
    WorkflowVersionSerializer,
    WorkflowWriteSerializer,
)

DOCUMENT_FIELDS = ("name", "description", "category", "tags", "metadata", "nodes", "edges", "params")
LIST_PARAMETERS = [
    OpenApiParameter("search", str, description="Full-text search over names, descriptions, node names and "
                                                "parameters (web-search syntax), ranked best first."),
    OpenApiParameter("tag", str, many=True, description="Only workflows with this tag (repeat for all of several)."),
    OpenApiParameter("category", str),
    OpenApiParameter("organization", OpenApiTypes.UUID),
    OpenApiParameter("node_type", str, description="Only workflows with a node of this type."),
]
# `?format=` is DRF's renderer override, so the document format is chosen with `?as=`.
FORMAT_PARAMETER = OpenApiParameter("as", str, enum=["json", "yaml"], description="Document format (default json).")


def workflow_body(workflow: Workflow) -> dict:
    return {
        "id": workflow.pk, "version": workflow.version, "organization": workflow.organization_id,
        "created_by": workflow.created_by.username if workflow.created_by_id else None,
        "created_at": workflow.created_at, "updated_at": workflow.updated_at,
        "read_count": workflow.read_count, "apply_count": workflow.apply_count, "reuse_count": workflow.reuse_count,
        **workflow_document(workflow),
    }


def _based_on(request, serializer_data: dict) -> int | None:
    """The version an update is based on: the body's `version`, else an If-Match header."""
    if serializer_data.get("version") is not None:
        return serializer_data["version"]
    header = request.headers.get("If-Match", "").strip().strip('W/').strip('"')
    if header:
        try:
            return int(header)
        except ValueError:
            raise DrfValidationError({"If-Match": ["must be a version number."]}) from None
    return None


def _conflict(exc: WorkflowVersionConflict) -> Conflict:
    return Conflict(detail=str(exc), code="version_conflict")


@extend_schema_view(
    list=extend_schema(parameters=LIST_PARAMETERS, responses={200: WorkflowListSerializer(many=True)}),
    retrieve=extend_schema(responses={200: WorkflowSerializer, **ERROR_RESPONSES(404)}),
    create=extend_schema(request=WorkflowWriteSerializer,
                         responses={201: WorkflowSerializer, 200: WorkflowSerializer, **ERROR_RESPONSES(400)},
                         description="Create a workflow with its nodes, edges and params in one transaction. "
                                     "A repeated `request_id` returns the first workflow (200)."),
    update=extend_schema(request=WorkflowWriteSerializer,
                         responses={200: WorkflowSerializer, **ERROR_RESPONSES(400, 404, 409)},
                         description="Replace the whole workflow. `version` (or If-Match) is the version the "
                                     "change is based on; a stale one gets 409."),
    partial_update=extend_schema(request=WorkflowPatchSerializer,
                                 responses={200: WorkflowSerializer, **ERROR_RESPONSES(400, 404, 409)}),
    destroy=extend_schema(parameters=[OpenApiParameter("version", int, description="Optional: refuse (409) if "
                                                                                    "the workflow moved past it.")],
                          responses={204: None, **ERROR_RESPONSES(404, 409)}),
)
class WorkflowViewSet(viewsets.GenericViewSet):
    """Workflows of the user and of their organizations (staff: all); others' are 404."""

    permission_classes = [IsAuthenticated]
    queryset = Workflow.objects.all()
    serializer_class = WorkflowSerializer

    def get_queryset(self):
        request = self.request
        tags = request.query_params.getlist("tag")
        if any("\x00" in t for t in tags):
            raise DrfValidationError({"tag": ["Null characters are not allowed."]})
        return workflow_list(user=request.user, search=text_param(request, "search"), tags=tags,
                             category=text_param(request, "category"), organization=self._uuid_param("organization"),
                             node_type=text_param(request, "node_type"))

    def _uuid_param(self, name: str) -> str | None:
        import uuid

        value = self.request.query_params.get(name)
        if not value:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise DrfValidationError({name: ["must be a UUID."]}) from None

    def get_object(self) -> Workflow:
        return workflow_get(user=self.request.user, pk=self.kwargs["pk"])

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(WorkflowListSerializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        workflow = self.get_object()
        workflow_access_record(workflow=workflow, user=request.user, kind=WorkflowAccess.Kind.READ)
        workflow.refresh_from_db()
        return Response(WorkflowSerializer(workflow_body(workflow)).data)

    def create(self, request):
        serializer = WorkflowWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = {k: request.data[k] for k in DOCUMENT_FIELDS if k in request.data}
        workflow, created = workflow_create(user=request.user, data=data,
                                            organization=serializer.validated_data.get("organization"),
                                            request_id=serializer.validated_data.get("request_id"))
        if not created:
            workflow = workflow_get(user=request.user, pk=workflow.pk)
        return Response(WorkflowSerializer(workflow_body(workflow)).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def update(self, request, pk=None):
        workflow = self.get_object()
        serializer = WorkflowWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        based_on = self._required_version(request, serializer.validated_data)
        data = {k: request.data[k] for k in DOCUMENT_FIELDS if k in request.data}
        try:
            workflow = workflow_replace(workflow=workflow, user=request.user, data=data, based_on_version=based_on,
                                        organization=serializer.validated_data.get("organization"))
        except WorkflowVersionConflict as exc:
            raise _conflict(exc) from None
        return Response(WorkflowSerializer(workflow_body(workflow)).data)

    def partial_update(self, request, pk=None):
        workflow = self.get_object()
        serializer = WorkflowPatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        based_on = self._required_version(request, serializer.validated_data)
        changes = {k: request.data[k] for k in DOCUMENT_FIELDS if k in request.data}
        try:
            workflow = workflow_update(workflow=workflow, user=request.user, changes=changes,
                                       based_on_version=based_on)
        except WorkflowVersionConflict as exc:
            raise _conflict(exc) from None
        return Response(WorkflowSerializer(workflow_body(workflow)).data)

    def _required_version(self, request, data: dict) -> int:
        based_on = _based_on(request, data)
        if based_on is None:
            raise DrfValidationError({"version": ["required: the version this change is based on "
                                                  "(or an If-Match header)."]})
        return based_on

    def destroy(self, request, pk=None):
        workflow = self.get_object()
        raw = request.query_params.get("version")
        if raw is not None and not raw.isdigit():
            raise DrfValidationError({"version": ["must be a version number."]})
        try:
            workflow_delete(workflow=workflow, user=request.user, based_on_version=int(raw) if raw else None)
        except WorkflowVersionConflict as exc:
            raise _conflict(exc) from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    # --- versions ------------------------------------------------------------------------------
    @extend_schema(responses={200: WorkflowVersionListSerializer(many=True)}, summary="Version history, newest first")
    @action(detail=True, methods=["get"], url_path="versions")
    def versions(self, request, pk=None):
        workflow = self.get_object()
        page = self.paginate_queryset(workflow.versions.select_related("created_by").order_by("-version"))
        return self.get_paginated_response(WorkflowVersionListSerializer(page, many=True).data)

    @extend_schema(responses={200: WorkflowVersionSerializer, **ERROR_RESPONSES(404)}, summary="One version's snapshot")
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<version>[0-9]{1,9})")
    def version_detail(self, request, pk=None, version=None):
        row = workflow_version_get(workflow=self.get_object(), version=int(version))
        return Response(WorkflowVersionSerializer(row).data)

    @extend_schema(responses={200: WorkflowDiffSerializer, **ERROR_RESPONSES(404)},
                   summary="Nodes, edges and params added, removed and changed from version a to b")
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<a>[0-9]{1,9})/diff/(?P<b>[0-9]{1,9})")
    def version_diff(self, request, pk=None, a=None, b=None):
        workflow = self.get_object()
        before = workflow_version_get(workflow=workflow, version=int(a)).snapshot
        after = workflow_version_get(workflow=workflow, version=int(b)).snapshot
        return Response({"from_version": int(a), "to_version": int(b), **diff_workflow_documents(before, after)})

    @extend_schema(request=RestoreSerializer, responses={200: WorkflowSerializer, **ERROR_RESPONSES(400, 404, 409)},
                   summary="Make an old version current again (as a new version)")
    @action(detail=True, methods=["post"], url_path=r"versions/(?P<version>[0-9]{1,9})/restore")
    def version_restore(self, request, pk=None, version=None):
        workflow = self.get_object()
        workflow_version_get(workflow=workflow, version=int(version))
        serializer = RestoreSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            workflow = workflow_restore(workflow=workflow, version=int(version), user=request.user,
                                        based_on_version=serializer.validated_data.get("version"))
        except WorkflowVersionConflict as exc:
            raise _conflict(exc) from None
        return Response(WorkflowSerializer(workflow_body(workflow)).data)

    # --- finding, reuse, usage -----------------------------------------------------------------
    @extend_schema(parameters=[OpenApiParameter("limit", int)],
                   responses={200: SimilarWorkflowSerializer(many=True), **ERROR_RESPONSES(404)},
                   summary="Stored workflows most similar to this one")
    @action(detail=True, methods=["get"], url_path="similar", pagination_class=None)
    def similar(self, request, pk=None):
        workflow = self.get_object()
        limit = _limit(request.query_params.get("limit"))
        query = similarity.build_query(document=workflow_document(workflow), exclude_id=workflow.pk)
        return Response(_similar_rows(request.user, query, limit))

    @extend_schema(request=SimilarRequestSerializer, responses={200: SimilarWorkflowSerializer(many=True),
                                                                **ERROR_RESPONSES(400, 404)},
                   summary="Stored workflows most similar to a workflow, a draft graph or plain text")
    @action(detail=False, methods=["post"], url_path="similar", pagination_class=None)
    def similar_to(self, request):
        serializer = SimilarRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if data.get("workflow"):
            source = workflow_get(user=request.user, pk=data["workflow"])
            query = similarity.build_query(document=workflow_document(source), exclude_id=source.pk)
        elif data.get("document"):
            query = similarity.build_query(document=clean_document(request.data["document"]))
        else:
            query = similarity.build_query(text=data["text"])
        return Response(_similar_rows(request.user, query, data["limit"]))

    @extend_schema(request=CloneSerializer, responses={201: WorkflowSerializer, **ERROR_RESPONSES(400, 404)},
                   summary="Copy a workflow (counted as a reuse of it)")
    @action(detail=True, methods=["post"], url_path="clone")
    def clone(self, request, pk=None):
        workflow = self.get_object()
        serializer = CloneSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        copy = workflow_clone(workflow=workflow, user=request.user, name=serializer.validated_data.get("name"))
        return Response(WorkflowSerializer(workflow_body(copy)).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: WorkflowUsageSerializer, **ERROR_RESPONSES(404)},
                   summary="How often the workflow was read, exported, applied and reused")
    @action(detail=True, methods=["get"], url_path="usage")
    def usage(self, request, pk=None):
        return Response(WorkflowUsageSerializer(workflow_usage(workflow=self.get_object())).data)

    # --- interchange ---------------------------------------------------------------------------
    @extend_schema(parameters=[FORMAT_PARAMETER], responses={(200, "application/json"): OpenApiTypes.OBJECT,
                                                              (200, "application/yaml"): OpenApiTypes.OBJECT,
                                                              **ERROR_RESPONSES(400, 404)},
                   summary="The workflow as a self-contained JSON or YAML document")
    @action(detail=True, methods=["get"], url_path="export")
    def export(self, request, pk=None):
        workflow = self.get_object()
        fmt = _format(request)
        workflow_access_record(workflow=workflow, user=request.user, kind=WorkflowAccess.Kind.EXPORT)
        return _document_response(interchange.workflow_export_document(workflow), fmt, f"workflow-{workflow.pk}")

    @extend_schema(request=ImportSerializer, responses={201: ImportResultSerializer, 200: ImportResultSerializer,
                                                        **ERROR_RESPONSES(400)},
                   summary="Create a workflow from an ImageFlow export (JSON/YAML) or an n8n workflow")
    @action(detail=False, methods=["post"], url_path="import")
    def import_(self, request):
        serializer = ImportSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        document, unmapped = interchange.import_document(document=data["document"], fmt=data["format"])
        workflow, created = workflow_create(user=request.user, data=document, organization=data.get("organization"),
                                            request_id=data.get("request_id"), change="import")
        return Response({"workflow": WorkflowSerializer(workflow_body(workflow)).data, "created": created,
                         "unmapped": unmapped}, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    # --- apply -------------------------------------------------------------------------------
    @extend_schema(request=ApplySerializer, responses={202: ApplyResultSerializer, **ERROR_RESPONSES(400, 404)},
                   summary="Run the workflow's current version with these param values")
    @action(detail=True, methods=["post"], url_path="apply")
    def apply(self, request, pk=None):
        workflow = self.get_object()
        serializer = ApplySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        key = request.headers.get("Idempotency-Key") or data.get("idempotency_key")
        execution, resolved = workflow_apply(workflow=workflow, user=request.user, params=request.data.get("params"),
                                             inputs=data["inputs"], idempotency_key=key)
        url = request.build_absolute_uri(f"/api/v1/executions/{execution.pk}/")
        return Response({"execution": execution.pk, "url": url, "status": execution.status,
                         "workflow_version": execution.workflow_version, "params": resolved},
                        status=status.HTTP_202_ACCEPTED)


def _limit(raw) -> int:
    if raw is None:
        return 10
    if not str(raw).isdigit() or not 1 <= int(raw) <= 100:
        raise DrfValidationError({"limit": ["must be a whole number from 1 to 100."]})
    return int(raw)


def _similar_rows(user, query, limit: int) -> list[dict]:
    found = similarity.find_similar(queryset=visible_to(Workflow.objects.all(), user=user), query=query, limit=limit)
    names = dict(Workflow.objects.filter(pk__in=[f.workflow_id for f in found]).values_list("pk", "name"))
    versions = dict(Workflow.objects.filter(pk__in=[f.workflow_id for f in found]).values_list("pk", "version"))
    return [{"id": f.workflow_id, "name": names[f.workflow_id], "version": versions[f.workflow_id], "score": f.score,
             "text_score": f.text_score, "structure_score": f.structure_score} for f in found]


def _format(request) -> str:
    fmt = request.query_params.get("as", "json")
    if fmt not in interchange.FORMATS:
        raise DrfValidationError({"as": ["use json or yaml."]})
    return fmt


def _document_response(document: dict, fmt: str, filename: str) -> HttpResponse:
    if fmt == "json":
        return Response(document)
    response = HttpResponse(interchange.dump(document, fmt="yaml"), content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}.yaml"'
    return response


# --- pipelines: diff, export, import (their CRUD lives in registry/api/views.py) -------------------

class PipelineVersionDiffView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: PipelineDiffSerializer, **ERROR_RESPONSES(404)}, tags=["pipelines"],
                   summary="Nodes and edges added, removed and changed from pipeline version a to b")
    def get(self, request, pk, a, b):
        pipeline = get_object_or_404(scope_to_user(Pipeline.objects.all(), user=request.user), pk=pk)
        rows = {v.version: v for v in pipeline.versions.filter(version__in=[a, b])}
        for number in (a, b):
            if number not in rows:
                raise NotFound(f"The pipeline has no version {number}.")
        before, after = ({"name": rows[n].name, "description": rows[n].description, "definition": rows[n].definition}
                         for n in (a, b))
        return Response({"from_version": a, "to_version": b, **diff_pipeline_versions(before, after)})


class PipelineExportView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[FORMAT_PARAMETER], responses={(200, "application/json"): OpenApiTypes.OBJECT,
                                                              (200, "application/yaml"): OpenApiTypes.OBJECT,
                                                              **ERROR_RESPONSES(400, 404)},
                   tags=["pipelines"], summary="The pipeline as a self-contained JSON or YAML document")
    def get(self, request, pk):
        pipeline = get_object_or_404(scope_to_user(Pipeline.objects.all(), user=request.user), pk=pk)
        return _document_response(interchange.pipeline_export_document(pipeline), _format(request),
                                  f"pipeline-{pipeline.pk}")


class PipelineImportView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT, **ERROR_RESPONSES(400)},
                   tags=["pipelines"], summary="Create a pipeline from an export (JSON object, or {\"document\": text})")
    def post(self, request):
        body = request.data
        if isinstance(body, dict) and "document" in body and "format" not in body:
            body = interchange.load(body["document"])
        pipeline = interchange.pipeline_import(document=body, user=request.user)
        return Response({"id": pipeline.pk, "version": pipeline.version,
                         "url": request.build_absolute_uri(reverse("api:pipeline-detail", args=[pipeline.pk]))},
                        status=status.HTTP_201_CREATED)


class PipelineLabelsView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=LabelsSerializer, responses={200: LabelsSerializer, **ERROR_RESPONSES(400, 404)},
                   tags=["pipelines"], summary="Set a pipeline's category, tags and organization")
    def put(self, request, pk):
        pipeline = get_object_or_404(scope_to_user(Pipeline.objects.all(), user=request.user), pk=pk)
        serializer = LabelsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        pipeline = pipeline_set_labels(pipeline=pipeline, user=request.user, category=data.get("category"),
                                       tags=data.get("tags"), organization=data.get("organization"),
                                       set_organization="organization" in data)
        return Response({"category": pipeline.category, "tags": sorted(pipeline.tags.values_list("name", flat=True)),
                         "organization": pipeline.organization_id})


# --- accountability -------------------------------------------------------------------------------

@extend_schema(parameters=[OpenApiParameter("object_type", str, enum=["workflow", "pipeline", "component"]),
                           OpenApiParameter("object_id", OpenApiTypes.UUID),
                           OpenApiParameter("action", str), OpenApiParameter("actor", OpenApiTypes.UUID)],
               tags=["audit"])
class AuditLogView(generics.ListAPIView):
    """The audit log (staff only, read-only), newest first."""

    permission_classes = [IsAuthenticated, IsAdminUser]
    serializer_class = AuditEntrySerializer

    def get_queryset(self):
        import uuid

        queryset = AuditEntry.objects.all()
        params = self.request.query_params
        for name in ("object_type", "action"):
            if params.get(name):
                queryset = queryset.filter(**{name: params[name]})
        for name, column in (("object_id", "object_id"), ("actor", "actor_id")):
            if params.get(name):
                try:
                    queryset = queryset.filter(**{column: uuid.UUID(params[name])})
                except ValueError:
                    raise DrfValidationError({name: ["must be a UUID."]}) from None
        return queryset


@extend_schema(tags=["organizations"])
class OrganizationListView(generics.ListAPIView):
    """Organizations the user belongs to (staff: all)."""

    permission_classes = [IsAuthenticated]
    serializer_class = OrganizationSerializer

    queryset = Organization.objects.none()  # for the schema; get_queryset scopes by user

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Organization.objects.none()
        if self.request.user.is_staff:
            return Organization.objects.all()
        return Organization.objects.filter(memberships__user=self.request.user)
