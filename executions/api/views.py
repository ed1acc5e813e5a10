from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import F
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from executions import services
from executions.models import PipelineExecution
from imageflow.api.errors import Conflict
from imageflow.api.ownership import scope_to_user
from imageflow.api.pagination import KeysetPagination
from imageflow.api.permissions import IsOwnerOrStaff
from imageflow.api.schema import ERROR_RESPONSES
from registry.models import Pipeline

from .filters import ExecutionFilterSet
from .serializers import (
    ExecutionAcceptedSerializer,
    ExecutionDetailSerializer,
    ExecutionRunSerializer,
    ExecutionSerializer,
)

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", str, location=OpenApiParameter.HEADER, required=False,
    description="Any string up to 255 characters. The same key from the same user returns the execution the "
                "first request created instead of starting another.",
)


def execution_queryset(*, user):
    # The pipeline's name by annotation: a join of the whole row would load every definition.
    return scope_to_user(PipelineExecution.objects.annotate(pipeline_name=F("pipeline__name")), user=user)


def accepted_body(request, execution: PipelineExecution) -> dict:
    return {
        "id": execution.pk,
        "url": request.build_absolute_uri(reverse("api:execution-detail", args=[execution.pk])),
        "status": execution.status,
        "pipeline": execution.pipeline_id,
        "pipeline_version": execution.pipeline_version,
    }


def _as_conflict(exc: DjangoValidationError) -> None:
    """The engine refuses a state change with a ValidationError on `status`: that is a 409."""
    if hasattr(exc, "error_dict") and set(exc.error_dict) == {"status"}:
        raise Conflict(" ".join(exc.message_dict["status"])) from None
    raise exc


@extend_schema_view(
    list=extend_schema(summary="Executions, newest first (cursor pagination)"),
    retrieve=extend_schema(responses={200: ExecutionDetailSerializer, **ERROR_RESPONSES(404)},
                           summary="One execution with its steps and progress"),
)
class ExecutionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = ExecutionSerializer
    permission_classes = [IsAuthenticated, IsOwnerOrStaff]
    pagination_class = KeysetPagination
    filterset_class = ExecutionFilterSet

    def get_queryset(self):
        return execution_queryset(user=self.request.user)

    def get_serializer_class(self):
        return ExecutionDetailSerializer if self.action in {"retrieve", "cancel"} else ExecutionSerializer

    def filter_queryset(self, queryset):
        # The list's filters (a filterset form built and validated per request) say nothing about
        # one execution by id: a status poll skips them.
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    @extend_schema(request=None, responses={200: ExecutionDetailSerializer, **ERROR_RESPONSES(404, 409)},
                   summary="Cancel a pending or running execution")
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        execution = self.get_object()
        try:
            execution = services.execution_cancel(execution=execution, user=request.user)
        except DjangoValidationError as exc:
            _as_conflict(exc)
        return Response(ExecutionDetailSerializer(execution, context={"request": request}).data)

    @extend_schema(request=None, responses={202: ExecutionAcceptedSerializer, **ERROR_RESPONSES(404, 409)},
                   summary="Re-run a failed or cancelled execution (completed steps are reused)")
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        execution = self.get_object()
        try:
            retry = services.execution_retry(execution=execution, user=request.user)
        except DjangoValidationError as exc:
            _as_conflict(exc)
        return Response(accepted_body(request, retry), status=status.HTTP_202_ACCEPTED)


class PipelineRunView(APIView):
    """`POST /pipelines/{id}/run/`: start an execution; the engine runs it."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=ExecutionRunSerializer, parameters=[IDEMPOTENCY_HEADER],
        responses={202: ExecutionAcceptedSerializer, **ERROR_RESPONSES(400, 404, 409)},
        summary="Run a pipeline on uploaded files", tags=["pipelines"],
    )
    def post(self, request, pk):
        pipeline = get_object_or_404(scope_to_user(Pipeline.objects.all(), user=request.user), pk=pk)
        serializer = ExecutionRunSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key") or None
        if key is not None and len(key) > 255:
            raise DjangoValidationError({"Idempotency-Key": ["Must be at most 255 characters."]})
        execution = services.execution_start(
            pipeline=pipeline, inputs=serializer.validated_data["inputs"],
            parameters=serializer.validated_data.get("parameters") or None, user=request.user, idempotency_key=key,
            on_item_error=serializer.validated_data.get("on_item_error"),
            use_cache=serializer.validated_data["use_cache"],
        )
        if execution.pipeline_id != pipeline.pk:
            raise Conflict("This Idempotency-Key was already used to run another pipeline.")
        return Response(accepted_body(request, execution), status=status.HTTP_202_ACCEPTED,
                        headers={"Location": accepted_body(request, execution)["url"]})
