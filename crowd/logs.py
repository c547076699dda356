"""Log hygiene: API tokens never reach the logs.

WebSocket clients may authenticate with ``?token=...`` in the URL, and the ASGI server logs
every handshake's path (``uvicorn.error``) and every request line (``uvicorn.access``). The
filter rewrites those messages' arguments before they are formatted.
"""

from __future__ import annotations

import logging
import re

_TOKEN = re.compile(r"((?:^|[?&])token=)[^&\s\"']+", re.IGNORECASE)
SERVER_LOGGERS = ("uvicorn.error", "uvicorn.access")


def redact(text: str) -> str:
    return _TOKEN.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def redact_server_logs() -> None:
    """Install the filter on the ASGI server's loggers (once per logger)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
