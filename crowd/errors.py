"""Domain exceptions and the one place that turns any error into the API's JSON error shape.

Every API error is ``{"detail": str, "code": str, "errors": {...}}`` with a 4xx (or 503 when
the database is unreachable). Services raise the exceptions below; views never build errors.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class DomainError(Exception):
    """Base of the errors services raise; each maps to one HTTP status."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    code: str = "invalid"
    default_detail: str = "The request could not be carried out."

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        errors: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        if code:
            self.code = code
        self.errors = errors or {}
        # Fields shown beside the error, as a success would show them (an upload's per-file
        # results), so a client reads one shape either way.
        self.extra = extra or {}
        super().__init__(self.detail)


class InvalidInput(DomainError):
    code = "invalid"
    default_detail = "Invalid input."


class NotFound(DomainError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"
    default_detail = "Not found."


class Forbidden(DomainError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "permission_denied"
    default_detail = "You do not have permission to perform this action."


class Conflict(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"
    default_detail = "The request conflicts with the current state."


class PayloadTooLarge(DomainError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"
    default_detail = "The request body is larger than allowed."


class ServiceUnavailable(DomainError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "unavailable"
    default_detail = "The service is briefly unavailable; retry shortly."


class StorageUnavailable(ServiceUnavailable):
    code = "storage_unavailable"
    default_detail = "The file store cannot be reached; the file was not stored. Try again shortly."


def error_body(detail: str, code: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"detail": detail, "code": code, "errors": errors or {}}


def _validation_errors(detail: Any) -> dict[str, Any]:
    if isinstance(detail, dict):
        return dict(detail)
    if isinstance(detail, list):
        return {"non_field_errors": detail}
    return {"non_field_errors": [detail]}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, OperationalError | InterfaceError):
        # A lost or refused database connection: the request was not carried out (its
        # transaction rolled back), so the client may retry it.
        exc = ServiceUnavailable()
    elif isinstance(exc, BotoCoreError | ClientError):
        # The file bucket unreachable or refusing: the file that failed has no row and no
        # object (see tasks.ingest), so the client may retry.
        exc = StorageUnavailable()
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(
            f"The request body is larger than the {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} "
            "bytes allowed."
        )
    if isinstance(exc, DomainError):
        domain_response = Response(
            {**exc.extra, **error_body(exc.detail, exc.code, exc.errors)},
            status=exc.status_code,
        )
        if exc.status_code == status.HTTP_503_SERVICE_UNAVAILABLE:
            domain_response["Retry-After"] = "5"
        return domain_response
    if isinstance(exc, DatabaseError):
        return None  # a programming error, not the client's: let it surface as a server error
    if isinstance(exc, Http404):
        # Django's 404 reaches a view mostly from content negotiation: ?format=xml.
        fmt = getattr(context.get("request"), "query_params", {}).get("format")
        exc = drf_exceptions.NotFound(
            f"No such format {fmt!r}: this API answers JSON." if fmt else None
        )
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if isinstance(exc, DjangoValidationError):
        exc = drf_exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )

    # DRF's handler maps Http404/PermissionDenied and sets WWW-Authenticate and Retry-After.
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    assert isinstance(exc, drf_exceptions.APIException)
    if isinstance(exc, drf_exceptions.ValidationError):
        response.data = error_body("Invalid input.", "invalid", _validation_errors(exc.detail))
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        response.data = error_body(str(exc.detail), code)
    return response


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 404 for paths no view matched: JSON under /api/, the HTML page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("Not found.", "not_found"), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("Server error.", "server_error"), status=500)
    return defaults.server_error(request)
