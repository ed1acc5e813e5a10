"""Step runners: how a component's work is done. Chosen per component by `Component.runner`.

- `builtin`: Pillow image operations in the worker process (`executions/engine/runners/builtin.py`).
- `container`: an external process (a container image) speaking the JSON contract of
  `executions/engine/runners/container.py` on stdin/stdout.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Protocol

from executions import logs
from executions.models import ComponentExecution
from files.models import File
from registry.models import Component, ComponentRunner


@dataclass
class RunResult:
    outputs: list[File]
    metrics: dict[str, Any] = field(default_factory=dict)
    child_cpu_seconds: float = 0.0  # CPU spent outside the step's thread (an external process, pool threads)
    child_peak_memory_bytes: int = 0
    # JSON output of a step that produces data rather than files (HTTP agent/tool runner).
    data: Any = None


@dataclass
class StepContext:
    """What a runner gets: the step, its parameters (defaults applied) and input files, and the
    means to log and to store outputs. Outputs stored through `store_output` are tagged with the
    step and attempt, so the engine can discard them if the step's result is not kept."""

    step: ComponentExecution
    attempt: int
    parameters: dict[str, Any]
    inputs: list[File]
    cancelled: threading.Event
    created_by_id: Any = None
    item: Any = None  # the StepItem being run, for an item of a map step
    created_files: list[File] = field(default_factory=list)
    # Output file id -> the ids of the inputs it was derived from (FileLineage, written on completion).
    derived_from: dict[str, list[str]] = field(default_factory=dict)

    def log(self, level: str, message: str, **extra: Any) -> None:
        logs.emit(execution_id=self.step.execution_id, level=level, message=message, step_id=self.step.pk,
                  node_id=self.step.node_id, component=str(self.step.component), **extra)

    def store_output(self, *, content: bytes, name: str, derived_from: list[File] | None = None,
                     metadata: dict[str, Any] | None = None) -> File:
        """Store an output of this step. `derived_from`: the inputs it was made from (a map
        operation's one source); None: all the step's inputs, as a merge or an external component
        that does not say is recorded. `metadata`: more keys of the file's metadata (an image's
        `results`: kept by the step cache with the output)."""
        from files.services import file_store_bytes

        stored = file_store_bytes(
            content=content, original_name=name, created_by_id=self.created_by_id, prefix="outputs",
            extra_metadata={**(metadata or {}), "execution_id": str(self.step.execution_id), "step_id": str(self.step.pk),
                            "node_id": self.step.node_id, "attempt": self.attempt,
                            **({"item": self.item.index} if self.item is not None else {})},
        )
        self.created_files.append(stored)
        sources = self.inputs if derived_from is None else derived_from
        self.derived_from[str(stored.id)] = [str(source.id) for source in sources]
        return stored

    def lineage(self, outputs: list[File]) -> list[tuple[str, str]]:
        """(output id, input id) pairs of the step's result. An output that is one of the inputs
        (passed through) derives from nothing new; one a runner did not store through
        `store_output` derives from all the inputs."""
        inputs = [str(source.id) for source in self.inputs]
        known = set(inputs)
        pairs: list[tuple[str, str]] = []
        for output in outputs:
            output_id = str(output.id)
            if output_id in known and output_id not in self.derived_from:
                continue
            pairs.extend((output_id, source) for source in self.derived_from.get(output_id, inputs)
                         if source != output_id)
        return pairs

    def output_name(self, source: File | None, extension: str) -> str:
        stem = PurePosixPath(source.original_name or "image").stem if source else "image"
        return f"{stem}-{self.step.node_id}{extension}"


class Runner(Protocol):
    def run(self, context: StepContext) -> RunResult: ...


def get_runner(component: Component) -> Runner:
    from executions.engine.runners.builtin import BuiltinRunner
    from executions.engine.runners.container import ContainerRunner
    from executions.engine.runners.http import HttpRunner

    if component.runner == ComponentRunner.BUILTIN:
        return BuiltinRunner()
    if component.runner == ComponentRunner.HTTP:
        return HttpRunner()
    if component.runner == ComponentRunner.ONNX:
        from executions.engine.runners.inference import OnnxRunner

        return OnnxRunner()
    return ContainerRunner()
