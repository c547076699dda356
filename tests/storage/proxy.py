"""A TCP proxy between the app and the S3 server that a test can bring down, at once or once a
given number of bytes has passed: the store failing for real, in the middle of a transfer."""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import suppress


class StoreProxy:
    """Forwards every connection to ``host:port``. While down, open connections are reset and
    new ones are accepted and reset at once, as by a store that crashed and restarts: every
    S3 call fails with a connection error."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._up = True
        self._sockets: set[socket.socket] = set()
        # Bytes still allowed through (towards the store, back from it) before going down.
        self._budget: dict[str, int | None] = {"up": None, "down": None}
        self.went_down = threading.Event()
        self.connections = 0
        self.refused = 0  # connections reset because it was down
        # The request line ("PUT /bucket/key HTTP/1.1") that was passing when it went down.
        self.cut_during = ""
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def up(self) -> bool:
        return self._up

    def down(self) -> None:
        with self._lock:
            self._up = False
            self._budget = {"up": None, "down": None}
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            _reset(sock)
        self.went_down.set()

    def restore(self) -> None:
        with self._lock:
            self._up = True
            self._budget = {"up": None, "down": None}
        self.went_down.clear()

    def down_after(self, *, up: int | None = None, down: int | None = None) -> None:
        """Go down once ``up`` more bytes have been sent to the store (a request body cut
        off), or ``down`` more have come back from it (a read cut off)."""
        with self._lock:
            self._budget = {"up": up, "down": down}

    def close(self) -> None:
        self.down()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self._up:
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self.connections += 1
                self._sockets |= {client, upstream}
            request = [""]  # the connection's latest request line, seen by both directions
            for source, sink, way in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(
                    target=self._pump, args=(source, sink, way, request), daemon=True
                ).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, way: str, request: list[str]
    ) -> None:
        try:
            self._forward(source, sink, way, request)
        finally:  # whatever ended it, both ends go, so no peer waits on a dead connection
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with suppress(OSError):
                    sock.close()

    def _forward(
        self, source: socket.socket, sink: socket.socket, way: str, request: list[str]
    ) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                if way == "up" and data[:8].split(b" ")[0] in METHODS:
                    request[0] = data.split(b"\r\n", 1)[0].decode(errors="replace")
                cut = False
                with self._lock:
                    if not self._up:
                        break
                    budget = self._budget[way]
                    if budget is not None:
                        if len(data) >= budget:
                            data, cut = data[:budget], True
                        else:
                            self._budget[way] = budget - len(data)
                if data:
                    sink.sendall(data)
                if cut:
                    self.cut_during = request[0]
                    self.down()
                    break


METHODS = {b"GET", b"HEAD", b"PUT", b"POST", b"DELETE"}


def _reset(sock: socket.socket) -> None:
    """Break the connection: a reset (SO_LINGER 0) where the kernel can send one; the shutdown
    first wakes the thread blocked reading it (closing alone would not)."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()
