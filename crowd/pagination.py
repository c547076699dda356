"""One shape for every list the API pages: ``{"count", "next", "previous", "results"}``, with
``?limit`` (at most ``Page.max_limit``) and ``?offset``. Plain views page through
:func:`paginate`; the schema names the same shape with :func:`page_of`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, inline_serializer
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class Page(LimitOffsetPagination):
    default_limit = 50
    # A page is built in one request: a client asking for a million rows gets this many.
    max_limit = 500


def paginate(
    request: Request,
    view: APIView,
    rows: Any,  # a queryset or a list
    render: Callable[[Iterable[Any]], list[Any]],
) -> Response:
    """One page of ``rows`` (a queryset or a list), each rendered by ``render``."""
    paginator = Page()
    page = paginator.paginate_queryset(rows, request, view=view) or []
    return paginator.get_paginated_response(render(page))


def page_of(item: serializers.Serializer | type[serializers.Serializer], name: str) -> Any:
    """The schema of one page of ``item``s, as a component named ``name``."""
    many = (item if isinstance(item, type) else type(item))(many=True)
    return inline_serializer(
        name,
        {
            "count": serializers.IntegerField(help_text="Rows in the whole list."),
            "next": serializers.URLField(
                allow_null=True, help_text="The next page, or null on the last."
            ),
            "previous": serializers.URLField(
                allow_null=True, help_text="The previous page, or null on the first."
            ),
            "results": many,
        },
    )


# The query parameters of every paged list, for extend_schema(parameters=...).
PAGE_PARAMETERS = [
    OpenApiParameter(
        "limit",
        OpenApiTypes.INT,
        description=f"Rows per page (default {Page.default_limit}, at most {Page.max_limit}; "
        "more is capped).",
    ),
    OpenApiParameter("offset", OpenApiTypes.INT, description="Rows to skip (default 0)."),
]
