from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from executions.models import ComponentExecution, PipelineExecution
from executions.selectors import execution_progress


class ProgressSerializer(serializers.Serializer):
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    skipped = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    running = serializers.IntegerField()
    pending = serializers.IntegerField()
    finished = serializers.IntegerField(help_text="Steps in a final state (completed, failed, skipped, cancelled).")
    total = serializers.IntegerField()
    percentage = serializers.FloatField(help_text="finished / total * 100")


class ComponentExecutionSerializer(serializers.ModelSerializer):
    component = serializers.SerializerMethodField()
    input_data = serializers.JSONField(read_only=True)
    output_data = serializers.JSONField(read_only=True)
    resource_usage = serializers.JSONField(read_only=True)

    class Meta:
        model = ComponentExecution
        fields = ["id", "node_id", "component", "status", "input_data", "output_data", "error_message",
                  "execution_time_ms", "resource_usage", "attempts", "started_at", "completed_at", "created_at"]
        read_only_fields = fields

    @extend_schema_field({"type": "object", "properties": {"id": {"type": "string", "format": "uuid"},
                                                           "name": {"type": "string"}, "version": {"type": "string"}}})
    def get_component(self, obj) -> dict:
        return {"id": str(obj.component_id), "name": obj.component.name, "version": obj.component.version}


class ExecutionSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:execution-detail")
    pipeline_name = serializers.CharField(source="pipeline.name", read_only=True)
    created_by = serializers.UUIDField(source="created_by_id", read_only=True, allow_null=True)
    pipeline = serializers.UUIDField(source="pipeline_id", read_only=True)
    retry_of = serializers.UUIDField(source="retry_of_id", read_only=True, allow_null=True)
    input_data = serializers.JSONField(read_only=True)
    output_data = serializers.JSONField(read_only=True)

    class Meta:
        model = PipelineExecution
        fields = ["id", "url", "pipeline", "pipeline_name", "pipeline_version", "status", "input_data", "output_data",
                  "error_message", "started_at", "completed_at", "created_by", "created_at", "updated_at",
                  "retry_of"]
        read_only_fields = fields


class ExecutionDetailSerializer(ExecutionSerializer):
    progress = serializers.SerializerMethodField()
    steps = serializers.SerializerMethodField()

    class Meta(ExecutionSerializer.Meta):
        fields = ExecutionSerializer.Meta.fields + ["progress", "steps"]
        read_only_fields = fields

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, obj) -> dict:
        return execution_progress(obj)

    @extend_schema_field(ComponentExecutionSerializer(many=True))
    def get_steps(self, obj) -> list:
        steps = obj.steps.select_related("component").order_by("created_at", "node_id")
        return ComponentExecutionSerializer(steps, many=True).data


class ExecutionRunSerializer(serializers.Serializer):
    inputs = serializers.ListField(child=serializers.UUIDField(), allow_empty=True, default=list,
                                   help_text="Ids of uploaded files the root nodes receive.")
    parameters = serializers.DictField(child=serializers.DictField(), required=False, default=dict,
                                       help_text="Per-node parameter overrides: {node_id: {name: value}}.")


class ExecutionAcceptedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.URLField()
    status = serializers.CharField()
    pipeline = serializers.UUIDField()
    pipeline_version = serializers.IntegerField()
