"""Upload of a big image through the API vs a plain boto3 upload of the same file, same run.

Starts a real web server (uvicorn serving imageflow.asgi, one process), uploads an uncompressed
BMP of --size-mb (default 200) to POST /api/v1/files/ with a streaming multipart body, samples
the server process's RSS every 10 ms, then uploads the same file with boto3 `upload_file` to the
same bucket. Targets: RSS growth < 64 MB, API throughput >= 60% of boto3's.

    DATABASE_NAME=imageflow_api .venv/bin/python bench/api_upload.py [--size-mb 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _setup import ROOT, django_setup

CHUNK = 1024 * 1024


def write_bmp(path: Path, size_mb: int) -> tuple[int, int]:
    """A 24-bit uncompressed BMP of about size_mb, written row by row (never whole in memory)."""
    width = 8000
    row = width * 3  # already a multiple of 4: no padding
    height = max(1, size_mb * 1024 * 1024 // row)
    pixels = row * height
    with open(path, "wb") as out:
        out.write(b"BM" + struct.pack("<IHHI", 54 + pixels, 0, 0, 54))
        out.write(struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, pixels, 2835, 2835, 0, 0))
        pattern = bytes((x * 7 + y) % 256 for y in range(3) for x in range(row // 3))
        for _ in range(height):
            out.write(pattern)
    return width, height


class MultipartStream:
    """A multipart/form-data body read from disk in chunks; len() lets requests send Content-Length."""

    def __init__(self, path: Path, field: str = "file") -> None:
        self.boundary = uuid.uuid4().hex
        self.head = (f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                     f"filename=\"{path.name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.size = path.stat().st_size
        self.handle = open(path, "rb")
        self.stage = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def read(self, n: int = -1) -> bytes:
        if self.stage == 0:
            self.stage = 1
            return self.head
        if self.stage == 1:
            data = self.handle.read(max(n, CHUNK) if n and n > 0 else CHUNK)
            if data:
                return data
            self.stage = 2
            self.handle.close()
            return self.tail
        return b""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 30) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            requests.get(url, timeout=10)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"server did not start at {url}")


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process(pid)
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                rss = sum(p.memory_info().rss for p in [self.process, *self.process.children(recursive=True)])
            except Exception:
                break
            self.peak = max(self.peak, rss)
            time.sleep(0.01)

    def current(self) -> int:
        return sum(p.memory_info().rss for p in [self.process, *self.process.children(recursive=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    django_setup()
    import boto3
    import requests
    from django.conf import settings
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from files.models import File
    from files.services import file_delete
    from tests.factories import UserFactory

    call_command("migrate", verbosity=0)
    user = UserFactory(username="bench-uploader")
    token = Token.objects.get_or_create(user=user)[0].key

    workdir = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    image = workdir / "big.bmp"
    width, height = write_bmp(image, args.size_mb)
    size = image.stat().st_size
    print(f"image: {image.name} {width}x{height} BMP, {size / 1e6:.1f} MB")

    port = free_port()
    env = {**os.environ, "FILE_UPLOAD_MAX_BYTES": str(size + 1024 * 1024), "LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "imageflow.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--log-level", "warning"], cwd=ROOT, env=env)
    s3 = boto3.client("s3", endpoint_url=settings.S3_ENDPOINT_URL, region_name=settings.S3_REGION,
                      aws_access_key_id=settings.AWS_ACCESS_KEY_ID, aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY)
    created: list[str] = []
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(base + "/healthz")
        headers = {"Authorization": f"Token {token}"}
        # Warm-up: a small upload so imports, connections and the S3 client exist before measuring.
        small = workdir / "small.bmp"
        write_bmp(small, 1)
        warm = MultipartStream(small)
        response = requests.post(base + "/api/v1/files/", data=warm, headers={**headers, "Content-Type": warm.content_type})
        assert response.status_code == 201, response.text
        created.append(response.json()["id"])

        api_seconds, growths, boto_seconds = [], [], []
        for run in range(args.runs):
            sampler = RssSampler(server.pid)
            before = sampler.current()
            sampler.start()
            body = MultipartStream(image)
            started = time.perf_counter()
            response = requests.post(base + "/api/v1/files/", data=body,
                                     headers={**headers, "Content-Type": body.content_type}, timeout=600)
            api_seconds.append(time.perf_counter() - started)
            sampler.running = False
            sampler.join()
            assert response.status_code == 201, response.text[:500]
            stored = response.json()
            created.append(stored["id"])
            assert stored["file_size"] == size and stored["metadata"]["width"] == width
            growths.append(sampler.peak - before)

            key = f"bench/{uuid.uuid4().hex}.bmp"
            started = time.perf_counter()
            s3.upload_file(str(image), settings.S3_BUCKET, key)
            boto_seconds.append(time.perf_counter() - started)
            s3.delete_object(Bucket=settings.S3_BUCKET, Key=key)
            print(f"run {run + 1}: API {api_seconds[-1]:.2f} s ({size / api_seconds[-1] / 1e6:.0f} MB/s), "
                  f"server RSS +{growths[-1] / 2**20:.1f} MB; boto3 upload_file {boto_seconds[-1]:.2f} s "
                  f"({size / boto_seconds[-1] / 1e6:.0f} MB/s)", flush=True)

        api_median, boto_median = statistics.median(api_seconds), statistics.median(boto_seconds)
        ratio = boto_median / api_median
        peak_growth = max(growths) / 2**20
        print(f"\nmedian API {api_median:.2f} s vs boto3 {boto_median:.2f} s -> API throughput = {ratio:.0%} of "
              f"boto3 (target >= 60%): {'OK' if ratio >= 0.6 else 'MISSED'}")
        print(f"max server RSS growth {peak_growth:.1f} MB (target < 64 MB): {'OK' if peak_growth < 64 else 'MISSED'}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        for file_id in created:
            row = File.objects.filter(pk=file_id).first()
            if row is not None:
                file_delete(file=row)
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    main()
