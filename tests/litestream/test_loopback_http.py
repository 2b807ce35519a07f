"""The small HTTP/1.1 client for Litestream's control socket and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from asgi_litestream._litestream.loopback_http import LoopbackHTTPError, request

pytestmark = pytest.mark.anyio

Answer = Callable[[bytes], bytes | None]  # the request seen -> raw bytes to send


@asynccontextmanager
async def unix_server(path: Path, answer: Answer) -> AsyncIterator[list[bytes]]:
    """A one-shot-per-connection server on a unix socket; yields the requests it saw."""
    seen: list[bytes] = []
    listener = await anyio.create_unix_listener(path)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            head, _, body = data.partition(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    while len(body) < int(line.split(b":")[1]):
                        body += await stream.receive()
            seen.append(head + b"\r\n\r\n" + body)
            raw = answer(seen[-1])
            if raw is None:
                await anyio.sleep(10)
                return
            await stream.send(raw)

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        yield seen
        group.cancel_scope.cancel()


async def test_json_post_with_content_length(tmp_path: Path) -> None:
    """A POST carries its JSON body, and the reply's body is cut at Content-Length."""
    reply = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"txid": 7}'
    async with unix_server(tmp_path / "s", lambda _: reply) as seen:
        got = await request("POST", "/sync", unix=str(tmp_path / "s"), timeout=5,
                            json_body=b'{"path": "/a.db"}')
    assert (got.status, got.body) == (200, b'{"txid": 7}')
    assert seen[0].startswith(b"POST /sync HTTP/1.1\r\n")
    assert b"Content-Length: 17\r\n" in seen[0]
    assert seen[0].endswith(b'\r\n\r\n{"path": "/a.db"}')


async def test_chunked_body_until_close(tmp_path: Path) -> None:
    """A chunked reply (Go's for bodies it streams) is joined back together."""
    reply = (b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n")
    async with unix_server(tmp_path / "s", lambda _: reply):
        got = await request("GET", "/list", unix=str(tmp_path / "s"), timeout=5)
    assert (got.status, got.body) == (500, b"hello world")


async def test_tcp_body_read_to_close() -> None:
    """Over TCP, a body without a length is read until the server closes."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\r\n\r\nlitestream_x 1\n")

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, handle)
        got = await request("GET", "/metrics", tcp=("127.0.0.1", port), timeout=5)
        group.cancel_scope.cancel()
    assert got.body == b"litestream_x 1\n"


@pytest.mark.parametrize("raw", [b"SSH-2.0-nope\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-"
                                 b"Length: 50\r\n\r\nshort"])
async def test_garbled_or_cut_reply_is_an_error(tmp_path: Path, raw: bytes) -> None:
    """Not HTTP, or a body cut short by the server closing, raises LoopbackHTTPError."""
    async with unix_server(tmp_path / "s", lambda _: raw):
        with pytest.raises(LoopbackHTTPError):
            await request("GET", "/info", unix=str(tmp_path / "s"), timeout=5)


async def test_silence_times_out(tmp_path: Path) -> None:
    """A server that never answers costs the timeout, then an error, never a hang."""
    async with unix_server(tmp_path / "s", lambda _: None):
        with pytest.raises(LoopbackHTTPError, match=r"within 0\.2s"):
            await request("GET", "/info", unix=str(tmp_path / "s"), timeout=0.2)


async def test_nobody_listening(tmp_path: Path) -> None:
    """A socket path with no server behind it is an error naming the cause."""
    with pytest.raises(LoopbackHTTPError, match=r"FileNotFoundError|ConnectionRefused"):
        await request("GET", "/info", unix=str(tmp_path / "absent"), timeout=1)

