"""``make serve``: several uvicorn processes on one port, each with its own listening socket.

Processes that share one listening socket (``uvicorn --workers``) take new connections in
whichever order they wake, and an event loop accepts every connection waiting when it does:
a burst of connections (a balancer's pool, a crowd starting its shift) can land mostly on
one process, whose requests then queue twice as long as the other's. Here each process
listens on a socket of its own, all bound to the port with ``SO_REUSEPORT``, so the kernel
hands each new connection to one of them by a hash of its addresses, whichever is awake: a
fair share each, though not the exact split a least-connections balancer makes.

The sockets belong to this supervising process. A process that dies is replaced on the same
socket, so connections waiting in its queue are kept; ``SIGHUP`` replaces the processes one
by one, each new one serving before the old one stops; ``SIGINT``/``SIGTERM`` stop them
all. A process that dies before it serves stops the launcher, and the processes of a
launcher that is killed stop on their own. A port in use is refused. Where
``SO_REUSEPORT`` is missing, the processes share one socket.

    python -m crowd.serve --host 0.0.0.0 --port 8000 --workers 4
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

APP = "crowd.asgi:application"
STARTUP_FAILURE = 3  # as uvicorn: the app, its settings or the socket could not be set up
CHECK_SECONDS = 0.5
STOP_SECONDS = 30.0

logger = logging.getLogger("crowd.serve")


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets listening on ``host:port``; one shared socket without SO_REUSEPORT.
    OSError when the port is taken, by this launcher's sockets too: sockets of one user that
    set SO_REUSEPORT share a port, so a second launcher would silently take half of the
    first one's connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    spread = hasattr(socket, "SO_REUSEPORT")
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]  # port 0: a free one, for the sockets below
    sockets: list[socket.socket] = []
    try:
        for _ in range(count if spread else 1):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if spread:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(2048)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _serve(sock: socket.socket, options: dict[str, Any], ready: Any) -> None:
    """One web process: uvicorn on its own socket (runs in the child); ``ready`` is set once
    it serves. It stops as SIGTERM would stop it if the supervisor dies (killed, it could
    not stop its processes, which would serve on alone)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(APP, **options))
    supervisor = os.getppid()

    def watch() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            ready.set()
        while not server.should_exit:
            if os.getppid() != supervisor:
                server.should_exit = True
            time.sleep(CHECK_SECONDS)

    threading.Thread(target=watch, daemon=True).start()
    server.run(sockets=[sock])


class Supervisor:
    """Keeps one process serving each socket until told to stop."""

    def __init__(self, sockets: list[socket.socket], workers: int, options: dict[str, Any]):
        self.slots = [sockets[i % len(sockets)] for i in range(workers)]
        self.options = options
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[BaseProcess] = []
        self.stopping = threading.Event()
        self.signals: list[int] = []
        self.ready: dict[BaseProcess, Any] = {}

    def start(self, slot: int) -> BaseProcess:
        """A new process on the slot's socket. The event it sets once it serves is kept in
        ``ready`` (held until the process has read it: the child opens the parent's
        semaphore)."""
        ready = self.context.Event()
        process = self.context.Process(
            target=_serve, args=(self.slots[slot], self.options, ready), name=f"web-{slot}"
        )
        process.start()
        self.ready[process] = ready
        return process

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda number, frame: self.signals.append(number))
        self.processes = [self.start(slot) for slot in range(len(self.slots))]
        logger.info(
            "serving on %d sockets with %d processes (pids %s)",
            len(set(map(id, self.slots))), len(self.slots),
            " ".join(str(process.pid) for process in self.processes),
        )  # fmt: skip
        status = 0
        while not self.stopping.wait(CHECK_SECONDS):
            while self.signals:
                if self.signals.pop(0) == signal.SIGHUP:
                    self.replace_all()
                else:
                    self.stopping.set()
            if not self.stopping.is_set():
                status = self.keep_alive()
        self.stop_all()
        return status

    def keep_alive(self) -> int:
        """Replaces a dead process; stops everything when one died before it served (the
        app or its settings cannot load: every replacement would fail alike)."""
        for slot, process in enumerate(self.processes):
            if process.is_alive():
                continue
            process.join()
            if not self.ready.pop(process).is_set():
                logger.error("web process %s exited (%s) before it served; stopping",
                             process.pid, process.exitcode)  # fmt: skip
                self.stopping.set()
                return STARTUP_FAILURE
            logger.warning("web process %s exited (%s); starting another", process.pid,
                           process.exitcode)  # fmt: skip
            self.processes[slot] = self.start(slot)
        return 0

    def replace_all(self) -> None:
        """A new process on each socket, serving before the old one is stopped."""
        for slot, old in enumerate(self.processes):
            new = self.start(slot)
            if not _wait_ready(new, self.ready[new]):
                logger.error("web process %s did not start; keeping %s", new.pid, old.pid)
                _stop([new])
                self.ready.pop(new, None)
                return
            _stop([old])
            self.ready.pop(old, None)
            self.processes[slot] = new

    def stop_all(self) -> None:
        _stop(self.processes)


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
        prog="python -m crowd.serve", description="several uvicorn processes, a socket each"
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
        sockets = listening_sockets(args.host, args.port, args.workers)
    except OSError as exc:
        logger.error("cannot listen on %s:%s: %s", args.host, args.port, exc.strerror or exc)
        return STARTUP_FAILURE
    try:
        return Supervisor(sockets, args.workers, options).run()
    finally:
        for sock in sockets:
            sock.close()


if __name__ == "__main__":
    raise SystemExit(main())
