"""`imageflow download RUN --to DIR`: a run's outputs, each named after the input it was made
from (`outputs_by_input` of `GET /executions/{id}/`), so `IMG_1.jpg` comes back as `IMG_1.jpg`."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import requests

from imageflow_client.api import TIMEOUT, Api, ApiError

MIME_SUFFIXES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif",
                 "image/tiff": ".tiff", "image/bmp": ".bmp", "image/avif": ".avif", "image/heic": ".heic"}


@dataclass
class Planned:
    file_id: str
    node_id: str
    name: str
    outcome: str = "pending"  # downloaded, unchanged (the same bytes were there), failed


def output_nodes(execution: dict, nodes: list[str] | None) -> dict[str, list[str]]:
    """{node id: output file ids}: the nodes asked for, else the run's leaves (its `outputs`)."""
    steps = {step["node_id"]: step for step in execution.get("steps") or []}
    if nodes:
        unknown = [n for n in nodes if n not in steps]
        if unknown:
            raise ApiError(404, f"the run has no node {', '.join(map(repr, unknown))}; it has {', '.join(steps)}")
        return {n: list(((steps[n].get("output_data") or {}).get("files")) or []) for n in nodes}
    return {n: list(files or []) for n, files in ((execution.get("output_data") or {}).get("outputs") or {}).items()}


def plan(execution: dict, files: dict[str, dict], inputs: dict[str, dict], nodes: dict[str, list[str]]) -> list[Planned]:
    """Names in DIR: `<input's stem><output's suffix>`; `-<node>` added when several nodes are
    downloaded; an output made from several inputs (a merge) is named after its node; a name
    taken already gets `-2`, `-3`, ..."""
    made_from: dict[str, list[str]] = {}
    for input_id, by_node in (execution.get("outputs_by_input") or {}).items():
        for output_ids in by_node.values():
            for output_id in output_ids:
                made_from.setdefault(output_id, []).append(input_id)
    several_nodes = len(nodes) > 1
    taken: set[str] = set()
    planned: list[Planned] = []
    for node_id, output_ids in nodes.items():
        for output_id in output_ids:
            output = files[output_id]
            suffix = PurePosixPath(output.get("original_name") or "").suffix or MIME_SUFFIXES.get(output["mime_type"], "")
            sources = made_from.get(output_id, [])
            if len(sources) == 1 and sources[0] in inputs:
                stem = PurePosixPath(inputs[sources[0]].get("original_name") or sources[0]).stem
                stem = f"{stem}-{node_id}" if several_nodes else stem
            else:
                stem = node_id
            name, n = f"{stem}{suffix}", 1
            while name.lower() in taken:
                n += 1
                name = f"{stem}-{n}{suffix}"
            taken.add(name.lower())
            planned.append(Planned(file_id=output_id, node_id=node_id, name=safe_name(name)))
    return planned


def safe_name(name: str) -> str:
    """A file name, never a path: the server's names are sanitized already; this makes sure."""
    name = name.replace("/", "_").replace("\\", "_").replace("\x00", "_").strip()
    return name if name not in {"", ".", ".."} else "output"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(256 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(api: Api, file: dict, target: Path) -> None:
    """From the presigned URL (`GET /files/{id}/download/` answers it in the body); written to a
    temporary name and renamed, so an interrupted download leaves no half file under the name."""
    url = api.request("GET", f"files/{file['id']}/download/", expect=(302,), allow_redirects=False).json()["url"]
    temporary = target.with_name(f".{target.name}.part")
    with requests.get(url, stream=True, timeout=TIMEOUT) as response:
        if response.status_code != 200:
            raise ApiError(response.status_code, f"the object store answered {response.status_code} for {target.name}")
        digest = hashlib.sha256()
        with temporary.open("wb") as handle:
            for chunk in response.iter_content(256 * 1024):
                digest.update(chunk)
                handle.write(chunk)
    if file.get("checksum") and digest.hexdigest() != file["checksum"]:
        temporary.unlink(missing_ok=True)
        raise ApiError(0, f"{target.name}: the bytes received do not match the file's SHA-256")
    os.replace(temporary, target)


def download_run(api: Api, execution: dict, directory: Path, *, nodes: list[str] | None = None) -> list[Planned]:
    wanted = output_nodes(execution, nodes)
    files = {i: api.get(f"files/{i}/") for i in sorted({i for ids in wanted.values() for i in ids})}
    inputs: dict[str, dict] = {}
    for input_id in execution.get("outputs_by_input") or {}:
        try:
            inputs[input_id] = files.get(input_id) or api.get(f"files/{input_id}/")
        except ApiError as exc:
            if exc.status != 404:  # an input deleted since: its outputs are named after their node
                raise
    planned = plan(execution, files, inputs, wanted)
    directory.mkdir(parents=True, exist_ok=True)
    for item in planned:
        target = directory / item.name
        file = files[item.file_id]
        if target.is_file() and file.get("checksum") and sha256_of(target) == file["checksum"]:
            item.outcome = "unchanged"
            continue
        try:
            fetch(api, file, target)
            item.outcome = "downloaded"
        except (ApiError, OSError) as exc:
            item.outcome = f"failed: {exc}"
    return planned
