"""`imageflow upload`: files and folders (recursively), hashed first so a file whose SHA-256 the
server already has is not sent again, the rest uploaded in parallel with a byte progress bar."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from imageflow_client.api import Api, ApiError

# What a folder contributes; a file named on the command line is always sent (the server
# sniffs the type from the bytes and refuses what is not an image).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".heic",
                            ".heif", ".avif", ".jp2", ".ico", ".ppm", ".pgm", ".tga"})
CHUNK = 256 * 1024


@dataclass
class Upload:
    path: Path
    size: int
    checksum: str = ""
    file_id: str | None = None
    outcome: str = "pending"  # uploaded, skipped (already stored), duplicate (same bytes as another path), failed
    error: str | None = None


def collect(paths: list[str]) -> list[Path]:
    """The files to send, in a stable order: folders walked recursively (hidden entries and
    non-image suffixes left out), each file once."""
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            found.append(path)

    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    candidate = Path(folder) / name
                    if not name.startswith(".") and candidate.suffix.lower() in IMAGE_SUFFIXES and candidate.is_file():
                        add(candidate)
        elif path.is_file():
            add(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {raw}")
    return found


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class MultipartBody:
    """A multipart/form-data body with one `file` field, read from disk as the socket takes it
    (requests would otherwise build the whole body in memory); `on_read` reports the bytes."""

    def __init__(self, path: Path, on_read) -> None:
        self.boundary = uuid.uuid4().hex
        filename = path.name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
        self._head = (f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                      f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode("utf-8")
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._size = path.stat().st_size
        self._file = path.open("rb")
        self._parts = [self._head, None, self._tail]
        self._on_read = on_read

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self._head) + self._size + len(self._tail)

    def read(self, size: int = -1) -> bytes:
        size = CHUNK if size is None or size < 0 else size
        while self._parts:
            part = self._parts[0]
            if part is None:
                chunk = self._file.read(size)
                if chunk:
                    self._on_read(len(chunk))
                    return chunk
                self._file.close()
                self._parts.pop(0)
                continue
            self._parts.pop(0)
            if part:
                return part
        return b""

    def close(self) -> None:
        self._file.close()


def upload_one(api: Api, item: Upload, on_read) -> dict:
    body = MultipartBody(item.path, on_read)
    try:
        response = api.request("POST", "files/", data=body, expect=(201,), headers={"Content-Type": body.content_type})
    finally:
        body.close()
    return response.json()


def upload_paths(api: Api, paths: list[str], *, jobs: int = 4, console: Console | None = None,
                 quiet: bool = False, lines: bool = True) -> list[Upload]:
    """Uploads in the order given; the result says for each path which file id it has now.
    `quiet`: no bar; `lines`: a line on stdout per file as it is done."""
    console = console or Console(stderr=True)
    items = [Upload(path=path, size=path.stat().st_size) for path in collect(paths)]
    if not items:
        return items
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for item, checksum in zip(items, pool.map(lambda i: sha256_of(i.path), items)):
            item.checksum = checksum
        # One upload per distinct content: the other paths with the same bytes get its id.
        first_of: dict[str, Upload] = {}
        for item in items:
            if item.checksum in first_of:
                item.outcome = "duplicate"
            else:
                first_of[item.checksum] = item
        unique = list(first_of.values())
        progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn(), console=console, disable=quiet, transient=False)
        with progress:
            task = progress.add_task(f"upload 0/{len(unique)}", total=sum(i.size for i in unique))
            done = {"count": 0}
            lock = threading.Lock()

            def send(item: Upload) -> None:
                try:
                    existing = api.file_by_checksum(item.checksum)
                    if existing is not None:
                        item.file_id, item.outcome = str(existing["id"]), "skipped"
                        progress.advance(task, item.size)
                    else:
                        sent = {"bytes": 0}

                        def on_read(count: int) -> None:
                            sent["bytes"] += count
                            progress.advance(task, count)

                        try:
                            item.file_id, item.outcome = str(upload_one(api, item, on_read)["id"]), "uploaded"
                        except BaseException:
                            progress.advance(task, item.size - sent["bytes"])
                            raise
                except (ApiError, OSError) as exc:  # requests' errors are OSErrors
                    item.outcome, item.error = "failed", str(exc)
                with lock:
                    done["count"] += 1
                    progress.update(task, description=f"upload {done['count']}/{len(unique)}")
                    if lines and not quiet:  # results on stdout (the bar is on stderr; rich keeps it below them)
                        print(describe(item), flush=True)

            list(pool.map(send, unique))
    for item in items:
        if item.outcome == "duplicate":
            original = first_of[item.checksum]
            item.file_id, item.error = original.file_id, original.error
            if original.outcome == "failed":
                item.outcome = "failed"
    return items


def describe(item: Upload) -> str:
    if item.outcome == "failed":
        return f"failed    {item.path}: {item.error}"
    label = {"uploaded": "uploaded", "skipped": "skipped", "duplicate": "duplicate"}[item.outcome]
    note = {"skipped": "  (already stored)", "duplicate": "  (same bytes as another file)"}.get(item.outcome, "")
    return f"{label:<9} {item.path} -> {item.file_id}{note}"
