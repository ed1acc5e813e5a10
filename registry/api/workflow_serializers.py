"""Serializers of the workflow registry API. They describe the bodies (OpenAPI) and check their
shape; the graph itself is validated by `registry.workflow_document.clean_document`."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from imageflow.audit.models import AuditEntry
from imageflow.orgs.models import Organization
from imageflow.validators import validate_name
from registry.models import ParamValueType, Workflow, WorkflowVersion


# An organization id that does not exist reads as one the user is not a member of (the service's
# check): "not found or not yours" is one answer.
ORGANIZATION_ERRORS = {"does_not_exist": "No such organization: {pk_value}."}


class WorkflowNodeSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=100, required=False,
                                help_text="Stable id within the workflow; edges name nodes by it. Default: from the name.")
    node_type = serializers.CharField(max_length=100, help_text="agent, tool, a component name, ...")
    name = serializers.CharField(max_length=255, validators=[validate_name])
    parameters = serializers.JSONField(required=False, allow_null=True)
    order_index = serializers.IntegerField(required=False, min_value=-(2**31 - 1), max_value=2**31 - 1)


class WorkflowEdgeSerializer(serializers.Serializer):
    parent = serializers.CharField(max_length=100, help_text="key of the parent node")
    child = serializers.CharField(max_length=100, help_text="key of the child node")
    handoff_data = serializers.JSONField(required=False, allow_null=True)


class WorkflowParamSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=100)
    value_type = serializers.ChoiceField(choices=ParamValueType.choices, default=ParamValueType.STRING)
    required = serializers.BooleanField(default=False)
    default_value = serializers.JSONField(required=False, allow_null=True,
                                          help_text="Stored as text; must parse as value_type (5 or \"5\" for int).")
    metadata = serializers.JSONField(required=False, allow_null=True)


class WorkflowDocumentSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=255, validators=[validate_name])
    description = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    category = serializers.CharField(required=False, allow_blank=True, max_length=100)
    tags = serializers.ListField(child=serializers.CharField(max_length=100), required=False)
    metadata = serializers.JSONField(required=False, allow_null=True)
    nodes = WorkflowNodeSerializer(many=True, required=False)
    edges = WorkflowEdgeSerializer(many=True, required=False)
    params = WorkflowParamSerializer(many=True, required=False)


class WorkflowWriteSerializer(WorkflowDocumentSerializer):
    organization = serializers.PrimaryKeyRelatedField(queryset=Organization.objects.all(), required=False,
                                                      allow_null=True, error_messages=ORGANIZATION_ERRORS)
    request_id = serializers.CharField(required=False, max_length=255,
                                       help_text="Idempotency: the same request_id from the same user returns "
                                                 "the workflow created the first time.")
    version = serializers.IntegerField(required=False, min_value=1,
                                       help_text="Updates: the version this change is based on (or If-Match).")


class WorkflowPatchSerializer(WorkflowWriteSerializer):
    name = serializers.CharField(max_length=255, required=False, validators=[validate_name])


class UsageSerializer(serializers.Serializer):
    read_count = serializers.IntegerField()
    apply_count = serializers.IntegerField()
    reuse_count = serializers.IntegerField()


class WorkflowListSerializer(serializers.ModelSerializer):
    tags = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)
    rank = serializers.SerializerMethodField(help_text="Search rank with ?search= (else null).")

    class Meta:
        model = Workflow
        fields = ("id", "name", "description", "category", "tags", "version", "organization", "created_by",
                  "read_count", "apply_count", "reuse_count", "created_at", "updated_at", "rank")

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_rank(self, obj) -> float | None:
        rank = getattr(obj, "rank", None)
        return float(rank) if rank is not None else None


class WorkflowSerializer(serializers.Serializer):
    """A workflow with its nodes, edges and params."""

    id = serializers.UUIDField()
    version = serializers.IntegerField()
    organization = serializers.UUIDField(allow_null=True)
    created_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    read_count = serializers.IntegerField()
    apply_count = serializers.IntegerField()
    reuse_count = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField(allow_null=True)
    category = serializers.CharField(allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField())
    metadata = serializers.JSONField(allow_null=True)
    nodes = WorkflowNodeSerializer(many=True)
    edges = WorkflowEdgeSerializer(many=True)
    params = WorkflowParamSerializer(many=True)


class WorkflowVersionListSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = WorkflowVersion
        fields = ("version", "change", "restored_from", "created_by", "created_at")


class WorkflowVersionSerializer(WorkflowVersionListSerializer):
    snapshot = WorkflowDocumentSerializer(read_only=True)

    class Meta(WorkflowVersionListSerializer.Meta):
        fields = WorkflowVersionListSerializer.Meta.fields + ("snapshot",)


class ChangeSetSerializer(serializers.Serializer):
    added = serializers.ListField(child=serializers.JSONField())
    removed = serializers.ListField(child=serializers.JSONField())
    changed = serializers.ListField(child=serializers.JSONField(),
                                    help_text='[{"id": <key>, "fields": {<field>: {"from": ..., "to": ...}}}]')


class WorkflowDiffSerializer(serializers.Serializer):
    from_version = serializers.IntegerField()
    to_version = serializers.IntegerField()
    identical = serializers.BooleanField()
    fields = serializers.DictField(child=serializers.JSONField())
    nodes = ChangeSetSerializer()
    edges = ChangeSetSerializer()
    params = ChangeSetSerializer()


class PipelineDiffSerializer(serializers.Serializer):
    from_version = serializers.IntegerField()
    to_version = serializers.IntegerField()
    identical = serializers.BooleanField()
    fields = serializers.DictField(child=serializers.JSONField())
    nodes = ChangeSetSerializer()
    edges = ChangeSetSerializer()


class RestoreSerializer(serializers.Serializer):
    version = serializers.IntegerField(required=False, min_value=1,
                                       help_text="Optional: the current version this restore is based on.")


class SimilarRequestSerializer(serializers.Serializer):
    workflow = serializers.UUIDField(required=False, help_text="A stored workflow to compare with.")
    document = WorkflowDocumentSerializer(required=False, help_text="A draft graph (not stored).")
    text = serializers.CharField(required=False, max_length=2000, help_text="Plain text (e.g. the user's request).")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=10)

    def validate(self, attrs):
        given = [k for k in ("workflow", "document", "text") if attrs.get(k)]
        if len(given) != 1:
            raise serializers.ValidationError("Give exactly one of workflow, document or text.")
        return attrs


class SimilarWorkflowSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    version = serializers.IntegerField()
    score = serializers.FloatField()
    text_score = serializers.FloatField()
    structure_score = serializers.FloatField()


class CloneSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, max_length=255, validators=[validate_name])


class ImportSerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=[("imageflow", "imageflow"), ("n8n", "n8n")], default="imageflow")
    document = serializers.JSONField(help_text="The document: a JSON object, or JSON/YAML text.")
    request_id = serializers.CharField(required=False, max_length=255)
    organization = serializers.PrimaryKeyRelatedField(queryset=Organization.objects.all(), required=False,
                                                      allow_null=True, error_messages=ORGANIZATION_ERRORS)


class ImportResultSerializer(serializers.Serializer):
    workflow = WorkflowSerializer()
    created = serializers.BooleanField()
    unmapped = serializers.ListField(child=serializers.JSONField(),
                                     help_text="n8n: what could not be mapped (also kept in metadata).")


class ApplySerializer(serializers.Serializer):
    params = serializers.DictField(child=serializers.JSONField(allow_null=True), required=False, default=dict,
                                   help_text="Values of the workflow's params, by key.")
    inputs = serializers.ListField(child=serializers.UUIDField(), required=False, default=list,
                                   help_text="Input file ids for nodes that are image components.")
    idempotency_key = serializers.CharField(required=False, max_length=255)


class ApplyResultSerializer(serializers.Serializer):
    execution = serializers.UUIDField()
    url = serializers.CharField()
    status = serializers.CharField()
    workflow_version = serializers.IntegerField()
    params = serializers.DictField(child=serializers.JSONField(allow_null=True))


class WorkflowUsageSerializer(serializers.Serializer):
    reads = serializers.IntegerField()
    exports = serializers.IntegerField()
    applies = serializers.IntegerField()
    reuses = serializers.IntegerField()
    distinct_users = serializers.IntegerField()
    last_access = serializers.DateTimeField(allow_null=True)


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = ("id", "created_at", "actor", "actor_username", "action", "source", "object_type", "object_id",
                  "object_repr", "before", "after", "extra")


class OrganizationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ("id", "name", "slug", "created_at")


class LabelsSerializer(serializers.Serializer):
    category = serializers.CharField(required=False, allow_blank=True, max_length=100)
    tags = serializers.ListField(child=serializers.CharField(max_length=100), required=False)
    organization = serializers.PrimaryKeyRelatedField(queryset=Organization.objects.all(), required=False,
                                                      allow_null=True, error_messages=ORGANIZATION_ERRORS)
