"""A minimal HTTP/1.1 client for the two servers Litestream runs beside us: its control
socket (a unix socket) and its ``/metrics`` (TCP on loopback).

Why not httpx: ``import httpx`` runs httpx's command-line module, which imports click,
and rich and pygments when they are installed (measured: +80 ms and +11 MB in a server
whose environment also holds mkdocs). httpcore, its transport, still costs ~50 ms of
import. These two servers speak plain HTTP/1.1 on this machine, with small JSON or text
bodies: one request per connection (``Connection: close``), no TLS, no proxy, no
redirects. httpx stays for the one job that needs a real client, the binary's download,
and is imported only then.

The socket is a plain non-blocking one waited on with ``anyio.wait_readable`` /
``wait_writable``, not anyio's socket streams: on asyncio those leave a reader's
``Future.set_result`` queued when the waiting task is cancelled in the same loop turn,
and the loop then logs "Exception in callback ... InvalidStateError" (seen when a poll
was in flight as the app shut down).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import anyio

_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024  # a thousand databases' metrics are a few MB


class LoopbackHTTPError(Exception):
    """No answer: the server is not there, closed the connection, answered something
    that is not HTTP/1.1, or not within the timeout."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes


async def request(method: str, target: str, *, timeout: float, unix: str | None = None,
                  tcp: tuple[str, int] | None = None, json_body: bytes | None = None
                  ) -> Reply:
    """``method target`` on a unix socket path or a (host, port); the whole exchange,
    connecting included, within ``timeout`` seconds."""
    host = "localhost" if unix is not None or tcp is None else f"{tcp[0]}:{tcp[1]}"
    head = (f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            "Accept-Encoding: identity\r\n")
    if json_body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(json_body)}\r\n"
    message = head.encode("ascii") + b"\r\n" + (json_body or b"")
    address: str | tuple[str, int]
    if unix is not None:
        address, family = unix, socket.AF_UNIX
    elif tcp is not None:
        address, family = tcp, socket.AF_INET
    else:
        raise ValueError("request() needs unix= or tcp=")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        with anyio.fail_after(timeout):
            await _connect(sock, address)
            await _send_all(sock, message)
            return await _read_reply(sock)
    except TimeoutError as exc:
        raise LoopbackHTTPError(f"no answer within {timeout:g}s") from exc
    except OSError as exc:
        raise LoopbackHTTPError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        sock.close()


async def _connect(sock: socket.socket, address: str | tuple[str, int]) -> None:
    try:
        sock.connect(address)
    except BlockingIOError:  # TCP connecting, or a unix socket's backlog is full
        await anyio.wait_writable(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error)) from None


async def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view):]
        except BlockingIOError:
            await anyio.wait_writable(sock)


async def _read_reply(sock: socket.socket) -> Reply:
    data = bytearray()
    while (end := data.find(b"\r\n\r\n")) < 0:
        if len(data) > _MAX_HEAD:
            raise LoopbackHTTPError("the response head is too long")
        data += await _receive(sock, closed_ok=False)
    lines = bytes(data[:end]).decode("latin-1").split("\r\n")
    status = _status(lines[0])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = bytearray(data[end + 4:])
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        while len(body) < int(length):
            body += await _receive(sock, closed_ok=False)
        return Reply(status, bytes(body[:int(length)]))
    while chunk := await _receive(sock, closed_ok=True):  # until the server closes
        body += chunk
        if len(body) > _MAX_BODY:
            raise LoopbackHTTPError("the response body is too long")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return Reply(status, _dechunk(bytes(body)))
    return Reply(status, bytes(body))


async def _receive(sock: socket.socket, *, closed_ok: bool) -> bytes:
    """Some bytes; b"" once the server has closed (an error unless ``closed_ok``)."""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            await anyio.wait_readable(sock)
            continue
        except ConnectionResetError:
            data = b""
        if data or closed_ok:
            return data
        raise LoopbackHTTPError("the server closed the connection mid-response")


def _status(line: str) -> int:
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise LoopbackHTTPError(f"not an HTTP/1.1 response: {line[:80]!r}")
    return int(parts[1])


def _dechunk(raw: bytes) -> bytes:
    body, at = bytearray(), 0
    while True:
        end = raw.find(b"\r\n", at)
        if end < 0:
            raise LoopbackHTTPError("a chunked body ends mid-chunk")
        try:
            size = int(raw[at:end].split(b";")[0].strip() or b"0", 16)
        except ValueError:
            raise LoopbackHTTPError("a chunked body has a bad chunk size") from None
        if size == 0:
            return bytes(body)
        body += raw[end + 2:end + 2 + size]
        at = end + 2 + size + 2
