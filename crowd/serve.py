"""``make serve``: several uvicorn processes on one port, each new connection to the least
busy of them.

Processes that share one listening socket (``uvicorn --workers``) take new connections in
whichever order they wake, and an event loop accepts every connection waiting when it does:
a burst of connections (a balancer's pool, a crowd starting its shift) can land mostly on
one process. Processes with a listening socket each (``SO_REUSEPORT``) get them by a hash of
their addresses: a fair share on average, but 24/40 or 21/43 at times. Kept-alive
connections keep that split for their life, and the busier process's requests queue longer.

Here the launcher holds the one listening socket. It accepts each connection and hands it
over a Unix socket (``SCM_RIGHTS``) to the process with the fewest connections, counting
those handed to it and not yet taken: the split a least-connections balancer makes, with no
balancer to run. A connection costs the launcher one accept and one send; requests go
straight to the process that holds it.

The launcher supervises the processes. A process that dies is replaced (connections waiting
to be accepted wait in the launcher's queue meanwhile); ``SIGHUP`` replaces the processes one
by one, each new one serving before the old one is sent no more connections and stops;
``SIGINT``/``SIGTERM`` stop them all. A process that dies before it serves stops the
launcher, and the processes of a launcher that is killed stop on their own. A port in use is
refused.

    python -m crowd.serve --host 0.0.0.0 --port 8000 --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn

APP = "crowd.asgi:application"
STARTUP_FAILURE = 3  # as uvicorn: the app, its settings or the socket could not be set up
CHECK_SECONDS = 0.5
STOP_SECONDS = 30.0
# How long the launcher waits for a process to take a connection before it tries another.
HAND_OVER_SECONDS = 1.0

logger = logging.getLogger("crowd.serve")


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket the launcher accepts on; OSError when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


class _Connections(set[Any]):
    """A server's open connections (uvicorn's ``server_state.connections``), their number
    kept where the launcher reads it. An HTTP connection upgraded to a WebSocket leaves the
    set as the WebSocket joins it."""

    def __init__(self, live: Any) -> None:
        super().__init__()
        self.live = live

    def add(self, item: Any) -> None:
        super().add(item)
        self.live.value = len(self)

    def discard(self, item: Any) -> None:
        super().discard(item)
        self.live.value = len(self)

    def remove(self, item: Any) -> None:
        super().remove(item)
        self.live.value = len(self)


class _HandedServer(uvicorn.Server):
    """uvicorn with no listening socket: it serves the connections the launcher hands it on
    ``channel``, and stops when the launcher's end closes."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket, live: Any, taken: Any):
        super().__init__(config)
        self.channel, self.live, self.taken = channel, live, taken

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.server_state.connections = _Connections(self.live)
        await super().startup(sockets=[])
        config, state = self.config, self.server_state

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state=self.lifespan.state
            )

        loop = asyncio.get_running_loop()
        self.channel.setblocking(False)
        loop.add_reader(self.channel.fileno(), self._take, loop, protocol)

    def _take(self, loop: asyncio.AbstractEventLoop, protocol: Callable[[], Any]) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.channel, 16, 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        if not data and not fds:  # the launcher is gone
            loop.remove_reader(self.channel.fileno())
            self.should_exit = True
            return
        for fd in fds:
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            loop.create_task(self._serve_connection(loop, protocol, sock))

    async def _serve_connection(
        self, loop: asyncio.AbstractEventLoop, protocol: Callable[[], Any], sock: socket.socket
    ) -> None:
        try:
            await loop.connect_accepted_socket(protocol, sock)
        except OSError:
            sock.close()  # the client went away before it was served
        # Taken once the connection is in ``live``: in between the launcher counts it twice
        # (handed and live), never not at all, which would send this process one too many.
        self.taken.value += 1

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().remove_reader(self.channel.fileno())  # False if not there
        self.channel.close()  # connections handed over and not taken are closed with it
        await super().shutdown(sockets)


def _serve(channel: socket.socket, live: Any, taken: Any, options: dict[str, Any],
           ready: Any) -> None:  # fmt: skip
    """One web process (runs in the child); ``ready`` is set once it serves. It stops as
    SIGTERM would stop it if the launcher dies (killed, the launcher could not stop its
    processes, which would serve on alone)."""
    server = _HandedServer(uvicorn.Config(APP, **options), channel, live, taken)
    launcher = os.getppid()

    def watch() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            ready.set()
        while not server.should_exit:
            if os.getppid() != launcher:
                server.should_exit = True
            time.sleep(CHECK_SECONDS)

    threading.Thread(target=watch, daemon=True).start()
    server.run()


class _Slot:
    """A web process as the launcher knows it: its end of the channel, and its load."""

    def __init__(self, context: Any, options: dict[str, Any], name: str) -> None:
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.channel.settimeout(HAND_OVER_SECONDS)
        # Held until the process has its copy (the launcher lends it when the child asks).
        self.theirs: socket.socket | None = theirs
        self.live, self.taken = context.RawValue("q", 0), context.RawValue("q", 0)
        self.handed = 0  # by the accepting thread alone
        self.ready = context.Event()
        self.process: BaseProcess = context.Process(
            target=_serve, args=(theirs, self.live, self.taken, options, self.ready), name=name
        )
        self.process.start()

    def load(self) -> tuple[bool, int]:
        """Serving processes first (a new one may take seconds to load the app), then the
        fewest connections, those on their way included."""
        return (not self.ready.is_set(), self.live.value + self.handed - self.taken.value)

    def check_serving(self) -> bool:
        """Whether the process serves; once it does, the launcher lets go of its copy of the
        process's end of the channel."""
        if not self.ready.is_set():
            return False
        self._release_theirs()
        return True

    def _release_theirs(self) -> None:
        # Once the process holds its copy, the launcher's would keep a dead process's channel
        # open: connections sent to it would wait there instead of failing over.
        if self.theirs is not None:
            self.theirs.close()
            self.theirs = None

    def close(self) -> None:
        self._release_theirs()
        self.channel.close()


class Supervisor:
    """Keeps ``workers`` processes serving, and hands them the connections ``listener``
    accepts, until told to stop."""

    def __init__(self, listener: socket.socket, workers: int, options: dict[str, Any]):
        self.listener = listener
        self.workers = workers
        self.options = options
        self.context = multiprocessing.get_context("spawn")
        self.slots: list[_Slot] = []
        self.lock = threading.Lock()  # the list of slots: replaced here, read by the acceptor
        self.stopping = threading.Event()
        self.signals: list[int] = []

    def start(self, number: int) -> _Slot:
        return _Slot(self.context, self.options, f"web-{number}")

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda number, frame: self.signals.append(number))
        self.slots = [self.start(number) for number in range(self.workers)]
        logger.info("serving with %d processes (pids %s)", self.workers,
                    " ".join(str(slot.process.pid) for slot in self.slots))  # fmt: skip
        acceptor = threading.Thread(target=self.accept, name="accept", daemon=True)
        acceptor.start()
        status = 0
        while not self.stopping.wait(CHECK_SECONDS):
            while self.signals:
                if self.signals.pop(0) == signal.SIGHUP:
                    self.replace_all()
                else:
                    self.stopping.set()
            if not self.stopping.is_set():
                status = self.keep_alive()
        acceptor.join()
        self.stop_all()
        return status

    def accept(self) -> None:
        """Accept connections and hand each to the least busy process (the acceptor
        thread), until stopping."""
        self.listener.settimeout(CHECK_SECONDS)
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:  # out of descriptors, say: the connection waits its turn
                logger.warning("accept failed: %s", exc)
                time.sleep(0.1)
                continue
            with conn:
                self.hand_over(conn)

    def hand_over(self, conn: socket.socket) -> None:
        with self.lock:
            slots = sorted(self.slots, key=_Slot.load)
        for slot in slots:
            try:
                socket.send_fds(slot.channel, [b"c"], [conn.fileno()])
            except OSError:  # the process died, or takes none: the next one
                continue
            slot.handed += 1
            return
        logger.warning("no web process took a connection; it is closed")

    def keep_alive(self) -> int:
        """Replaces a dead process; stops everything when one died before it served (the
        app or its settings cannot load: every replacement would fail alike)."""
        for number, slot in enumerate(self.slots):
            if slot.process.is_alive():
                slot.check_serving()
                continue
            slot.process.join()
            if not slot.check_serving():
                logger.error("web process %s exited (%s) before it served; stopping",
                             slot.process.pid, slot.process.exitcode)  # fmt: skip
                self.stopping.set()
                return STARTUP_FAILURE
            logger.warning("web process %s exited (%s); starting another", slot.process.pid,
                           slot.process.exitcode)  # fmt: skip
            self.swap(number, self.start(number))
        return 0

    def swap(self, number: int, new: _Slot) -> _Slot:
        """``new`` takes the place of the number'th process, which is sent no more
        connections; returns that one."""
        with self.lock:
            old, self.slots[number] = self.slots[number], new
        old.close()
        return old

    def replace_all(self) -> None:
        """A new process for each, serving before the old one is stopped."""
        for number, current in enumerate(self.slots):
            new = self.start(number)
            if not _wait_ready(new.process, new.ready) or not new.check_serving():
                logger.error("web process %s did not start; keeping %s", new.process.pid,
                             current.process.pid)  # fmt: skip
                _stop([new.process])
                new.close()
                return
            _stop([self.swap(number, new).process])

    def stop_all(self) -> None:
        _stop([slot.process for slot in self.slots])
        for slot in self.slots:
            slot.close()


def _wait_ready(process: BaseProcess, ready: Any, seconds: float = 60.0) -> bool:
    """Whether ``process`` started serving within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.is_alive():
        if ready.wait(0.2):
            return True
    return False


def _stop(processes: list[BaseProcess]) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crowd.serve",
        description="several uvicorn processes, each connection to the least busy",
    )
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
    parser.add_argument("--no-access-log", action="store_true", help="no line per request")
    parser.add_argument(
        "--no-proxy-headers", action="store_true",
        help="ignore X-Forwarded-* (trusted from FORWARDED_ALLOW_IPS, default 127.0.0.1)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    options = {"lifespan": "off", "proxy_headers": not args.no_proxy_headers,
               "ws_per_message_deflate": False, "access_log": not args.no_access_log}  # fmt: skip
    try:
        listener = listening_socket(args.host, args.port)
    except OSError as exc:
        logger.error("cannot listen on %s:%s: %s", args.host, args.port, exc.strerror or exc)
        return STARTUP_FAILURE
    with listener:
        return Supervisor(listener, args.workers, options).run()


if __name__ == "__main__":
    raise SystemExit(main())
