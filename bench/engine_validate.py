"""DAG validation at scale: registry.dag.validate_definition on a layered DAG of N nodes
(each node's parameters checked against its component's JSON Schema, defaults applied;
components looked up in one query; cycle check). Baseline measured in the same run: the bare
jsonschema validation of the same N parameter objects (the part no implementation can skip).
Target: 5,000 nodes well under a second.

    DATABASE_NAME=imageflow_engine .venv/bin/python bench/engine_validate.py            # 5,000 nodes
    DATABASE_NAME=imageflow_engine .venv/bin/python bench/engine_validate.py --nodes 1000 --quick
"""

from __future__ import annotations

import argparse
import statistics
import time

from engine_common import django_setup

OPERATIONS = [("resize", {"width": 320}), ("grayscale", {}), ("blur", {"radius": 1.5}), ("sharpen", {}),
              ("rotate", {"angle": 45}), ("thumbnail", {"size": 64}), ("threshold", {"level": 100})]


def build(nodes: int, width: int = 50) -> dict:
    """Layers of `width` nodes; each node after the first layer has two parents in the layer above."""
    definition: dict = {"nodes": [], "edges": []}
    for index in range(nodes):
        name, params = OPERATIONS[index % len(OPERATIONS)]
        definition["nodes"].append({"id": f"n{index}", "component": {"name": name, "version": "1.0.0"},
                                    "parameters": dict(params)})
        if index >= width:
            layer_start = (index // width - 1) * width
            for parent in {layer_start + (index % width), layer_start + ((index + 1) % width)}:
                definition["edges"].append({"from": f"n{parent}", "to": f"n{index}"})
    return definition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    django_setup()

    from jsonschema import Draft202012Validator

    from executions.catalogue import builtin_components_register
    from registry.dag import validate_definition
    from registry.models import Component

    builtin_components_register()
    definition = build(args.nodes)
    validate_definition(definition, max_nodes=args.nodes)  # warm-up

    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        dag = validate_definition(definition, max_nodes=args.nodes)
        timings.append(time.perf_counter() - started)

    schemas = {c.name: Draft202012Validator(c.input_schema)
               for c in Component.objects.filter(name__in=[name for name, _ in OPERATIONS], version="1.0.0")}
    baseline = []
    for _ in range(rounds):
        started = time.perf_counter()
        for node in definition["nodes"]:
            list(schemas[node["component"]["name"]].iter_errors(node["parameters"]))
        baseline.append(time.perf_counter() - started)

    full, bare = statistics.median(timings), statistics.median(baseline)
    print(f"DAG of {args.nodes} nodes, {len(definition['edges'])} edges, {len(dag.order)} in topological order; "
          f"{rounds} rounds")
    print(f"  validate_definition           : {full * 1000:8.1f} ms (median; max {max(timings) * 1000:.1f})   target < 1000 ms")
    print(f"  bare jsonschema of the params : {bare * 1000:8.1f} ms (median)")
    print(f"  ratio                         : {full / bare:5.2f}x")


if __name__ == "__main__":
    main()
