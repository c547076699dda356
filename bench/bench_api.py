"""Authenticated API round trips through a real server process on the embedded default."""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from typing import Any

from bench import percentile
from tests.e2e.server import live_server, manage, server_env

NAME = "api"
DESCRIPTION = "GET /api/v1/me/ and /healthz over HTTP/1.1 keep-alive, one uvicorn process, SQLite"


def _load(port: int, path: str, token: str, clients: int, per_client: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def client() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine: list[float] = []
        bad = 0
        for _ in range(per_client):
            started = time.perf_counter()
            conn.request("GET", path, headers={"Authorization": f"Token {token}"})
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            bad += response.status != 200
        conn.close()
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "path": path,
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    env = server_env()
    manage(env, "migrate", "--noinput")
    manage(env, "seed_demo")
    per_client = 50 if quick else 500
    rows = []
    with live_server(env) as server:
        status, body = server.request(
            "POST", "/api/v1/auth/token/", {"username": "worker1", "password": "demo-worker-pass"}
        )
        assert status == 200, body
        token = body["token"]
        for path in ("/healthz", "/api/v1/me/"):
            for clients in (1, 8):
                rows.append(_load(server.port, path, token, clients, per_client))
    return rows
