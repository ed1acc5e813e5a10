"""p95 latency from a step's state change being committed to the event arriving at connected
WebSocket clients, through the real stack: PostgreSQL commit -> engine signal -> Redis event
history + channel layer -> uvicorn serving imageflow.asgi -> `websockets` clients.

    .venv/bin/python bench/live_latency.py [--clients 50] [--steps 100] [--interval-ms 20]

Needs the local services (PostgreSQL, Redis). Uses DATABASE_NAME (default imageflow_live,
created with `createdb` if missing). The baseline of the same run is one connected client.
Target (issue 5): p95 < 50 ms with 50 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_common import ROOT, django_setup, summary  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clients_process(url: str, token: str, clients: int, ready, results) -> None:
    """Runs `clients` WebSocket clients in one event loop; reports arrival times per event."""
    import websockets

    async def one(index: int):
        arrivals = {}
        # The token goes in a header: one in the URL is refused (docs/security.md).
        async with websockets.connect(url, max_size=None, open_timeout=30,
                                      additional_headers={"Authorization": f"Token {token}"}) as ws:
            snapshot = json.loads(await ws.recv())
            assert snapshot["type"] == "snapshot"
            one.connected += 1
            if one.connected == clients:
                ready.set()
            try:
                async for text in ws:
                    now = time.monotonic()
                    event = json.loads(text)
                    arrivals[f"{event['step_id']}:{event['status']}"] = now
            except websockets.ConnectionClosed:
                pass
        return arrivals

    one.connected = 0

    async def main():
        return await asyncio.gather(*(one(i) for i in range(clients)))

    results.put(asyncio.run(main()))


def run_phase(*, port: int, token: str, clients: int, steps: int, interval: float) -> tuple[list[float], int]:
    from django.db import transaction

    from executions.models import ComponentExecution, PipelineExecution
    from executions.engine.transitions import execution_transition, step_transition
    from registry.models import Component, Pipeline

    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username="bench-live")
    component, _ = Component.objects.get_or_create(name="bench-noop", version="1.0.0", defaults={"docker_image": "x"})
    pipeline = Pipeline.objects.create(name="bench-live", definition={"nodes": [], "edges": []}, created_by=user)
    execution = PipelineExecution.objects.create(pipeline=pipeline, pipeline_version=1, created_by=user)
    ComponentExecution.objects.bulk_create(
        [ComponentExecution(execution=execution, component=component, node_id=f"n{i:04d}") for i in range(steps)])
    step_rows = list(ComponentExecution.objects.filter(execution=execution).order_by("node_id"))

    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    url = f"ws://127.0.0.1:{port}/ws/executions/{execution.id}/"
    process = ctx.Process(target=_clients_process, args=(url, token, clients, ready, results))
    process.start()
    if not ready.wait(60):
        process.terminate()
        raise RuntimeError("clients did not connect")
    time.sleep(0.3)

    committed: dict[str, float] = {}
    published: dict[str, float] = {}
    from executions import events

    original_publish = events.publish

    def timed_publish(event):
        numbered = original_publish(event)
        if event.get("step_id"):
            published[f"{event['step_id']}:{event['status']}"] = time.monotonic()
        return numbered

    events.publish = timed_publish

    def move(step, expected, to):
        key = f"{step.pk}:{to}"
        with transaction.atomic():
            # Registered first, so it runs first after COMMIT, before the engine's signal.
            transaction.on_commit(lambda: committed.__setitem__(key, time.monotonic()))
            assert step_transition(step=step, expected=expected, to=to)

    execution_transition(execution_id=execution.id, expected="pending", to="running")
    for step in step_rows:
        for expected, to in (("pending", "running"), ("running", "completed")):
            move(step, expected, to)
            time.sleep(interval)
    execution_transition(execution_id=execution.id, expected="running", to="completed")
    events.publish = original_publish
    per_client = results.get(timeout=60)
    process.join(30)
    latencies = []
    missing = 0
    run_phase.publish_ms = [(published[key] - committed[key]) * 1000 for key in committed if key in published]
    for arrivals in per_client:
        for key, sent in committed.items():
            if key in arrivals:
                latencies.append((arrivals[key] - sent) * 1000)
            else:
                missing += 1
    return latencies, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--steps", type=int, default=100, help="steps per run; each makes 2 step events")
    parser.add_argument("--interval-ms", type=float, default=50.0, help="pause between committed transitions")
    parser.add_argument("--ws", default="websockets-sansio", help="uvicorn's WebSocket implementation")
    args = parser.parse_args()

    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", os.environ.get("DATABASE_NAME", "imageflow_live")],
                   stderr=subprocess.DEVNULL, check=False)
    django_setup()
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user, _ = get_user_model().objects.get_or_create(username="bench-live")
    token = Token.objects.get_or_create(user=user)[0].key

    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "uvicorn"), "imageflow.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--lifespan", "off", "--log-level", "warning", "--ws", args.ws],
        cwd=ROOT, env=os.environ.copy(), start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.2)
        interval = args.interval_ms / 1000
        print(f"live_latency: {args.steps * 2} committed step transitions per phase, one every {args.interval_ms:g} ms, "
              f"uvicorn --ws {args.ws} pid {server.pid} on :{port}")
        base, base_missing = run_phase(port=port, token=token, clients=1, steps=args.steps, interval=interval)
        print(f"  baseline, 1 client : {summary(base)}  missing={base_missing}")
        print(f"    of which commit -> published to Redis: {summary(run_phase.publish_ms)}")
        loaded, missing = run_phase(port=port, token=token, clients=args.clients, steps=args.steps, interval=interval)
        print(f"  {args.clients} clients       : {summary(loaded)}  missing={missing}")
        print(f"    of which commit -> published to Redis: {summary(run_phase.publish_ms)}")
        from live_common import percentile

        p95 = percentile(loaded, 95)
        print(f"  p95 ratio {args.clients} clients / 1 client = {p95 / percentile(base, 95):.2f}x; "
              f"target p95 < 50 ms: {'MET' if p95 < 50 else 'NOT MET'} ({p95:.2f} ms)")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
