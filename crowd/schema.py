"""The OpenAPI schema's view of errors: every operation documents the error statuses it can
answer with, each carrying the one error body (``{"detail", "code", "errors"}``)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny

ErrorOut = inline_serializer(
    "ErrorOut",
    {
        "detail": serializers.CharField(),
        "code": serializers.CharField(),
        # Field name -> messages; empty when the error concerns no field.
        "errors": serializers.DictField(),
    },
)


WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class AutoSchema(SpectacularAutoSchema):
    def _error_statuses(self) -> dict[str, str]:
        view = self.view
        authenticated = bool(getattr(view, "authentication_classes", []))
        anyone = any(
            isinstance(p, AllowAny) for p in (view.get_permissions() if authenticated else [])
        )
        statuses = {"400": "Invalid input (the errors name the fields)."}
        if authenticated:
            statuses["401"] = "Not authenticated, or the token is not valid."
            if not anyone or self.method in WRITES:
                # Role checks, and the CSRF check of session-authenticated writes.
                statuses["403"] = "Not allowed for this role, or a session write without CSRF."
        if "{" in self.path:
            statuses["404"] = "No such object, or not one of yours."
        if self.method in WRITES:
            statuses["409"] = "The request conflicts with the object's current state."
            statuses["413"] = "The request body is larger than allowed."
            statuses["415"] = "The body's media type is not one this operation reads."
        if getattr(view, "throttle_classes", None) or getattr(view, "throttle_scope", None):
            statuses["429"] = "Too many requests; retry after the Retry-After header's seconds."
        statuses["503"] = "The database is briefly unreachable; retry after Retry-After."
        return statuses

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        for code, description in self._error_statuses().items():
            if code not in responses:
                error = self._get_response_for_code(ErrorOut, code, direction=direction)
                responses[code] = {**error, "description": description}
        return responses
