"""registry.dag.validate_definition: what is accepted, and that each error names node and field."""

import pytest

from registry.dag import DagValidationError, merge_parameters, validate_definition
from tests.factories import ComponentFactory

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["width"], "properties": {
    "width": {"type": "integer", "minimum": 1},
    "keep_aspect": {"type": "boolean", "default": True},
    "options": {"type": "object", "properties": {"quality": {"type": "integer", "default": 85}}, "default": {}},
}}


@pytest.fixture
def components(db):
    return {"resize": ComponentFactory(name="resize", version="1.0.0", input_schema=SCHEMA),
            "gray": ComponentFactory(name="gray", version="1.0.0", input_schema={"type": "object"})}


def n(node_id, component="gray", **params):
    return {"id": node_id, "component": {"name": component, "version": "1.0.0"}, "parameters": params}


def errors_of(definition, **kwargs):
    with pytest.raises(DagValidationError) as caught:
        validate_definition(definition, **kwargs)
    return caught.value.errors


def test_valid_diamond_resolves_components_order_and_defaults(components, django_assert_num_queries):
    # given a diamond whose resize node omits optional parameters
    definition = {"nodes": [n("d"), n("b"), n("a", "resize", width=10), n("c")],
                  "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": "c"}, {"from": "b", "to": "d"},
                            {"from": "c", "to": "d", "outputs": [0]}]}
    # when it is validated (components fetched in one query)
    with django_assert_num_queries(1):
        dag = validate_definition(definition)
    # then the order respects the edges, defaults are applied and the maps are right
    assert dag.order.index("a") < dag.order.index("b") < dag.order.index("d")
    assert dag.order.index("c") < dag.order.index("d")
    assert dag.nodes["a"].parameters == {"width": 10, "keep_aspect": True, "options": {"quality": 85}}
    assert dag.nodes["a"].component == components["resize"]
    assert dag.parents["d"] == ["b", "c"] and dag.children["a"] == ["b", "c"]
    assert dag.roots == ["a"] and dag.leaves == ["d"]
    assert [e.as_dict() for e in dag.incoming["d"]] == [{"from": "b", "to": "d"}, {"from": "c", "to": "d", "outputs": [0]}]


def test_cycle_is_named(components):
    errors = errors_of({"nodes": [n("a"), n("b"), n("c"), n("root")],
                        "edges": [{"from": "root", "to": "a"}, {"from": "a", "to": "b"}, {"from": "b", "to": "c"},
                                  {"from": "c", "to": "a"}]})
    assert errors == [{"node": "a", "field": "edges", "message": "cycle: a -> b -> c -> a."}]


def test_self_loop_is_a_cycle(components):
    errors = errors_of({"nodes": [n("a")], "edges": [{"from": "a", "to": "a"}]})
    assert errors == [{"node": "a", "field": "edges[0]", "message": "cycle: a -> a."}]


def test_unknown_component_names_node_and_field(components):
    errors = errors_of({"nodes": [n("a"), {"id": "b", "component": {"name": "gray", "version": "9.9"}}]})
    assert errors == [{"node": "b", "field": "nodes[1].component", "message": "unknown component gray:9.9."}]


def test_dangling_edge(components):
    errors = errors_of({"nodes": [n("a")], "edges": [{"from": "a", "to": "ghost"}]})
    assert errors[0]["field"] == "edges[0]" and "ghost" in errors[0]["message"] and errors[0]["node"] == "a"


def test_duplicate_node_id(components):
    errors = errors_of({"nodes": [n("a"), n("a")]})
    assert errors == [{"node": "a", "field": "nodes[1].id", "message": "duplicate node id 'a' (also nodes[0])."}]


def test_bad_parameters_name_node_and_field(components):
    errors = errors_of({"nodes": [n("big", "resize", width=0), n("extra", "resize", width=5, colour="red"),
                                  n("missing", "resize"), n("deep", "resize", width=3, options={"quality": "x"})]})
    by_field = {e["field"]: e for e in errors}
    assert by_field["nodes[0].parameters.width"]["node"] == "big"
    assert "minimum of 1" in by_field["nodes[0].parameters.width"]["message"]
    assert by_field["nodes[1].parameters.colour"]["node"] == "extra"
    assert by_field["nodes[2].parameters.width"]["message"] == "'width' is a required property"
    assert by_field["nodes[3].parameters.options.quality"]["node"] == "deep"


def test_max_nodes_from_setting_and_argument(components, settings):
    settings.PIPELINE_MAX_NODES = 3
    definition = {"nodes": [n(f"n{i}") for i in range(4)]}
    assert errors_of(definition)[0]["message"] == "4 nodes exceed the maximum of 3."
    assert len(validate_definition(definition, max_nodes=4).order) == 4


@pytest.mark.parametrize("definition, field", [
    ([], "definition"),
    ({"nodes": "x"}, "nodes"),
    ({"nodes": []}, "nodes"),
    ({"nodes": [n("a")], "edges": {}}, "edges"),
    ({"nodes": [{"id": "", "component": {"name": "gray", "version": "1.0.0"}}]}, "nodes[0].id"),
    ({"nodes": [{"id": "a", "component": "gray"}]}, "nodes[0].component"),
    ({"nodes": [{"id": "a", "component": {"name": "gray", "version": "1.0.0"}, "parameters": [1]}]}, "nodes[0].parameters"),
    ({"nodes": [n("a"), n("b")], "edges": [{"from": "a", "to": "b", "outputs": [-1]}]}, "edges[0].outputs"),
    ({"nodes": [n("a"), n("b")], "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": "b"}]}, "edges[1]"),
])
def test_malformed_definitions_are_refused_with_the_field(components, definition, field):
    assert field in [e["field"] for e in errors_of(definition)]


def test_error_string_is_a_readable_summary(components):
    with pytest.raises(DagValidationError) as caught:
        validate_definition({"nodes": [n("a"), n("a")]})
    assert str(caught.value) == "Invalid pipeline definition: nodes[1].id: duplicate node id 'a' (also nodes[0])."


def test_all_errors_are_reported_together(components):
    errors = errors_of({"nodes": [n("a", "nope"), n("b", "resize")], "edges": [{"from": "a", "to": "zzz"}]})
    assert {e["node"] for e in errors} == {"a", "b"} and len(errors) == 3


def test_merge_parameters_overrides_and_rejects_unknown_nodes(components):
    definition = {"nodes": [n("a", "resize", width=10)]}
    merged = merge_parameters(definition, {"a": {"width": 20}})
    assert merged["nodes"][0]["parameters"] == {"width": 20} and definition["nodes"][0]["parameters"] == {"width": 10}
    with pytest.raises(DagValidationError) as caught:
        merge_parameters(definition, {"zz": {}})
    assert caught.value.errors[0]["field"] == "parameters.zz"


def test_large_dag_is_validated(components):
    size = 5000
    nodes = [n(f"n{i}", "resize", width=i + 1) for i in range(size)]
    edges = [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(size - 1)]
    dag = validate_definition({"nodes": nodes, "edges": edges}, max_nodes=size)
    assert dag.order[0] == "n0" and dag.order[-1] == f"n{size - 1}" and len(dag.nodes) == size
