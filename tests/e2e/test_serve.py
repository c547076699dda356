"""``make serve`` (``crowd.serve``): the launcher accepts on the port and hands each
connection to the web process with the fewest; a dead process is replaced, ``SIGHUP``
replaces them all, and the port answers throughout."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.server import ROOT, LiveServer, live_server, manage, server_env, ws_connect

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc")

LISTEN, ESTABLISHED = "0A", "01"
PASSWORD = "serve-test-password-42"


def _tcp_sockets(port: int) -> dict[int, str]:
    """Socket inode -> TCP state, for the sockets whose local port is ``port``."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            found[int(fields[9])] = fields[3]
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _peer_ports(pid: int, port: int) -> set[int]:
    """The client ports of the connections to ``port`` that the process holds (any state)."""
    held = _socket_inodes(pid)
    peers = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and int(fields[9]) in held:
            peers.add(int(fields[2].split(":")[1], 16))
    return peers


def _listening(pid: int, port: int) -> int:
    """How many sockets listening on ``port`` the process holds."""
    sockets = _tcp_sockets(port)
    return sum(sockets.get(inode) == LISTEN for inode in _socket_inodes(pid))


def _web_processes(server: LiveServer) -> dict[int, int]:
    """The launcher's web processes: pid -> its established connections on the port."""
    sockets = _tcp_sockets(server.port)
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    found: dict[int, int] = {}
    for pid in map(int, children.read_text().split()):
        try:
            if b"spawn_main" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue  # multiprocessing's resource tracker
            held = _socket_inodes(pid) & sockets.keys()
        except FileNotFoundError:
            continue
        found[pid] = sum(sockets[inode] == ESTABLISHED for inode in held)
    return found


def _healthz(port: int) -> socket.socket:
    """A kept-alive connection that has been answered once."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert conn.recv(12) == b"HTTP/1.1 200"
    return conn


def _two_serving(server: LiveServer, gone: int = 0) -> dict[int, int]:
    """The two web processes, once both have loaded the app (and ``gone`` is not one)."""
    deadline = time.monotonic() + 60
    while True:
        web = _web_processes(server)
        log = server.log.read_text()
        loaded = all(f"Started server process [{pid}]" in log for pid in web)
        if len(web) == 2 and gone not in web and loaded:
            return web
        assert time.monotonic() < deadline, f"web processes: {web}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    env = server_env()
    manage(env, "migrate", "--noinput")
    return env


def _split(server: LiveServer, count: int) -> list[int]:
    """Open ``count`` connections at once, as a crowd starting its shift (or a balancer's
    pool) opens them, each answered once; how many each web process holds, fewest first."""
    connections = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                   for _ in range(count)]  # fmt: skip
    try:
        for conn in connections:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        for conn in connections:
            assert conn.recv(12) == b"HTTP/1.1 200"
        return sorted(_web_processes(server).values())
    finally:
        for conn in connections:
            conn.close()


def _even(split: list[int], total: int) -> bool:
    return sum(split) == total and split[-1] - split[0] <= 2


def test_the_launcher_hands_each_connection_to_the_process_with_fewest(
    env: dict[str, str],
) -> None:
    with live_server(env, workers=2) as server:
        web = _two_serving(server)
        # One listening socket, the launcher's: the processes take no connection of their own.
        assert _listening(server.process.pid, server.port) == 1
        assert all(_listening(pid, server.port) == 0 for pid in web)
        # 64 connections opened in one burst are split evenly (within one: a connection just
        # closed may not have been counted out yet). By a hash (a listening socket each,
        # SO_REUSEPORT) the split is binomial, 32 +- 4, and one shared socket split them
        # 44/20 and worse.
        assert _even(_split(server, 64), 64)
        # New connections go to the process with fewer until they are even.
        held = [_healthz(server.port) for _ in range(10)]
        try:
            assert _even(sorted(_web_processes(server).values()), 10)
            assert _even(_split(server, 20), 30)
        finally:
            for conn in held:
                conn.close()


def test_a_websocket_counts_while_it_is_open_and_not_after(env: dict[str, str]) -> None:
    manage(env, "createuser", "ws-worker", "--role", "worker", "--password", PASSWORD)
    with live_server(env, workers=2) as server:
        web = _two_serving(server)
        status, body = server.request(
            "POST", "/api/v1/auth/token/", {"username": "ws-worker", "password": PASSWORD}
        )
        assert status == 200, body
        time.sleep(0.5)  # the answered requests' connections closed and counted out

        def holder(client_port: int) -> int:
            (pid,) = [pid for pid in web if client_port in _peer_ports(pid, server.port)]
            return pid

        # An HTTP connection upgraded to a WebSocket stays counted: six open at once are
        # split as any six connections.
        sockets = [ws_connect(server, f"/ws/worker/?token={body['token']}") for _ in range(6)]
        opened = list(sockets)
        try:
            holders = {id(ws): holder(ws.socket.getsockname()[1]) for ws in sockets}
            assert _even(sorted(Counter(holders.values()).values()), 6)
            # Closed, a process's WebSockets are counted out: it gets the next connections.
            emptied = holders[id(sockets[0])]
            for ws in sockets:
                if holders[id(ws)] == emptied:
                    ws.close()
                    opened.remove(ws)
            deadline = time.monotonic() + 10
            while _peer_ports(emptied, server.port):
                assert time.monotonic() < deadline, "the WebSockets did not close"
                time.sleep(0.05)
            fresh = [_healthz(server.port) for _ in range(3)]
            try:
                landed = [holder(conn.getsockname()[1]) for conn in fresh]
            finally:
                for conn in fresh:
                    conn.close()
            assert landed.count(emptied) >= 2, (landed, emptied)
        finally:
            for ws in opened:
                ws.close()


def test_a_dead_web_process_is_replaced_and_sighup_replaces_all(
    env: dict[str, str],
) -> None:
    with live_server(env, workers=2) as server:
        web = _two_serving(server)
        victim = next(iter(web))
        os.kill(victim, signal.SIGKILL)
        after = _two_serving(server, gone=victim)
        # Once it serves, the new process gets its share, and nothing is sent to the dead
        # one's channel (a connection lost there would fail the split's reads).
        (replacement,) = set(after) - set(web)
        deadline = time.monotonic() + 30
        while True:
            with _healthz(server.port):
                if _web_processes(server)[replacement]:
                    break
            assert time.monotonic() < deadline, "no connection reached the new process"
        assert _even(_split(server, 20), 20)

        # SIGHUP: every process replaced, one by one, the port answering throughout.
        os.kill(server.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 90
        while set(_web_processes(server)) & set(after):
            _healthz(server.port).close()
            assert time.monotonic() < deadline, "SIGHUP did not replace the processes"
        _two_serving(server)
        _healthz(server.port).close()

        # SIGTERM: the launcher stops its processes and exits.
        server.process.terminate()
        assert server.process.wait(timeout=40) == 0
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", server.port)) != 0


def test_a_web_process_that_cannot_load_the_app_stops_the_launcher(env: dict[str, str]) -> None:
    broken = {**env, "DJANGO_SETTINGS_MODULE": "crowd.no_such_settings"}
    done = subprocess.run(
        [sys.executable, "-m", "crowd.serve", "--host", "127.0.0.1", "--port", "0",
         "--workers", "2"],
        cwd=ROOT, env=broken, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    assert "before it served; stopping" in done.stderr


def test_a_second_launcher_on_a_port_in_use_refuses_to_start(env: dict[str, str]) -> None:
    with live_server(env, workers=2) as server:
        done = subprocess.run(
            [sys.executable, "-m", "crowd.serve", "--host", "127.0.0.1",
             "--port", str(server.port), "--workers", "2"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 3, done.stderr[-2000:]
        assert f"cannot listen on 127.0.0.1:{server.port}" in done.stderr
        assert "in use" in done.stderr
        _healthz(server.port).close()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_web_processes_stop_when_their_launcher_is_killed(env: dict[str, str]) -> None:
    # Killed, the launcher cannot stop its processes: they notice and stop on their own,
    # rather than serve on alone, unsupervised, on a port a new launcher cannot take.
    with live_server(env, workers=2) as server:
        orphans = list(_two_serving(server))
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in orphans):
            assert time.monotonic() < deadline, "web processes outlived their launcher"
            time.sleep(0.2)
