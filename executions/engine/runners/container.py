"""The external-process runner for `runner="container"` components.

The command is `settings.CONTAINER_COMMAND_TEMPLATE` (split like a shell line; `{image}` is the
component's docker_image, `{output_dir}` the step's output directory), for example
`docker run --rm -i --memory {memory_bytes} -v {output_dir}:{output_dir} {image}`
(`{memory_bytes}`: the memory limit of the component, 0 when it has none).

Contract "imageflow.step/1" (README: "External components"):

stdin, one JSON object::

    {"contract": "imageflow.step/1", "execution_id": "...", "step_id": "...", "node_id": "...",
     "attempt": 1, "component": {"name": "...", "version": "...", "image": "..."},
     "parameters": {...},                     # node parameters, JSON Schema defaults applied
     "inputs": [{"file_id": "...", "name": "a.jpg", "mime_type": "image/jpeg", "size": 123,
                 "url": "<presigned GET URL>"}],
     "output_dir": "/tmp/imageflow-step-..."}  # write output files here

stdout, one JSON object::

    {"outputs": [{"path": "result.png", "name": "optional-original-name.png"}],
     "metrics": {...},                        # numbers recorded on the step
     "data": ...}                             # optional JSON results (output_data.data)

What is given back is checked against the component's output_schema (executions/engine/
contracts.py).

`path` is relative to output_dir (or absolute inside it). stderr lines become the step's log
records ("ERROR: ", "WARNING: ", "DEBUG: " prefixes set the level). Exit status 0 = success,
75 (EX_TEMPFAIL) = transient failure (retried with backoff), anything else = failure.

Resources (the component's `resource_requirements`): `memory` ("512Mi") limits the process's
address space (RLIMIT_AS, set in the child before it starts; a template that passes
`{memory_bytes}` to a container engine, e.g. `docker run --memory {memory_bytes}`, gets the limit
there instead, enforced by its cgroup, and no rlimit on the engine's client: the default template
does so, since an address-space limit on the docker client would limit the client, not the container); `gpu` (n > 0) gives it
the first n of WORKER_GPU_DEVICES in CUDA_VISIBLE_DEVICES (docker needs `-e CUDA_VISIBLE_DEVICES`
and `--gpus all` in the template to pass it on); a component without `gpu` gets an empty one on a
worker with WORKER_GPU_DEVICES, so it cannot take a device a GPU step was given.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from django.conf import settings

from executions.engine.errors import StepFailure, TransientStepError
from executions.engine.queues import memory_bytes
from executions.engine.runners import RunResult, StepContext

CONTRACT = "imageflow.step/1"
EX_TEMPFAIL = 75
_LEVEL_PREFIXES = {"ERROR:": "error", "WARNING:": "warning", "DEBUG:": "debug", "INFO:": "info"}


_OUT_OF_MEMORY = ("memoryerror", "cannot allocate memory", "out of memory", "bad_alloc", "std::bad_alloc")


def build_command(*, image: str, output_dir: str, memory: int | None = None) -> list[str]:
    return [token.format(image=image, output_dir=output_dir, memory_bytes=memory or 0)
            for token in shlex.split(settings.CONTAINER_COMMAND_TEMPLATE)]


def memory_limit(component) -> int | None:
    """The bytes of memory the component's resource_requirements allow its process; None: no limit."""
    limit = memory_bytes((component.resource_requirements or {}).get("memory"))
    return limit if limit and limit > 0 else None


def process_environment(component) -> dict[str, str] | None:
    """The external process's environment: the worker's, with the GPUs the component may use;
    None (inherit it unchanged) when this worker has no WORKER_GPU_DEVICES."""
    devices = list(settings.WORKER_GPU_DEVICES)
    if not devices:
        return None
    gpu = (component.resource_requirements or {}).get("gpu") or 0
    count = int(gpu) if isinstance(gpu, (int, float)) and not isinstance(gpu, bool) and gpu > 0 else 0
    return {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(devices[:count])}


def _limit_memory(limit: int):
    def preexec() -> None:  # in the child, between fork and exec: only async-signal-safe work
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return preexec


def _mib(value: int) -> str:
    return f"{value / 1024 ** 2:.0f} MiB"


class ContainerRunner:
    def run(self, context: StepContext) -> RunResult:
        from files.services import file_presigned_url

        step, component = context.step, context.step.component
        with tempfile.TemporaryDirectory(prefix="imageflow-step-") as output_dir:
            request = {
                "contract": CONTRACT, "execution_id": str(step.execution_id), "step_id": str(step.pk),
                "node_id": step.node_id, "attempt": context.attempt,
                "component": {"name": component.name, "version": component.version, "image": component.docker_image},
                "parameters": context.parameters,
                "inputs": [{"file_id": str(f.id), "name": f.original_name, "mime_type": f.mime_type,
                            "size": f.file_size, "url": file_presigned_url(f, expires_in=settings.STEP_TIME_LIMIT_SECONDS + 300)}
                           for f in context.inputs],
                "output_dir": output_dir,
            }
            limit = memory_limit(component)
            command = build_command(image=component.docker_image, output_dir=output_dir, memory=limit)
            # A template passing {memory_bytes} hands the limit to the container engine's cgroup.
            rlimit = limit if limit and "{memory_bytes}" not in settings.CONTAINER_COMMAND_TEMPLATE else None
            environment = process_environment(component)
            context.log("info", f"starting external process: {shlex.join(command)}", command=command,
                        memory_limit_bytes=limit,
                        cuda_visible_devices=None if environment is None else environment["CUDA_VISIBLE_DEVICES"])
            try:
                process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, start_new_session=True, env=environment,
                                           preexec_fn=_limit_memory(rlimit) if rlimit else None)
            except OSError as exc:
                raise StepFailure(f"cannot start {command[0]!r}: {exc}") from exc
            stdout_chunks: list[bytes] = []
            stderr_tail: list[str] = []
            # stdin is written by a thread too: a process that never reads it must not block the
            # runner past the time limit.
            readers = [threading.Thread(target=lambda: stdout_chunks.append(process.stdout.read()), daemon=True),
                       threading.Thread(target=self._pump_stderr, args=(process, context, stderr_tail), daemon=True),
                       threading.Thread(target=self._feed, args=(process, json.dumps(request).encode()), daemon=True)]
            for reader in readers:
                reader.start()
            code, rusage, stopped = self._wait(process, context)
            for reader in readers:
                reader.join(timeout=5)
            cpu = rusage.ru_utime + rusage.ru_stime if rusage else 0.0
            peak = rusage.ru_maxrss * 1024 if rusage else 0
            if stopped == "time limit":
                raise StepFailure(f"time limit of {settings.STEP_TIME_LIMIT_SECONDS}s exceeded; process killed")
            if stopped == "cancelled":
                raise StepFailure("step cancelled; process killed")
            last = stderr_tail[-1] if stderr_tail else "no message on stderr"
            if code == EX_TEMPFAIL:
                raise TransientStepError(f"external process reported a temporary failure: {last}")
            if code != 0 and limit and (code < 0 or any(word in line.lower() for line in stderr_tail
                                                         for word in _OUT_OF_MEMORY)):
                raise StepFailure(f"external process ran out of memory: its limit is {_mib(limit)} "
                                  f"(resource_requirements.memory {component.resource_requirements['memory']!r}); "
                                  f"exited with status {code}: {last}")
            if code != 0:
                raise StepFailure(f"external process exited with status {code}: {last}")
            answer = self._parse_answer(b"".join(stdout_chunks))
            outputs = []
            root = Path(output_dir).resolve()
            for index, item in enumerate(answer.get("outputs", [])):
                if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                    raise StepFailure(f"outputs[{index}] must be an object with a path")
                path = (root / item["path"]).resolve()
                if root not in path.parents or not path.is_file():
                    raise StepFailure(f"outputs[{index}].path {item['path']!r} is not a file in the output directory")
                name = item.get("name") if isinstance(item.get("name"), str) else path.name
                outputs.append(context.store_output(content=path.read_bytes(), name=name))
            metrics = answer.get("metrics") if isinstance(answer.get("metrics"), dict) else {}
        return RunResult(outputs=outputs, metrics=metrics, child_cpu_seconds=cpu, child_peak_memory_bytes=peak,
                         data=answer.get("data"))

    @staticmethod
    def _feed(process: subprocess.Popen, payload: bytes) -> None:
        try:
            process.stdin.write(payload)
            process.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass

    @staticmethod
    def _pump_stderr(process: subprocess.Popen, context: StepContext, tail: list[str]) -> None:
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            level = "info"
            for prefix, name in _LEVEL_PREFIXES.items():
                if line.startswith(prefix):
                    level, line = name, line[len(prefix):].strip()
                    break
            tail.append(line)
            del tail[:-20]
            context.log(level, line, source="stderr")

    @staticmethod
    def _wait(process: subprocess.Popen, context: StepContext):
        """Wait for the process, reaping it with wait4 to get its own resource usage; kill its
        process group on cancellation or at the time limit."""
        deadline = time.monotonic() + settings.STEP_TIME_LIMIT_SECONDS
        stopped = None
        while True:
            pid, status, rusage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                return process.returncode, rusage, stopped
            if stopped is None and (context.cancelled.is_set() or time.monotonic() > deadline):
                stopped = "cancelled" if context.cancelled.is_set() else "time limit"
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    @staticmethod
    def _parse_answer(raw: bytes) -> dict:
        text = raw.decode("utf-8", "replace").strip()
        try:
            answer = json.loads(text) if text else {}
        except json.JSONDecodeError as exc:
            raise StepFailure(f"external process wrote invalid JSON on stdout: {exc}") from exc
        if not isinstance(answer, dict):
            raise StepFailure("external process must write a JSON object on stdout")
        return answer
