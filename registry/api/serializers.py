from __future__ import annotations

from rest_framework import serializers

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

    class Meta:
        model = Component
        fields = ["id", "name", "version", "description", "docker_image", "runner", "input_schema", "output_schema",
                  "resource_requirements", "kind", "deterministic", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]
        # (name, version) uniqueness is checked by the service, answering with a field error.
        validators: list = []


class PipelineSerializer(serializers.ModelSerializer):
    definition = serializers.JSONField(help_text="The DAG: {\"nodes\": [...], \"edges\": [...]} (see README).")
    created_by = serializers.UUIDField(source="created_by_id", read_only=True, allow_null=True)
    # Workflow registry labels (set with PUT /pipelines/{id}/labels/).
    category = serializers.CharField(read_only=True)
    tags = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")
    organization = serializers.UUIDField(source="organization_id", read_only=True, allow_null=True)

    class Meta:
        model = Pipeline
        fields = ["id", "name", "description", "definition", "version", "created_by", "created_at", "updated_at",
                  "category", "tags", "organization"]
        read_only_fields = ["id", "version", "created_by", "created_at", "updated_at"]


class PipelineListSerializer(PipelineSerializer):
    class Meta(PipelineSerializer.Meta):
        fields = ["id", "name", "description", "version", "created_by", "created_at", "updated_at",
                  "category", "tags", "organization"]


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
