"""imageflow.api.serializers: model introspection once per class, fields still per instance."""

from __future__ import annotations

from executions.api.serializers import ComponentExecutionSerializer, ExecutionDetailSerializer


def test_two_serializers_of_one_class_never_share_a_bound_field():
    # given two serializers of a class whose fields were introspected once
    first, second = ExecutionDetailSerializer(), ExecutionDetailSerializer()
    # then each has the same fields, each bound to its own parent
    assert list(first.fields) == list(second.fields)
    assert "status" in first.fields and "pipeline_version" in first.fields  # introspected, not declared
    assert first.fields["status"] is not second.fields["status"]
    assert first.fields["status"].parent is first and second.fields["status"].parent is second
    assert "_introspected_fields" in ExecutionDetailSerializer.__dict__


def test_a_subclass_introspects_its_own_fields():
    # the detail serializer adds progress, steps and outputs_by_input to the list serializer's fields
    from executions.api.serializers import ExecutionSerializer

    added = set(ExecutionDetailSerializer().fields) - set(ExecutionSerializer().fields)
    assert added == {"progress", "steps", "outputs_by_input"}
    assert "node_id" in ComponentExecutionSerializer().fields
