from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from imageflow.api.mixins import OwnedQuerysetMixin
from imageflow.api.params import text_param
from imageflow.api.permissions import IsOwnerOrStaff, IsStaffOrReadOnly
from imageflow.api.schema import ERROR_RESPONSES
from registry import selectors, services
from registry.models import Component, Pipeline

from .serializers import (
    ComponentSerializer,
    PipelineCloneSerializer,
    PipelineListSerializer,
    PipelineSerializer,
    PipelineVersionSerializer,
)

SEARCH_PARAMETER = OpenApiParameter("search", str, description="Text in the name or description (case-insensitive).")


@extend_schema_view(
    list=extend_schema(parameters=[SEARCH_PARAMETER]),
    create=extend_schema(responses={201: ComponentSerializer, **ERROR_RESPONSES(400, 403)}),
    update=extend_schema(responses={200: ComponentSerializer, **ERROR_RESPONSES(400, 403)}),
    partial_update=extend_schema(responses={200: ComponentSerializer, **ERROR_RESPONSES(400, 403)}),
    destroy=extend_schema(responses={204: None, **ERROR_RESPONSES(403, 409)}),
)
class ComponentViewSet(viewsets.ModelViewSet):
    """Components are a shared catalogue: every signed-in user reads them, staff change them."""

    serializer_class = ComponentSerializer
    permission_classes = [IsAuthenticated, IsStaffOrReadOnly]
    queryset = Component.objects.all()

    def get_queryset(self):
        return selectors.component_list(search=text_param(self.request, "search"))

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        component = services.component_create(**serializer.validated_data)
        return Response(self.get_serializer(component).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        component = self.get_object()
        serializer = self.get_serializer(component, data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        component = services.component_update(component=component, data=serializer.validated_data)
        return Response(self.get_serializer(component).data)

    def destroy(self, request, *args, **kwargs):
        services.component_delete(component=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(parameters=[SEARCH_PARAMETER, OpenApiParameter("tag", str, many=True),
                                   OpenApiParameter("category", str),
                                   OpenApiParameter("outdated", bool, description=(
                                       "true: only pipelines with a node naming a component version of which a "
                                       "newer one exists (their outdated_components say which)."))],
                       responses={200: PipelineListSerializer(many=True)}),
    create=extend_schema(responses={201: PipelineSerializer, **ERROR_RESPONSES(400)}),
    update=extend_schema(responses={200: PipelineSerializer, **ERROR_RESPONSES(400)}),
    partial_update=extend_schema(responses={200: PipelineSerializer, **ERROR_RESPONSES(400)}),
    destroy=extend_schema(responses={204: None, **ERROR_RESPONSES(409)}),
)
class PipelineViewSet(OwnedQuerysetMixin, viewsets.ModelViewSet):
    """Pipelines of the signed-in user (staff: all). A new definition bumps the version."""

    serializer_class = PipelineSerializer
    permission_classes = [IsAuthenticated, IsOwnerOrStaff]
    queryset = Pipeline.objects.all()

    def get_queryset(self):
        queryset = selectors.pipeline_list(user=self.request.user, search=text_param(self.request, "search"),
                                           tags=self.request.query_params.getlist("tag"),
                                           category=text_param(self.request, "category"),
                                           carriers=self.action != "list")
        outdated = text_param(self.request, "outdated")
        if self.action == "list" and outdated is not None:
            if outdated.lower() not in {"true", "false"}:
                raise ValidationError({"outdated": ["must be true or false."]})
            if outdated.lower() == "true":
                queryset = selectors.pipelines_outdated(queryset)
        return queryset

    def get_serializer_class(self):
        return PipelineListSerializer if self.action == "list" else PipelineSerializer

    def create(self, request, *args, **kwargs):
        serializer = PipelineSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        pipeline = services.pipeline_create(created_by=request.user, **serializer.validated_data)
        return Response(PipelineSerializer(pipeline).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        pipeline = self.get_object()
        serializer = PipelineSerializer(pipeline, data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        pipeline = services.pipeline_update(pipeline=pipeline, user=request.user, data=serializer.validated_data)
        return Response(PipelineSerializer(pipeline).data)

    def destroy(self, request, *args, **kwargs):
        services.pipeline_delete(pipeline=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={200: PipelineVersionSerializer(many=True)}, summary="Version history, newest first")
    @action(detail=True, methods=["get"], url_path="versions")
    def versions(self, request, pk=None):
        pipeline = self.get_object()
        queryset = selectors.pipeline_version_list(pipeline=pipeline)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(PipelineVersionSerializer(page, many=True).data)

    @extend_schema(responses={200: PipelineVersionSerializer, **ERROR_RESPONSES(404)}, summary="One version")
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<version>[0-9]+)")
    def version_detail(self, request, pk=None, version=None):
        pipeline = self.get_object()
        row = get_object_or_404(selectors.pipeline_version_list(pipeline=pipeline), version=int(version))
        return Response(PipelineVersionSerializer(row).data)

    @extend_schema(request=PipelineCloneSerializer, responses={201: PipelineSerializer, **ERROR_RESPONSES(400, 404)},
                   summary="Copy a pipeline (the copy starts at version 1, owned by the caller)")
    @action(detail=True, methods=["post"], url_path="clone")
    def clone(self, request, pk=None):
        pipeline = self.get_object()
        serializer = PipelineCloneSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        copy = services.pipeline_clone(pipeline=pipeline, user=request.user, name=serializer.validated_data.get("name"))
        return Response(PipelineSerializer(copy).data, status=status.HTTP_201_CREATED)
