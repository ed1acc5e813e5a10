"""Lineage recorded by the engine: a real two-process Celery worker on the real broker, real
images in the real object store, answered by the API."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from executions.models import ExecutionStatus, FileLineage
from executions.services import execution_start
from tests.executions.conftest import node, wait_finished

pytestmark = [pytest.mark.worker, pytest.mark.timeout(180)]


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _by_node(execution) -> dict[str, list[str]]:
    return {s.node_id: s.output_data["files"] for s in execution.steps.all()}


def test_chain_and_merge_outputs_record_their_inputs(process_worker, builtins, pipeline_of, jpeg_file, user):
    # given a 2-step chain (resize -> grayscale) whose outputs are merged side by side, on two images
    pipeline = pipeline_of([node("resize", "resize", width=80), node("gray", "grayscale"),
                            node("board", "side_by_side")],
                           [{"from": "resize", "to": "gray"}, {"from": "gray", "to": "board"}])
    first, second = jpeg_file(320, 240), jpeg_file(320, 240, color=(10, 10, 240))
    # when it runs on a real worker
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[first.id, second.id], user=user))
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    outputs = _by_node(execution)
    steps = {s.node_id: s for s in execution.steps.all()}
    api = _client(user)

    # then each final output of the chain has exactly its own input as its ancestor at depth 2,
    # through its own resize output, each edge naming the step that made the file
    for index, source in enumerate([first, second]):
        gray = outputs["gray"][index]
        body = api.get(f"/api/v1/files/{gray}/lineage/").json()
        assert body["file"]["id"] == gray
        assert body["derived_from"] == [outputs["resize"][index]]
        assert body["step"] == {"id": str(steps["gray"].pk), "execution": str(execution.pk), "node_id": "gray",
                                "component": {"id": str(steps["gray"].component_id), "name": "grayscale",
                                              "version": "1.0.0"}}
        assert [(a["file"]["id"], a["depth"]) for a in body["ancestors"]] == [
            (outputs["resize"][index], 1), (str(source.id), 2)]
        resized, original = body["ancestors"]
        assert resized["derived_from"] == [str(source.id)] and resized["step"]["node_id"] == "resize"
        assert original["derived_from"] == [] and original["step"] is None  # an upload
        assert [d["file"]["id"] for d in body["descendants"]] == outputs["board"]

    # and the merge step's output was derived from both its inputs, so both images are its ancestors
    board = outputs["board"][0]
    body = api.get(f"/api/v1/files/{board}/lineage/").json()
    assert sorted(body["derived_from"]) == sorted(outputs["gray"])
    assert {(a["file"]["id"], a["depth"]) for a in body["ancestors"]} == {
        *((f, 1) for f in outputs["gray"]), *((f, 2) for f in outputs["resize"]), (str(first.id), 3),
        (str(second.id), 3)}
    assert body["descendants"] == []
    # and the descendants of an input are its own outputs, nearest first, not the other input's
    body = api.get(f"/api/v1/files/{first.id}/lineage/").json()
    assert [(d["file"]["id"], d["depth"], d["step"]["node_id"]) for d in body["descendants"]] == [
        (outputs["resize"][0], 1, "resize"), (outputs["gray"][0], 2, "gray"), (board, 3, "board")]
    assert body["ancestors"] == [] and body["step"] is None
    # and ?depth= bounds the walk
    body = api.get(f"/api/v1/files/{first.id}/lineage/?depth=1").json()
    assert body["max_depth"] == 1 and [d["file"]["id"] for d in body["descendants"]] == [outputs["resize"][0]]

    # and the execution's detail reports its outputs per input image
    detail = api.get(f"/api/v1/executions/{execution.pk}/").json()
    assert detail["outputs_by_input"] == {
        str(first.id): {"resize": [outputs["resize"][0]], "gray": [outputs["gray"][0]], "board": [board]},
        str(second.id): {"resize": [outputs["resize"][1]], "gray": [outputs["gray"][1]], "board": [board]},
    }
    # and exactly the edges of the run were written, once each
    assert FileLineage.objects.count() == 2 + 2 + 2


def test_a_merge_of_the_run_inputs_and_a_passthrough(process_worker, builtins, pipeline_of, jpeg_file, user):
    # given a passthrough feeding a composite of the two inputs
    pipeline = pipeline_of([node("pass", "passthrough"), node("blend", "composite")],
                           [{"from": "pass", "to": "blend"}])
    first, second = jpeg_file(64, 48), jpeg_file(64, 48, color=(0, 0, 0))
    # when it runs
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[first.id, second.id], user=user))
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    outputs = _by_node(execution)
    blend = outputs["blend"][0]
    # then the passed-through inputs have no lineage of their own (they are the inputs) and the
    # composite derives from both
    assert outputs["pass"] == [str(first.id), str(second.id)]
    assert sorted(str(i) for i in FileLineage.objects.filter(file_id=blend).values_list("derived_from_id", flat=True)) \
        == sorted([str(first.id), str(second.id)])
    assert FileLineage.objects.count() == 2
    # and per input, the passthrough's output is the input itself and the blend is under both
    detail = _client(user).get(f"/api/v1/executions/{execution.pk}/").json()
    assert detail["outputs_by_input"] == {str(first.id): {"pass": [str(first.id)], "blend": [blend]},
                                          str(second.id): {"pass": [str(second.id)], "blend": [blend]}}
