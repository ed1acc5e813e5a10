"""Components, pipelines (DAGs of components) and the workflow registry (seed 000 and 004)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models

from imageflow.models import TimestampedModel, UUIDModel, choices_check
from imageflow.validators import validate_name


class ComponentRunner(models.TextChoices):
    BUILTIN = "builtin", "Built-in (Pillow, in the worker)"
    CONTAINER = "container", "Container image (external process)"
    HTTP = "http", "HTTP agent/tool (POST to WORKFLOW_HTTP_RUNNER_URL)"
    ONNX = "onnx", "ONNX model (onnxruntime, in the worker)"


class ComponentKind(models.TextChoices):
    # map: one output per input image, so a run fans its inputs out over items (executions.StepItem);
    # merge: all the inputs at once, in one step (today's contract of external components).
    MAP = "map", "Map (one output per input)"
    MERGE = "merge", "Merge (all inputs at once)"


class ParamValueType(models.TextChoices):
    STRING = "string", "string"
    INT = "int", "int"
    FLOAT = "float", "float"
    BOOL = "bool", "bool"
    JSON = "json", "json"



# The category of a carrier pipeline: a workflow version materialized to run it (workflow_apply).
# Reserved: carriers are left out of pipeline lists unless this category is asked for.
CARRIER_PIPELINE_CATEGORY = "workflow-apply"


class Component(TimestampedModel):
    """An image-processing step that a pipeline node names by (name, version)."""

    Runner = ComponentRunner

    name = models.CharField(max_length=255, validators=[validate_name])
    description = models.TextField(blank=True, null=True)
    docker_image = models.CharField(max_length=500)
    version = models.CharField(max_length=50)
    runner = models.CharField(max_length=20, choices=Runner.choices, default=Runner.CONTAINER)
    input_schema = models.JSONField(blank=True, null=True, help_text="JSON Schema of the parameters.")
    output_schema = models.JSONField(blank=True, null=True, help_text="JSON Schema of the output data.")
    resource_requirements = models.JSONField(blank=True, null=True, help_text='e.g. {"cpu": 1, "memory": "512Mi", "gpu": 0}')
    kind = models.CharField(
        max_length=10, choices=ComponentKind.choices, default=ComponentKind.MERGE, db_default=ComponentKind.MERGE,
        help_text="map: one output per input image (a run fans the inputs out over items, any worker takes "
                  "each); merge: the component sees all its inputs at once.")
    deterministic = models.BooleanField(
        default=False, db_default=False,
        help_text="The same inputs and parameters always give the same outputs, so results may be reused "
                  "from the step cache (built-ins are; external components say so themselves).")
    # runner "onnx" (docs/components.md): the model (a File checked with onnx.checker), its
    # signature as read from it, and the pre-/post-processing spec. Set when the component is made.
    model_file = models.ForeignKey(
        "files.File", on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        help_text="The ONNX model of a runner=onnx component (uploaded with POST /api/v1/files/models/).")
    model_signature = models.JSONField(
        blank=True, null=True, help_text="The model's inputs and outputs (name, type, shape), read from the file.")
    model_spec = models.JSONField(
        blank=True, null=True, help_text="Pre- and post-processing of a runner=onnx component: input size, resize, "
                                         "channels, layout, scaling, task (classify, detect, segment), labels.")

    class Meta:
        db_table = "components"
        ordering = ["name", "version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="components_name_version_uniq"),
            choices_check(field="runner", choices=ComponentRunner, name="components_runner_valid"),
            choices_check(field="kind", choices=ComponentKind, name="components_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


class Tag(UUIDModel):
    """A label shared by workflows and pipelines (workflow registry: tags/categories)."""

    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "tags"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Pipeline(TimestampedModel):
    """A DAG of component nodes. `definition` is the canonical JSON graph (see README)."""

    name = models.CharField(max_length=255, validators=[validate_name])
    description = models.TextField(blank=True, null=True)
    definition = models.JSONField()
    version = models.IntegerField(default=1)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        db_column="created_by", related_name="pipelines",
    )
    # Workflow registry: organization scope, category and tags.
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, null=True, blank=True, related_name="pipelines",
    )
    category = models.CharField(max_length=100, blank=True, default="", db_index=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="pipelines")

    class Meta:
        db_table = "pipelines"
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["-updated_at", "id"], name="pipelines_updated_idx"),
            models.Index(fields=["created_by", "-updated_at"], name="pipelines_owner_updated_idx"),
        ]
        constraints = [models.CheckConstraint(condition=models.Q(version__gte=1), name="pipelines_version_positive")]

    def __str__(self) -> str:
        return f"{self.name} (v{self.version})"


class PipelineVersion(UUIDModel):
    """An immutable snapshot of a pipeline's definition at one version."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="versions")
    version = models.IntegerField()
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, null=True)
    definition = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        db_column="created_by", related_name="+",
    )

    class Meta:
        db_table = "pipeline_versions"
        ordering = ["pipeline", "-version"]
        constraints = [models.UniqueConstraint(fields=["pipeline", "version"], name="pipeline_versions_uniq")]

    def __str__(self) -> str:
        return f"{self.pipeline_id} v{self.version}"


class Workflow(TimestampedModel):
    """A graph of agent/tool steps generated from natural language (seed 004)."""

    name = models.CharField(max_length=255, validators=[validate_name])
    version = models.IntegerField(default=1)
    description = models.TextField(blank=True, null=True)
    metadata = models.JSONField(blank=True, null=True, help_text="Origin, purpose and other free-form facts.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        db_column="created_by", related_name="workflows",
    )
    # Workflow registry (registry/workflow_services.py keeps these in step with the graph).
    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.PROTECT, null=True, blank=True, related_name="workflows",
    )
    category = models.CharField(max_length=100, blank=True, default="", db_index=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="workflows")
    request_id = models.CharField(max_length=255, blank=True, null=True,
                                  help_text="Client request id: a repeated creation returns this workflow.")
    search_vector = SearchVectorField(null=True, editable=False)
    similarity_text = models.TextField(blank=True, default="", editable=False)
    structure_features = ArrayField(models.CharField(max_length=300), default=list, blank=True, editable=False)
    name_tokens = ArrayField(models.CharField(max_length=100), default=list, blank=True, editable=False)
    read_count = models.IntegerField(default=0, editable=False)
    apply_count = models.IntegerField(default=0, editable=False)
    reuse_count = models.IntegerField(default=0, editable=False)

    class Meta:
        db_table = "workflow"
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["-updated_at", "id"], name="workflow_updated_idx"),
            GinIndex(fields=["search_vector"], name="workflow_search_gin"),
            # Candidates of the similar-workflow lookup (registry/similarity.py).
            GinIndex(fields=["name_tokens"], name="workflow_name_tokens_gin"),
            GinIndex(fields=["structure_features"], name="workflow_features_gin"),
            models.Index(fields=["organization", "-updated_at"], name="workflow_org_updated_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(version__gte=1), name="workflow_version_positive"),
            models.UniqueConstraint(fields=["created_by", "request_id"], condition=models.Q(request_id__isnull=False),
                                    name="workflow_request_id_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.name} (v{self.version})"


class WorkflowNode(UUIDModel):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="nodes")
    node_type = models.CharField(max_length=100, help_text="agent, tool, component, ...")
    key = models.CharField(max_length=100, help_text="Stable id of the node within its workflow (edges, diffs).")
    name = models.CharField(max_length=255, validators=[validate_name])
    parameters = models.JSONField(blank=True, null=True)
    order_index = models.IntegerField(default=0)

    class Meta:
        db_table = "workflow_nodes"
        ordering = ["workflow", "order_index"]
        indexes = [models.Index(fields=["workflow", "order_index"], name="workflow_nodes_order_idx")]
        constraints = [models.UniqueConstraint(fields=["workflow", "key"], name="workflow_nodes_key_uniq")]

    def save(self, *args, **kwargs):
        # Nodes added outside the services (e.g. an admin inline) still get a stable key.
        if not self.key:
            self.key = f"n-{self.id.hex[:12]}"
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return f"{self.name} [{self.node_type}]"


class WorkflowEdge(UUIDModel):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="edges")
    parent_node = models.ForeignKey(WorkflowNode, on_delete=models.CASCADE, related_name="child_edges")
    child_node = models.ForeignKey(WorkflowNode, on_delete=models.CASCADE, related_name="parent_edges")
    handoff_data = models.JSONField(blank=True, null=True)

    class Meta:
        db_table = "workflow_edges"
        constraints = [
            models.UniqueConstraint(fields=["parent_node", "child_node"], name="workflow_edges_uniq"),
            models.CheckConstraint(condition=~models.Q(parent_node=models.F("child_node")), name="workflow_edges_no_self_loop"),
        ]

    def __str__(self) -> str:
        return f"{self.parent_node_id} → {self.child_node_id}"


class WorkflowParam(UUIDModel):
    ValueType = ParamValueType

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="params")
    key = models.CharField(max_length=100)
    value_type = models.CharField(max_length=50, choices=ValueType.choices, default=ValueType.STRING)
    required = models.BooleanField(default=False)
    default_value = models.TextField(blank=True, null=True)
    metadata = models.JSONField(blank=True, null=True)

    class Meta:
        db_table = "workflow_params"
        ordering = ["workflow", "key"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "key"], name="workflow_params_key_uniq"),
            choices_check(field="value_type", choices=ParamValueType, name="workflow_params_value_type_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.key}: {self.value_type}"


class WorkflowVersion(UUIDModel):
    """An immutable snapshot of a workflow (metadata, nodes, edges, params) at one version."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    version = models.IntegerField()
    snapshot = models.JSONField(help_text="The workflow document (registry/interchange.py format).")
    change = models.CharField(max_length=20, default="update", help_text="create, update, restore, import")
    restored_from = models.IntegerField(blank=True, null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        db_column="created_by", related_name="+",
    )

    class Meta:
        db_table = "workflow_versions"
        ordering = ["workflow", "-version"]
        constraints = [models.UniqueConstraint(fields=["workflow", "version"], name="workflow_versions_uniq")]

    def __str__(self) -> str:
        return f"{self.workflow_id} v{self.version}"


class WorkflowAccessKind(models.TextChoices):
    READ = "read", "Read"
    EXPORT = "export", "Exported"
    APPLY = "apply", "Applied"
    REUSE = "reuse", "Reused"


class WorkflowAccess(UUIDModel):
    """Access log: who fetched, exported, applied or reused which workflow, and when."""

    Kind = WorkflowAccessKind

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="accesses")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                             related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    version = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "workflow_access_log"
        ordering = ["-created_at"]
        constraints = [choices_check(field="kind", choices=WorkflowAccessKind, name="workflow_access_kind_valid")]
        indexes = [
            models.Index(fields=["workflow", "kind"], name="workflow_access_wf_kind_idx"),
            models.Index(fields=["-created_at"], name="workflow_access_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.workflow_id} by {self.user_id}"
