"""The database itself refuses bad rows, whatever path writes them."""

import time

import pytest
from django.db import IntegrityError, transaction

from executions.models import ComponentExecution, PipelineExecution
from registry.models import Component, Pipeline, WorkflowParam
from tests.factories import (
    ComponentExecutionFactory,
    ComponentFactory,
    PipelineExecutionFactory,
    PipelineFactory,
    WorkflowNodeFactory,
    WorkflowParamFactory,
)

pytestmark = pytest.mark.django_db


def test_execution_status_outside_choices_is_refused_by_the_database():
    execution = PipelineExecutionFactory()
    with pytest.raises(IntegrityError, match="pipeline_executions_status_valid"), transaction.atomic():
        PipelineExecution.objects.filter(pk=execution.pk).update(status="exploded")


@pytest.mark.parametrize("status", ["pending", "running", "completed", "failed", "cancelled"])
def test_every_execution_status_is_accepted(status):
    execution = PipelineExecutionFactory()
    PipelineExecution.objects.filter(pk=execution.pk).update(status=status)
    execution.refresh_from_db()
    assert execution.status == status


def test_step_status_outside_choices_is_refused_and_skipped_is_accepted():
    step = ComponentExecutionFactory()
    ComponentExecution.objects.filter(pk=step.pk).update(status="skipped")
    with pytest.raises(IntegrityError, match="component_executions_status_valid"), transaction.atomic():
        ComponentExecution.objects.filter(pk=step.pk).update(status="done")
    step.refresh_from_db()
    assert step.status == "skipped"


def test_duplicate_component_version_is_refused_but_a_new_version_is_not():
    ComponentFactory(name="resize", version="1.0.0")
    with pytest.raises(IntegrityError, match="components_name_version_uniq"), transaction.atomic():
        ComponentFactory(name="resize", version="1.0.0")
    ComponentFactory(name="resize", version="1.1.0")
    assert Component.objects.filter(name="resize").count() == 2


def test_param_value_type_outside_choices_is_refused():
    param = WorkflowParamFactory()
    with pytest.raises(IntegrityError, match="workflow_params_value_type_valid"), transaction.atomic():
        WorkflowParam.objects.filter(pk=param.pk).update(value_type="decimal")


def test_edge_from_a_node_to_itself_is_refused():
    node = WorkflowNodeFactory()
    from registry.models import WorkflowEdge

    with pytest.raises(IntegrityError, match="workflow_edges_no_self_loop"), transaction.atomic():
        WorkflowEdge.objects.create(workflow=node.workflow, parent_node=node, child_node=node)


def test_one_step_per_node_of_an_execution():
    step = ComponentExecutionFactory(node_id="resize")
    with pytest.raises(IntegrityError, match="component_executions_node_uniq"), transaction.atomic():
        ComponentExecutionFactory(execution=step.execution, node_id="resize")


def test_updated_at_is_maintained_even_by_a_queryset_update():
    pipeline = PipelineFactory()
    before = pipeline.updated_at
    time.sleep(0.01)
    Pipeline.objects.filter(pk=pipeline.pk).update(name="renamed")
    pipeline.refresh_from_db()
    assert pipeline.updated_at > before
    assert pipeline.created_at <= before
