"""Every shared photo through the demo pipeline on a real Celery worker: every step completes and
every output is the right way up (its size follows the picture as a viewer shows it)."""

from __future__ import annotations

import pytest

from executions.demo import demo_definition
from executions.models import ExecutionStatus, PipelineExecution
from executions.services import execution_start
from files.models import File
from files.services import file_store_bytes
from registry.models import Pipeline
from tests.executions.conftest import open_image, wait_finished
from tests.photos import ALL_PHOTOS, shown

pytestmark = pytest.mark.timeout(900)


def test_every_photo_runs_through_the_demo_pipeline_right_way_up(builtins, thread_worker, user):
    pipeline = Pipeline.objects.create(name="demo-photos", definition=demo_definition(), created_by=user)
    runs: list[tuple[str, tuple[int, int], PipelineExecution]] = []
    for path in ALL_PHOTOS:
        content = path.read_bytes()
        source = file_store_bytes(content=content, original_name=path.name, created_by=user, prefix="uploads")
        runs.append((path.name, shown(content).size, execution_start(pipeline=pipeline, inputs=[source.id], user=user)))

    for name, (width, height), execution in runs:
        wait_finished(execution, timeout=300)
        assert execution.status == ExecutionStatus.COMPLETED, (name, execution.error_message)
        steps = {step.node_id: step for step in execution.steps.all()}
        resized = (480, round(480 * height / width))
        for node_id in ("resize", "gray", "edges", "sharpen"):
            (output,) = [File.objects.get(pk=i) for i in steps[node_id].output_data["files"]]
            assert open_image(output).size == resized, (name, node_id)
            assert output.metadata["orientation"] == 1 and "gps" not in output.metadata, (name, node_id)
        (board,) = [File.objects.get(pk=i) for i in steps["board"].output_data["files"]]
        assert open_image(board).size == (3 * 480 + 2 * 8, resized[1]), name
