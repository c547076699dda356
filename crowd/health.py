"""``GET /healthz``: is this process able to serve? Checks the database, the channel layer and,
with the files in a bucket, the file store."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse

from crowd import storage

CHANNEL_LAYER_TIMEOUT = 3.0


def _check_database() -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means unhealthy; the reason is reported, not raised
        return {"ok": False, "vendor": connection.vendor, "error": type(exc).__name__}
    finally:
        connection.close_if_unusable_or_obsolete()
    return {"ok": True, "vendor": connection.vendor, "ms": _ms(started)}


async def _check_channel_layer() -> dict[str, Any]:
    layer = get_channel_layer()
    if layer is None:
        return {"ok": False, "error": "no channel layer configured"}
    started = time.perf_counter()
    backend = type(layer).__name__
    try:
        # A real round trip through the layer, not just a ping: what consumers depend on.
        channel = await layer.new_channel("healthz.")
        await asyncio.wait_for(layer.send(channel, {"type": "healthz"}), CHANNEL_LAYER_TIMEOUT)
        message = await asyncio.wait_for(layer.receive(channel), CHANNEL_LAYER_TIMEOUT)
        discard = getattr(layer, "discard_channel", None)
        if discard is not None:  # a pub/sub layer: drop the channel's subscription
            await discard(channel)
    except Exception as exc:  # as above: report, do not raise
        return {"ok": False, "backend": backend, "error": type(exc).__name__}
    return {"ok": message.get("type") == "healthz", "backend": backend, "ms": _ms(started)}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def healthz(request: HttpRequest) -> JsonResponse:
    database = await sync_to_async(_check_database, thread_sensitive=True)()
    channel_layer = await _check_channel_layer()
    store = None
    if storage.bucket() is not None:
        # In a thread of its own (boto3 blocks), beside the request's: at most HEALTH_TIMEOUT.
        store = await sync_to_async(storage.check, thread_sensitive=False)()
    ok = database["ok"] and channel_layer["ok"] and (store is None or store["ok"])
    body = {
        "status": "ok" if ok else "unavailable",
        "database": database,
        "channel_layer": channel_layer,
    }
    if store is not None:
        body["storage"] = store
    return JsonResponse(body, status=200 if ok else 503)
