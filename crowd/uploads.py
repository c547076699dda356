"""JSON files uploaded in a form (imports of predictions and gold)."""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework.request import Request

from crowd.errors import InvalidInput, PayloadTooLarge

FORM_FIELDS_ROOM = 64 * 1024  # the form's other fields, beside the file


def json_file_load(request: Request, *, limit: int, what: str, code: str) -> Any:
    """The parsed JSON of a multipart request's ``file`` of at most ``limit`` bytes. A
    request past the limit is refused from its Content-Length before its body is read; the
    file itself is spooled to disk by Django's upload handlers, so only parsing holds it in
    memory. ``what`` names the file in messages ("predictions file"); ``code`` is the 400's
    code when it is not JSON."""
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    if length > limit + FORM_FIELDS_ROOM:
        raise PayloadTooLarge(f"The request is {length:,} bytes; at most {limit:,}.")
    upload = request.FILES.get("file")
    if upload is None:
        raise InvalidInput(errors={"file": [f"Attach the {what} as `file`."]})
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLarge(f"The file is {upload.size:,} bytes; at most {limit:,}.")
    try:
        return orjson.loads(upload.read())
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            "The file is not JSON; nothing was stored.",
            code=code,
            errors={"file": [f"Not JSON: {exc}"]},
        ) from None
