from __future__ import annotations

from datetime import UTC

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from executions.engine.presence import live_queues, waiting_for
from executions.item_counts import step_item_counts
from executions.models import ComponentExecution, PipelineExecution
from executions.selectors import execution_outputs_by_input, execution_progress, execution_steps
from imageflow.api.serializers import ModelSerializer


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
    total_items = serializers.IntegerField(help_text="Items of the itemized (map) steps, summed; 0 when none is.")
    completed_items = serializers.IntegerField(help_text="Items completed (cached ones included), summed.")
    failed_items = serializers.IntegerField()
    skipped_items = serializers.IntegerField()
    cached_items = serializers.IntegerField(help_text="Completed items whose outputs were reused from the cache.")


class StepItemsSerializer(serializers.Serializer):
    """A map step's item counts (`items` of a step; null when the step is not itemized)."""

    total = serializers.IntegerField()
    completed = serializers.IntegerField(help_text="Cached ones included.")
    failed = serializers.IntegerField()
    skipped = serializers.IntegerField()
    cached = serializers.IntegerField()


class UTCDateTimeField(serializers.DateTimeField):
    """DRF's ISO 8601 output ("...Z") for aware UTC values, without its per-value timezone
    machinery: a list page renders hundreds of these."""

    def to_representation(self, value):
        if value is None:
            return None
        text = value.astimezone(UTC).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text


class ComponentExecutionSerializer(ModelSerializer):
    component = serializers.SerializerMethodField()
    input_data = serializers.JSONField(read_only=True)
    output_data = serializers.JSONField(read_only=True)
    resource_usage = serializers.JSONField(read_only=True)
    started_at = UTCDateTimeField(read_only=True, allow_null=True)
    completed_at = UTCDateTimeField(read_only=True, allow_null=True)
    created_at = UTCDateTimeField(read_only=True)

    class Meta:
        model = ComponentExecution
        fields = ["id", "node_id", "component", "status", "input_data", "output_data", "error_message",
                  "execution_time_ms", "resource_usage", "attempts", "started_at", "completed_at", "created_at",
                  "items", "waiting_for"]
        read_only_fields = fields

    items = serializers.SerializerMethodField()
    waiting_for = serializers.SerializerMethodField(
        help_text="Why an unfinished step will not start by itself: no live worker consumes the queue its "
                  "component's resource requirements route it to (e.g. a GPU step and no GPU worker); null "
                  "otherwise, and when the workers' queues are not known.")

    def get_waiting_for(self, obj) -> str | None:
        return waiting_for(obj, self.context.get("live_queues"))

    @extend_schema_field(StepItemsSerializer(allow_null=True))
    def get_items(self, obj) -> dict | None:
        return step_item_counts(obj)

    @extend_schema_field({"type": "object", "properties": {"id": {"type": "string", "format": "uuid"},
                                                           "name": {"type": "string"}, "version": {"type": "string"}}})
    def get_component(self, obj) -> dict:
        if hasattr(obj, "component_name"):  # annotated by executions.selectors.execution_steps
            return {"id": str(obj.component_id), "name": obj.component_name, "version": obj.component_version}
        return {"id": str(obj.component_id), "name": obj.component.name, "version": obj.component.version}


class ExecutionUrlField(serializers.Field):
    """The detail URL, reversed once per response instead of once per row."""

    def __init__(self, **kwargs):
        kwargs["read_only"] = True
        kwargs["source"] = "*"
        super().__init__(**kwargs)

    def to_representation(self, execution):
        cache = self.context.setdefault("_execution_url_prefix", {})
        if "prefix" not in cache:
            path = reverse("api:execution-list")
            request = self.context.get("request")
            cache["prefix"] = request.build_absolute_uri(path) if request is not None else path
        return f"{cache['prefix']}{execution.pk}/"


@extend_schema_field({"type": "string", "format": "uri"})
class _UrlSchema(ExecutionUrlField):
    pass


class ExecutionSerializer(ModelSerializer):
    url = _UrlSchema()
    pipeline_name = serializers.SerializerMethodField()
    started_at = UTCDateTimeField(read_only=True, allow_null=True)
    completed_at = UTCDateTimeField(read_only=True, allow_null=True)
    created_at = UTCDateTimeField(read_only=True)
    updated_at = UTCDateTimeField(read_only=True)
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

    def get_pipeline_name(self, obj) -> str:
        name = getattr(obj, "pipeline_name", None)
        return name if name is not None else obj.pipeline.name


class ExecutionDetailSerializer(ExecutionSerializer):
    progress = serializers.SerializerMethodField()
    steps = serializers.SerializerMethodField()
    outputs_by_input = serializers.SerializerMethodField()

    class Meta(ExecutionSerializer.Meta):
        fields = ExecutionSerializer.Meta.fields + ["progress", "steps", "outputs_by_input"]
        read_only_fields = fields

    def _steps(self, obj) -> list[ComponentExecution]:
        """The run's steps, read once for both `progress` and `steps`."""
        loaded = self.context.setdefault("_execution_steps", {})
        if obj.pk not in loaded:
            loaded[obj.pk] = list(execution_steps(obj))
        return loaded[obj.pk]

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, obj) -> dict:
        return execution_progress(obj, steps=self._steps(obj))

    @extend_schema_field(ComponentExecutionSerializer(many=True))
    def get_steps(self, obj) -> list:
        steps = self._steps(obj)
        # Which queues have a live worker: one Redis read, only while some step is still to do.
        unfinished = any(step.status in {"pending", "running"} for step in steps)
        return ComponentExecutionSerializer(steps, many=True,
                                            context={"live_queues": live_queues() if unfinished else None}).data

    @extend_schema_field({"type": "object", "description": "{input file id: {node id: [ids of the node's outputs "
                                                           "derived from that input]}}, from the outputs' lineage.",
                          "additionalProperties": {"type": "object", "additionalProperties": {
                              "type": "array", "items": {"type": "string", "format": "uuid"}}}})
    def get_outputs_by_input(self, obj) -> dict:
        return execution_outputs_by_input(obj, steps=self._steps(obj))


class ExecutionRunSerializer(serializers.Serializer):
    inputs = serializers.ListField(child=serializers.UUIDField(), allow_empty=True, default=list,
                                   help_text="Ids of uploaded files the root nodes receive.")
    parameters = serializers.DictField(child=serializers.DictField(), required=False, default=dict,
                                       help_text="Per-node parameter overrides: {node_id: {name: value}}.")
    on_item_error = serializers.ChoiceField(
        choices=["fail", "continue"], required=False,
        help_text="What a failed item of a map step does: fail the run, or skip its downstream items and go on "
                  "(default: the pipeline's on_item_error, else ON_ITEM_ERROR_DEFAULT).")
    use_cache = serializers.BooleanField(
        required=False, default=True,
        help_text="false: run every item, even one whose result the step cache holds.")


class ExecutionAcceptedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.URLField()
    status = serializers.CharField()
    pipeline = serializers.UUIDField()
    pipeline_version = serializers.IntegerField()
