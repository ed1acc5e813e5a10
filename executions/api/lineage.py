"""`GET /files/{id}/lineage/`: a file's ancestors and descendants.

It lives in the executions API because the lineage does (executions.models.FileLineage): the
files app may not import executions, while executions may read files. The file is found through
files' own selector, so it is scoped exactly as the other file endpoints (not yours: 404).
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from executions.selectors import LINEAGE_DEFAULT_DEPTH, LINEAGE_MAX_DEPTH, Lineage, file_lineage
from files.api.serializers import FileSerializer
from files.selectors import file_list
from imageflow.api.schema import ERROR_RESPONSES


class LineageComponentSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    version = serializers.CharField()


class LineageStepSerializer(serializers.Serializer):
    id = serializers.UUIDField(help_text="The step (component execution) that produced the file.")
    execution = serializers.UUIDField()
    node_id = serializers.CharField()
    component = LineageComponentSerializer()


class LineageNodeSerializer(serializers.Serializer):
    file = FileSerializer()
    depth = serializers.IntegerField(help_text="Edges between this file and the asked one (1: direct).")
    derived_from = serializers.ListField(child=serializers.UUIDField(),
                                         help_text="Ids of the files this one was derived from (those you may see).")
    step = LineageStepSerializer(allow_null=True, help_text="The step that produced this file; null for an upload, "
                                                            "or an output made before lineage was recorded.")


class FileLineageSerializer(serializers.Serializer):
    file = FileSerializer()
    derived_from = serializers.ListField(child=serializers.UUIDField())
    step = LineageStepSerializer(allow_null=True)
    max_depth = serializers.IntegerField(help_text="The depth asked for (?depth=).")
    ancestors = LineageNodeSerializer(many=True, help_text="Files it was derived from, nearest first.")
    descendants = LineageNodeSerializer(many=True, help_text="Files derived from it, nearest first.")


class FileLineageView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[OpenApiParameter("depth", int, description=f"How many derivations to follow each way "
                                                               f"(1..{LINEAGE_MAX_DEPTH}, default "
                                                               f"{LINEAGE_DEFAULT_DEPTH}).")],
        responses={200: FileLineageSerializer, **ERROR_RESPONSES(400, 404)},
        summary="Lineage: the files this one was derived from and the files derived from it", tags=["files"],
    )
    def get(self, request, pk):
        file = get_object_or_404(file_list(user=request.user), pk=pk)
        raw = request.query_params.get("depth", str(LINEAGE_DEFAULT_DEPTH))
        if not raw.isdigit() or not 1 <= int(raw) <= LINEAGE_MAX_DEPTH:
            raise ValidationError({"depth": [f"An integer from 1 to {LINEAGE_MAX_DEPTH}."]})
        lineage: Lineage = file_lineage(file=file, user=request.user, depth=int(raw))
        return Response(FileLineageSerializer(lineage, context={"request": request}).data)
