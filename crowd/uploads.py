"""JSON files uploaded in a form (imports of predictions and gold)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from rest_framework import serializers
from rest_framework.request import Request

from crowd.errors import InvalidInput, PayloadTooLarge
from crowd.json_stream import JsonSource, Parsed, Streamed

FORM_FIELDS_ROOM = 64 * 1024  # the form's other fields, beside the file


def json_file(request: Request, *, limit: int, what: str) -> Streamed:
    """A multipart request's ``file`` of at most ``limit`` bytes, to be walked as JSON. A
    request past the limit is refused from its Content-Length before its body is read; the
    file itself is spooled to disk by Django's upload handlers and never parsed whole (its
    readers walk it, ``crowd.json_stream``), so a file that is not JSON is found out by them.
    ``what`` names the file in messages ("predictions file")."""
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    if length > limit + FORM_FIELDS_ROOM:
        raise PayloadTooLarge(f"The request is {length:,} bytes; at most {limit:,}.")
    upload = request.FILES.get("file")
    if upload is None:
        raise InvalidInput(errors={"file": [f"Attach the {what} as `file`."]})
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLarge(f"The file is {upload.size:,} bytes; at most {limit:,}.")
    return Streamed(upload)


def strict_field(item: str) -> serializers.BooleanField:
    """The ``strict`` field of an import's schema; ``item`` names one thing it imports."""
    return serializers.BooleanField(
        required=False,
        default=True,
        help_text=f"true (default): any invalid {item} is a 400 and nothing is stored; "
        "false: the valid ones are stored and the others listed under rejected.",
    )


def format_field(formats: Collection[str]) -> serializers.CharField:
    """The ``format`` field of a file import's schema. Text, not an enum: an enum named
    "format" would take the name of the dataset exports' format enum that generated clients
    already use."""
    return serializers.CharField(
        required=False,
        help_text=f"One of {', '.join(formats)}; read from the file's shape when omitted.",
    )


@dataclass(frozen=True)
class Import:
    """An import request as read: its data, ``strict``, its format (None: find it out), and
    the request's other fields."""

    data: JsonSource
    strict: bool
    format_name: str | None
    fields: Mapping[str, Any]


def strict_flag(value: Any) -> bool:
    """The ``strict`` field of an import: a boolean as a form or JSON gives it."""
    try:
        return bool(serializers.BooleanField().to_internal_value(value))
    except serializers.ValidationError:
        raise InvalidInput(errors={"strict": ["true or false."]}) from None


def json_body_import(request: Request, *, shape: str, code: str) -> Import:
    """An import in our own format as a JSON object body; ``shape`` tells what to give when
    the body is not an object, and ``code`` is that 400's code."""
    body = request.data
    if not isinstance(body, dict):
        raise InvalidInput(f"Give {shape}.", code=code)
    return Import(
        data=Parsed({k: v for k, v in body.items() if k != "strict"}),
        strict=strict_flag(body.get("strict", True)),
        format_name="crowd",
        fields=body,
    )


def json_file_import(
    request: Request, *, limit: int, what: str, formats: Collection[str]
) -> Import:
    """An import as a JSON file in a form (see :func:`json_file`), with its optional
    ``format`` (one of ``formats``) and ``strict`` fields."""
    data = json_file(request, limit=limit, what=what)
    fields = request.data
    format_name = fields.get("format") or None
    if format_name is not None and format_name not in formats:
        raise InvalidInput(errors={"format": [f"One of: {', '.join(formats)}."]})
    return Import(
        data=data,
        strict=strict_flag(fields.get("strict", True)),
        format_name=format_name,
        fields=fields,
    )
