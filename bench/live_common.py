"""Shared start-up of the live-progress and log benchmarks: Django on a benchmark database."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def django_setup(default_database: str = "imageflow_live") -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imageflow.settings")
    os.environ.setdefault("DATABASE_NAME", default_database)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary(values_ms: list[float]) -> str:
    return (f"n={len(values_ms)} median={statistics.median(values_ms):.2f} ms p95={percentile(values_ms, 95):.2f} ms "
            f"p99={percentile(values_ms, 99):.2f} ms max={max(values_ms):.2f} ms")


WORDS = (
    "resize crop rotate blur sharpen grayscale threshold thumbnail watermark convert jpeg png webp tiff exif "
    "upload download object store bucket checksum pixel width height channel alpha gamma contrast brightness "
    "timeout retry worker heartbeat queue broker memory cpu disk quota permission denied cannot identify image "
    "file decode encode quality palette histogram mask layer composite border padding scale ratio aspect "
    "started finished completed failed skipped cancelled warning error notice attempt duration milliseconds"
).split()
LEVEL_WEIGHTS = (("debug", 10), ("info", 70), ("warning", 12), ("error", 7), ("critical", 1))


def fake_message(rng) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + f" #{rng.randint(0, 99999)}"


def fake_level(rng) -> str:
    return rng.choices([level for level, _ in LEVEL_WEIGHTS], weights=[w for _, w in LEVEL_WEIGHTS])[0]


class SeparateSearchServer:
    """An osmem-server of the benchmark's own on a free port (it is in-memory: stopping it frees
    everything the benchmark loaded)."""

    def __init__(self) -> None:
        import socket

        import osmem_server

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.binary = osmem_server.resolve_binary()
        self.process = None

    def __enter__(self):
        import subprocess
        import time
        import urllib.request

        # -no-ja: the log mapping uses the standard analyzer; the Japanese dictionary only costs memory.
        self.process = subprocess.Popen([self.binary, "-addr", f"127.0.0.1:{self.port}", "-no-stdin-watch", "-no-ja"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=0.5).read()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("osmem-server did not start") from None
                time.sleep(0.1)

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss / 1e6

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


class ExistingSearchServer:
    """A search server the benchmark does not own (`--search-url`, e.g. a real Elasticsearch node):
    used as it is, its indices of the benchmark's prefix deleted by the benchmark, never stopped."""

    process = None

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def __enter__(self):
        return self

    def rss_mb(self) -> float:
        return float("nan")

    def __exit__(self, *exc) -> None:
        pass


def search_server(url: str | None):
    """`--search-url` given: that server; otherwise an osmem-server of the benchmark's own."""
    return ExistingSearchServer(url) if url else SeparateSearchServer()
