"""Request body limits enforced in front of Django, at the ASGI layer (docs/security.md).

Django's ASGIHandler reads the whole body into a SpooledTemporaryFile (disk past 2.5 MB) before
any Django middleware or view runs, so a limit checked there comes after the disk was filled.
This middleware wraps the HTTP application instead:

- a declared `Content-Length` over the limit is answered 413 at once, without reading a byte of
  the body (and the connection is closed, so the client need not send it);
- a body without `Content-Length` (chunked) is counted as it arrives. A JSON or form body is
  read here, in memory, up to its small limit and handed on with its length (DRF reads a body
  without one as empty); past the limit the answer is 413 and Django never sees the request.
  A multipart body is passed through while counted; once past the limit the application is
  told the client went away (Django then stops reading and answers nothing) and the 413 is
  sent from here, so at most `limit` bytes plus one chunk were spooled.

The limit depends on the declared type: `multipart/form-data` (uploads) may carry
FILE_UPLOAD_MAX_BYTES plus REQUEST_MULTIPART_OVERHEAD_BYTES of part headers and form fields;
every other body (JSON, forms) at most API_JSON_MAX_BYTES.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


def _problem_body(*, status_code: int, type_: str, detail: str) -> bytes:
    from imageflow.api.problems import problem

    # Compact, as DRF renders the same shape.
    return json.dumps(problem(status_code=status_code, type_=type_, detail=detail), separators=(",", ":")).encode()


class RequestBodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, upload_limit: int | None = None, other_limit: int | None = None) -> None:
        from django.conf import settings

        self.app = app
        self.upload_limit = (upload_limit if upload_limit is not None
                             else settings.FILE_UPLOAD_MAX_BYTES + settings.REQUEST_MULTIPART_OVERHEAD_BYTES)
        self.other_limit = other_limit if other_limit is not None else settings.API_JSON_MAX_BYTES

    def limit_for(self, scope: Scope) -> int:
        content_type = (_header(scope, b"content-type") or b"").decode("latin-1").strip().lower()
        return self.upload_limit if content_type.startswith("multipart/form-data") else self.other_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _header(scope, b"content-length")
        if declared is not None:
            text = declared.decode("latin-1").strip()
            # The server (h11/httptools) already refused a malformed Content-Length; this guards
            # other servers, so a value that is not a plain number is never trusted as small.
            if not text.isdigit():
                await self._refuse(send, status_code=400, type_="invalid_content_length",
                                   detail="Content-Length must be a whole number of bytes.")
                return
            if int(text) > limit:
                await self._refuse(send, status_code=413, type_="payload_too_large",
                                   detail=f"The request body may be at most {limit} bytes for this content type; "
                                          f"{int(text)} were declared.")
                return
            await self.app(scope, receive, send)
            return
        if limit == self.upload_limit:
            await self._counted(scope, receive, send, limit)
        else:
            await self._buffered(scope, receive, send, limit)

    async def _buffered(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """A small body without Content-Length: read it here (at most `limit` bytes, in memory)
        and hand it on with its length, since DRF treats a body without one as empty."""
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                await self._refuse(send, status_code=413, type_="payload_too_large",
                                   detail=f"The request body may be at most {limit} bytes for this content type.")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"transfer-encoding"]
        headers.append((b"content-length", str(len(body)).encode()))
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(dict(scope, headers=headers), replay, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    # What Django does on a client disconnect: stop reading, answer nothing.
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if over:
                return  # the 413 below is the answer; nothing the application says goes out
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, tracking_send)
        if over and not started:
            await self._refuse(send, status_code=413, type_="payload_too_large",
                               detail=f"The request body may be at most {limit} bytes for this content type.")

    @staticmethod
    async def _refuse(send: Send, *, status_code: int, type_: str, detail: str) -> None:
        body = _problem_body(status_code=status_code, type_=type_, detail=detail)
        await send({
            "type": "http.response.start",
            "status": status_code,
            # Closing the connection tells the client not to send the body it announced; a
            # keep-alive connection would have to read (and throw away) all of it first.
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })
        await send({"type": "http.response.body", "body": body})
