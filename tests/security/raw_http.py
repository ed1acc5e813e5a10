"""A raw HTTP/1.1 client over a socket: what curl or an attacker can send that `requests` will
not (a Content-Length with no body behind it, a chunked body that never ends)."""

from __future__ import annotations

import json
import select
import socket
import time
from dataclasses import dataclass


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the end of the request head to the complete answer
    body_bytes_sent: int

    def json(self):
        return json.loads(self.body)


def _read_response(sock: socket.socket, buffered: bytes, deadline: float) -> tuple[int, dict[str, str], bytes]:
    data = buffered
    while b"\r\n\r\n" not in data:
        data += _recv(sock, deadline)
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += _recv(sock, deadline)
    return status, headers, rest[:length]


def _recv(sock: socket.socket, deadline: float) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no complete answer in time")
    sock.settimeout(remaining)
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("closed before a complete answer")
    return chunk


def request(port: int, method: str, path: str, *, headers: dict[str, str], body: bytes = b"",
            chunks: int = 0, chunk: bytes = b"", timeout: float = 10.0) -> RawResponse:
    """Send the head, then `body` (if any), or `chunks` chunks of `chunk` with chunked framing,
    watching for an answer between chunks; the answer is read as soon as it comes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(head.encode("latin-1") + b"\r\n")
        started = time.monotonic()
        deadline = started + timeout
        sent = 0
        buffered = b""
        if body:
            sock.sendall(body)
            sent = len(body)
        for _ in range(chunks):
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        else:
            if chunks:
                sock.sendall(b"0\r\n\r\n")
        status, response_headers, response_body = _read_response(sock, buffered, deadline)
        return RawResponse(status=status, headers=response_headers, body=response_body,
                           seconds=time.monotonic() - started, body_bytes_sent=sent)
    finally:
        sock.close()
