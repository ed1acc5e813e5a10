from __future__ import annotations

from rest_framework import serializers

from files.models import File
from imageflow.validators import validate_name
from registry.models import Component, ComponentKind, Pipeline, PipelineVersion


class ComponentSerializer(serializers.ModelSerializer):
    input_schema = serializers.JSONField(required=False, allow_null=True, help_text="JSON Schema of the parameters.")
    output_schema = serializers.JSONField(required=False, allow_null=True, help_text="JSON Schema of the output data.")
    resource_requirements = serializers.JSONField(required=False, allow_null=True,
                                                  help_text='e.g. {"cpu": 1, "memory": "512Mi", "gpu": 0}')

    kind = serializers.ChoiceField(
        choices=ComponentKind.choices, required=False,
        help_text="map: one output per input image (a run fans the inputs out over items); merge (the default): "
                  "all inputs at once. Set when the component is created; a change is a 400 (create a new "
                  "version), the same value is accepted.")
    deterministic = serializers.BooleanField(
        required=False,
        help_text="The same inputs and parameters always give the same outputs, so results may be reused from "
                  "the step cache (default false). Set when the component is created, like kind.")

    docker_image = serializers.CharField(
        required=False, allow_blank=True, max_length=500,
        help_text="The container image (runner container); an onnx component gets \"onnx:<model checksum>\".")
    model_file = serializers.PrimaryKeyRelatedField(
        queryset=File.objects.all(), required=False, allow_null=True,
        help_text="runner onnx: the model, uploaded with POST /api/v1/files/models/. Set when the component is "
                  "created, like kind.")
    model_spec = serializers.JSONField(
        required=False, allow_null=True,
        help_text="runner onnx: pre- and post-processing (task, input size, resize, channels, layout, scaling, "
                  "labels, thresholds; docs/components.md). Stored with its defaults filled in.")
    model_signature = serializers.JSONField(read_only=True, help_text="The model's inputs and outputs, read from it.")

    class Meta:
        model = Component
        fields = ["id", "name", "version", "description", "docker_image", "runner", "input_schema", "output_schema",
                  "resource_requirements", "kind", "deterministic", "model_file", "model_spec", "model_signature",
                  "created_at", "updated_at"]
        read_only_fields = ["id", "model_signature", "created_at", "updated_at"]
        # (name, version) uniqueness is checked by the service, answering with a field error.
        validators: list = []


class OutdatedComponentSerializer(serializers.Serializer):
    node = serializers.CharField(help_text="The node's id.")
    name = serializers.CharField(help_text="The component's name.")
    version = serializers.CharField(help_text="The version the node names.")
    latest = serializers.CharField(help_text="The newest version of that component.")


class OutdatedComponentsField(serializers.ListField):
    """A pipeline's outdated nodes (registry.selectors.pipeline_outdated_components); for a page of
    pipelines the components' versions are read once."""

    child = OutdatedComponentSerializer()

    def __init__(self, **kwargs):
        super().__init__(read_only=True, source="*", **kwargs)

    def to_representation(self, pipeline):
        from registry.selectors import component_latest_versions, pipeline_outdated_components

        if self.parent is None or self.parent.parent is None:  # one pipeline: its components' versions only
            return super().to_representation(pipeline_outdated_components(pipeline))
        latest = self.context.get("_latest_versions")
        if latest is None:
            latest = self.context["_latest_versions"] = component_latest_versions()
        return super().to_representation(pipeline_outdated_components(pipeline, latest=latest))


class PipelineSerializer(serializers.ModelSerializer):
    definition = serializers.JSONField(help_text="The DAG: {\"nodes\": [...], \"edges\": [...]} (see README).")
    outdated_components = OutdatedComponentsField(
        help_text="Nodes naming a component version of which a newer one exists (a pipeline keeps the version "
                  "it was built with until its definition names another).")
    created_by = serializers.UUIDField(source="created_by_id", read_only=True, allow_null=True)
    # Workflow registry labels (set with PUT /pipelines/{id}/labels/).
    category = serializers.CharField(read_only=True)
    tags = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")
    organization = serializers.UUIDField(source="organization_id", read_only=True, allow_null=True)

    class Meta:
        model = Pipeline
        fields = ["id", "name", "description", "definition", "version", "created_by", "created_at", "updated_at",
                  "category", "tags", "organization", "outdated_components"]
        read_only_fields = ["id", "version", "created_by", "created_at", "updated_at"]


class PipelineListSerializer(PipelineSerializer):
    class Meta(PipelineSerializer.Meta):
        fields = ["id", "name", "description", "version", "created_by", "created_at", "updated_at",
                  "category", "tags", "organization", "outdated_components"]


class PipelineVersionSerializer(serializers.ModelSerializer):
    definition = serializers.JSONField()
    created_by = serializers.UUIDField(source="created_by_id", read_only=True, allow_null=True)

    class Meta:
        model = PipelineVersion
        fields = ["version", "name", "description", "definition", "created_by", "created_at"]
        read_only_fields = fields


class PipelineCloneSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, max_length=255, validators=[validate_name],
                                 help_text="Name of the copy (default: '<name> (copy)').")
