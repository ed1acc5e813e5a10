"""`imageflow run --watch`: a run's progress over the WebSocket (`/ws/executions/<id>/`, docs/
live-and-logs.md): the snapshot, then the events in `seq` order until the final one. A bar per
step, counting a map step's items when it has them; plain lines when stderr is not a terminal."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from imageflow_client.api import Api, ApiError

ITEM_KEYS = ("total", "completed", "failed", "skipped", "cached")
FINISHED_STEP = {"completed", "failed", "skipped", "cancelled"}
CLOSE_CODES = {4401: "not authenticated (run `imageflow login`)", 4404: "no such run, or not yours"}


@dataclass
class StepState:
    node_id: str
    status: str = "pending"
    items: dict | None = None

    def merge_items(self, items: dict | None) -> None:
        """A snapshot reads the database, so an event after it may carry older counts: keep the higher."""
        if not items:
            return
        if self.items is None:
            self.items = {key: int(items.get(key) or 0) for key in ITEM_KEYS}
        else:
            self.items = {key: max(self.items[key], int(items.get(key) or 0)) for key in ITEM_KEYS}

    def summary(self) -> str:
        if self.items is None:
            return self.status
        i = self.items
        text = f"{self.status}, {i['completed']}/{i['total']} items"
        extras = [f"{i[key]} {key}" for key in ("failed", "skipped", "cached") if i[key]]
        return f"{text} ({', '.join(extras)})" if extras else text


@dataclass
class RunState:
    execution_id: str
    status: str = "pending"
    seq: int = 0
    final: bool = False
    steps: dict[str, StepState] = field(default_factory=dict)

    def step(self, node_id: str) -> StepState:
        return self.steps.setdefault(node_id, StepState(node_id))

    def apply(self, event: dict) -> bool:
        """Applies one message; False for one already seen (a seq at or below the last)."""
        kind = event.get("type")
        if kind == "snapshot":
            self.seq = max(self.seq, int(event.get("seq") or 0))
            for row in event.get("steps") or []:
                state = self.step(row["node_id"])
                state.status = row["status"]
                state.merge_items(row.get("items"))
        else:
            seq = int(event.get("seq") or 0)
            if seq and seq <= self.seq:
                return False
            self.seq = max(self.seq, seq)
            if kind == "step" and event.get("node_id"):
                state = self.step(event["node_id"])
                state.status = event["status"]
                state.merge_items(event.get("items"))
            elif kind == "step_items" and event.get("node_id"):
                self.step(event["node_id"]).merge_items(event.get("items"))
        if event.get("execution_status"):
            self.status = event["execution_status"]
        elif kind == "execution" and event.get("status"):
            self.status = event["status"]
        self.final = self.final or bool(event.get("final"))
        return True


class BarView:
    """One bar for the run (finished steps of all) and one per step (its items, or 0/1)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console)
        self.tasks: dict[str, int] = {}
        self.started: set[str] = set()
        self.run_task: int | None = None

    def __enter__(self) -> BarView:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def show(self, run: RunState) -> None:
        steps = list(run.steps.values())
        finished = sum(1 for s in steps if s.status in FINISHED_STEP)
        if self.run_task is None:
            self.run_task = self.progress.add_task("run", total=max(1, len(steps)), note=run.status)
        self.progress.update(self.run_task, total=max(1, len(steps)), completed=finished, note=run.status)
        for state in steps:
            if state.items is not None:
                i = state.items
                total, done = max(1, i["total"]), i["completed"] + i["failed"] + i["skipped"]
            else:
                total, done = 1, int(state.status in FINISHED_STEP)
            if state.node_id not in self.tasks:  # its clock starts when it does
                self.tasks[state.node_id] = self.progress.add_task(f"  {state.node_id}", total=total, note="",
                                                                   start=False)
            task = self.tasks[state.node_id]
            if state.status != "pending" and state.node_id not in self.started:
                self.started.add(state.node_id)
                self.progress.start_task(task)
            self.progress.update(task, total=total, completed=done, note=state.summary())


class LineView:
    """For logs and pipes: a line whenever a step's status or counts change."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.shown: dict[str, str] = {}

    def __enter__(self) -> LineView:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def show(self, run: RunState) -> None:
        for state in run.steps.values():
            summary = state.summary()
            if self.shown.get(state.node_id) != summary:
                self.shown[state.node_id] = summary
                self.console.print(f"{state.node_id}: {summary}", highlight=False, markup=False)
        if self.shown.get("") != run.status:
            self.shown[""] = run.status
            self.console.print(f"run {run.execution_id}: {run.status}", highlight=False, markup=False)


def follow(api: Api, execution_id: str, *, console: Console | None = None, reconnects: int = 5,
           view: str = "auto") -> dict:
    """Follows the run until its final event; answers the run as `GET /executions/{id}/` has it
    then (the status and error to report). A dropped connection is opened again (the server
    starts with a fresh snapshot, and events already seen are dropped by seq)."""
    console = console or Console(stderr=True)
    run = RunState(execution_id)
    headers = {"Authorization": f"Token {api.token}"} if api.token else {}
    bars = view == "bars" or (view == "auto" and console.is_terminal)
    attempts = 0
    with (BarView(console) if bars else LineView(console)) as shown:
        while not run.final:
            try:
                with connect(api.websocket_url(execution_id), additional_headers=headers, open_timeout=15,
                             close_timeout=5, max_size=2**24) as ws:
                    attempts = 0
                    for text in ws:
                        event = json.loads(text)
                        if run.apply(event):
                            shown.show(run)
                        if run.final:
                            break
                    if run.final:
                        break
                    raise ConnectionError("closed before the run's final event")
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                if code in CLOSE_CODES:
                    raise ApiError(code, f"WebSocket refused: {CLOSE_CODES[code]}") from None
                error = exc
            except InvalidStatus as exc:
                raise ApiError(exc.response.status_code, f"WebSocket refused with HTTP {exc.response.status_code}") from None
            except (OSError, TimeoutError, ConnectionError) as exc:
                error = exc
            if run.final:
                break
            attempts += 1
            if attempts > reconnects:
                raise ApiError(0, f"lost the WebSocket of run {execution_id}: {error}")
            time.sleep(min(5.0, 0.5 * 2 ** (attempts - 1)))
        execution = api.execution(execution_id)
        # The poll's counts are the committed ones: the bars end on them.
        for row in execution.get("steps") or []:
            state = run.step(row["node_id"])
            state.status = row["status"]
            state.merge_items(row.get("items"))
        run.status = execution["status"]
        shown.show(run)
    return execution
