"""The server's REST API (`/api/v1/`) over requests: the token header, the API's error shape
turned into ApiError, and its two kinds of pages."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import requests

from imageflow_client import __version__

TIMEOUT = (10, 300)  # connect, read: an upload of a big image or a long poll may take a while
# A token's rate limit (429, docs/security.md#rate-limit): wait as long as Retry-After says, this
# many times, for requests that can be sent again (not a streamed upload body, which is spent).
RATE_LIMIT_RETRIES = 5
RATE_LIMIT_MAX_WAIT_SECONDS = 60.0
UUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


class ApiError(Exception):
    """A failed request, with the API's problem fields (docs/api.md#errors) when it sent them."""

    def __init__(self, status: int, message: str, *, type: str = "", errors: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.errors = errors or {}

    @classmethod
    def from_response(cls, response: requests.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "detail" in body:
            return cls(response.status_code, str(body["detail"]), type=str(body.get("type", "")),
                       errors=body.get("errors") if isinstance(body.get("errors"), dict) else None)
        return cls(response.status_code, f"HTTP {response.status_code} from {response.url}")


def retry_after_seconds(response: requests.Response) -> float:
    try:
        seconds = float(response.headers.get("Retry-After", "1"))
    except ValueError:  # an HTTP date: not sent by this server
        seconds = 1.0
    return min(max(seconds, 0.0), RATE_LIMIT_MAX_WAIT_SECONDS)


def is_uuid(text: str) -> bool:
    return bool(UUID_PATTERN.match(text))


class Api:
    """One server and token. Sessions are per thread: requests does not promise that one session
    is safe to share between the upload threads."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = f"imageflow-client/{__version__}"
            session.headers["Accept"] = "application/json"
            if self.token:
                session.headers["Authorization"] = f"Token {self.token}"
            self._local.session = session
        return session

    def absolute(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.url}/api/v1/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, expect: tuple[int, ...] = (200,), **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        attempts = 1 + (RATE_LIMIT_RETRIES if "data" not in kwargs and "files" not in kwargs else 0)
        for attempt in range(attempts):
            response = self.session.request(method, self.absolute(path), **kwargs)
            if response.status_code != 429 or 429 in expect or attempt == attempts - 1:
                break
            time.sleep(retry_after_seconds(response))
        if response.status_code not in expect:
            raise ApiError.from_response(response)
        return response

    def get(self, path: str, **params) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def post(self, path: str, body: Any = None, *, expect: tuple[int, ...] = (200, 201, 202), **kwargs) -> Any:
        response = self.request("POST", path, json=body, expect=expect, **kwargs)
        return response.json() if response.content else None

    def pages(self, path: str, *, limit: int | None = None, **params) -> Iterator[dict]:
        """Every result of a list, following `next` (page numbers and cursors alike)."""
        url: str | None = path
        query: dict | None = {k: v for k, v in params.items() if v is not None}
        seen = 0
        while url:
            body = self.request("GET", url, params=query).json()
            for row in body["results"]:
                yield row
                seen += 1
                if limit is not None and seen >= limit:
                    return
            url, query = body.get("next"), None  # `next` carries the query already

    # --- the calls the commands make ----------------------------------------------------------

    def token_obtain(self, *, username: str, password: str) -> str:
        return self.post("auth/token/", {"username": username, "password": password}, expect=(200,))["token"]

    def token_revoke(self) -> None:
        self.request("DELETE", "auth/token/", expect=(204,))

    def file_by_checksum(self, checksum: str) -> dict | None:
        body = self.get("files/", checksum=checksum, page_size=1)
        return body["results"][0] if body["results"] else None

    def pipeline_resolve(self, reference: str) -> dict:
        """A pipeline by id, or by its exact name (unique among the pipelines the user sees)."""
        if is_uuid(reference):
            return self.get(f"pipelines/{uuid.UUID(reference)}/")
        matches = [p for p in self.pages("pipelines/", search=reference, page_size=200) if p["name"] == reference]
        if not matches:
            raise ApiError(404, f"no pipeline named {reference!r}")
        if len(matches) > 1:
            ids = ", ".join(str(p["id"]) for p in matches)
            raise ApiError(409, f"{len(matches)} pipelines are named {reference!r}; use an id: {ids}")
        return self.get(f"pipelines/{matches[0]['id']}/")

    def execution(self, execution_id: str) -> dict:
        return self.get(f"executions/{uuid.UUID(execution_id)}/")

    def websocket_url(self, execution_id: str) -> str:
        scheme, rest = self.url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws/executions/{execution_id}/"
