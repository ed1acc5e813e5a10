"""Components, pipelines (DAGs of components) and the workflow registry (seed 000 and 004)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from imageflow.models import TimestampedModel, UUIDModel, choices_check


class ComponentRunner(models.TextChoices):
    BUILTIN = "builtin", "Built-in (Pillow, in the worker)"
    CONTAINER = "container", "Container image (external process)"


class ParamValueType(models.TextChoices):
    STRING = "string", "string"
    INT = "int", "int"
    FLOAT = "float", "float"
    BOOL = "bool", "bool"
    JSON = "json", "json"


class Component(TimestampedModel):
    """An image-processing step that a pipeline node names by (name, version)."""

    Runner = ComponentRunner

    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, null=True)
    docker_image = models.CharField(max_length=500)
    version = models.CharField(max_length=50)
    runner = models.CharField(max_length=20, choices=Runner.choices, default=Runner.CONTAINER)
    input_schema = models.JSONField(blank=True, null=True, help_text="JSON Schema of the parameters.")
    output_schema = models.JSONField(blank=True, null=True, help_text="JSON Schema of the output data.")
    resource_requirements = models.JSONField(blank=True, null=True, help_text='e.g. {"cpu": 1, "memory": "512Mi", "gpu": 0}')

    class Meta:
        db_table = "components"
        ordering = ["name", "version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="components_name_version_uniq"),
            choices_check(field="runner", choices=ComponentRunner, name="components_runner_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


class Pipeline(TimestampedModel):
    """A DAG of component nodes. `definition` is the canonical JSON graph (see README)."""

    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, null=True)
    definition = models.JSONField()
    version = models.IntegerField(default=1)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        db_column="created_by", related_name="pipelines",
    )

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

    name = models.CharField(max_length=255)
    version = models.IntegerField(default=1)
    description = models.TextField(blank=True, null=True)
    metadata = models.JSONField(blank=True, null=True, help_text="Origin, purpose and other free-form facts.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        db_column="created_by", related_name="workflows",
    )

    class Meta:
        db_table = "workflow"
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["-updated_at", "id"], name="workflow_updated_idx")]
        constraints = [models.CheckConstraint(condition=models.Q(version__gte=1), name="workflow_version_positive")]

    def __str__(self) -> str:
        return f"{self.name} (v{self.version})"


class WorkflowNode(UUIDModel):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="nodes")
    node_type = models.CharField(max_length=100, help_text="agent, tool, component, ...")
    name = models.CharField(max_length=255)
    parameters = models.JSONField(blank=True, null=True)
    order_index = models.IntegerField(default=0)

    class Meta:
        db_table = "workflow_nodes"
        ordering = ["workflow", "order_index"]
        indexes = [models.Index(fields=["workflow", "order_index"], name="workflow_nodes_order_idx")]

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
