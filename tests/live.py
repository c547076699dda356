"""The production channel layer on a test's Redis."""

from __future__ import annotations

import uuid
from typing import Any


def redis_channel_layers(url: str, tag: str = "test") -> tuple[dict[str, Any], str]:
    """``CHANNEL_LAYERS`` for the production layer on the Redis at ``url``, under a prefix of
    its own (so tests sharing a server do not hear each other), and that prefix."""
    prefix = f"crowd-{tag}-{uuid.uuid4().hex[:8]}"
    layers = {
        "default": {
            "BACKEND": "crowd.layers.RedisBroadcastLayer",
            "CONFIG": {"hosts": [{"address": url}], "prefix": prefix},
        }
    }
    return layers, prefix
