"""A TCP proxy on loopback that can cut its upstream: refuse or hang connections."""

from __future__ import annotations

import selectors
import socket
import threading
from typing import Literal

Mode = Literal["pass", "refuse", "hang"]


class Proxy:
    """127.0.0.1:<port> → 127.0.0.1:<target>; set_mode() cuts or restores it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode: Mode = "pass"
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._pairs: dict[socket.socket, socket.socket | None] = {}
        self._listener: socket.socket | None = None
        self.port = self._listen(0)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _listen(self, port: int) -> int:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ)
        return int(listener.getsockname()[1])

    def set_mode(self, mode: Mode) -> None:
        with self._lock:
            self._drop_connections()
            if mode == "refuse" and self._listener is not None:
                self._selector.unregister(self._listener)
                self._listener.close()
                self._listener = None
            elif mode != "refuse" and self._listener is None:
                self._listen(self.port)
            self.mode = mode

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        with self._lock:
            self._drop_connections()
            if self._listener is not None:
                self._selector.unregister(self._listener)
                self._listener.close()
        self._selector.close()

    def _drop_connections(self) -> None:
        for sock in list(self._pairs):
            self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        peer = self._pairs.pop(sock, None)
        for each in (sock, peer):
            if each is not None:
                try:
                    self._selector.unregister(each)
                except (KeyError, ValueError):
                    pass
                each.close()
        if peer is not None:
            self._pairs.pop(peer, None)

    def _run(self) -> None:
        while not self._stopped.is_set():
            events = self._selector.select(timeout=0.05)
            with self._lock:
                for key, _ in events:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept()
                    elif sock in self._pairs:
                        self._forward(sock)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self.mode == "hang":
            # Accepted, then silence: like an endpoint that stopped answering.
            self._pairs[client] = None
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        for sock in (client, upstream):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
        self._pairs[client] = upstream
        self._pairs[upstream] = client

    def _forward(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        peer = self._pairs.get(sock)
        if not data or peer is None:
            if not data:
                self._close(sock)
            return
        try:
            peer.setblocking(True)
            peer.sendall(data)
            peer.setblocking(False)
        except OSError:
            self._close(sock)
