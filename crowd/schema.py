"""The OpenAPI schema's view of errors: every operation documents the error statuses it can
answer with, each carrying the one error body (``{"detail", "code", "errors"}``)."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny


@extend_schema_field(
    {
        "type": "object",
        "description": "Field name -> what is wrong with it; empty when the error concerns no "
        "field. Mostly a list of messages; an object of the same form for nested input (keyed "
        "by field or by list index); a conflict may name the object it conflicts with.",
        "additionalProperties": {
            "anyOf": [
                {"type": "array", "items": {"type": "string"}},
                {"type": "object", "additionalProperties": True},
                {"type": "string", "nullable": True},
                {"type": "integer"},
            ]
        },
    }
)
class ErrorsField(serializers.DictField):
    pass


ErrorOut = inline_serializer(
    "ErrorOut",
    {
        "detail": serializers.CharField(help_text="What went wrong, for a person to read."),
        "code": serializers.CharField(help_text="A stable code for programs to match on."),
        "errors": ErrorsField(),
    },
)


WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class AutoSchema(SpectacularAutoSchema):
    def get_tags(self) -> list[str]:
        # Instead of the path's first segment; extend_schema(tags=...) still overrides this.
        return [tag_for(self.path)]

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


# --- Annotation items -------------------------------------------------------------------------
# One item of ``annotations`` per kind (shared/API.md). Each closes its properties, so an item
# matches exactly one of them: a box is not also a classification with an extra key.
_LABEL = {"type": "string", "description": "One of the project's label names."}
_MERGED = {
    "score": {
        "type": "number",
        "description": "Merged labels only: the consensus's confidence in this object.",
    },
    "num_votes": {
        "type": "integer",
        "description": "Merged labels only: how many answers marked this object.",
    },
}
_POINT = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
ANNOTATION_ITEMS: dict[str, dict[str, Any]] = {
    "MaskItem": {
        "type": "object",
        "description": "mask: one mask of the full image as COCO compressed RLE, as "
        "pycocotools.mask.encode writes it (counts decoded to a string); non-empty, and in a "
        "semantic project not overlapping the answer's other masks.",
        "properties": {
            "label": _LABEL,
            "rle": {
                "type": "object",
                "properties": {
                    "size": {
                        "type": "array",
                        "items": {"type": "integer"},
                        "minItems": 2,
                        "maxItems": 2,
                        "description": "[height, width] of the image.",
                    },
                    "counts": {"type": "string", "description": "COCO compressed RLE counts."},
                },
                "required": ["size", "counts"],
                "additionalProperties": False,
            },
            **_MERGED,
        },
        "required": ["label", "rle"],
        "additionalProperties": False,
    },
    "KeypointsItem": {
        "type": "object",
        "description": "keypoints: one instance, its points in the order of the label's "
        "keypoint names; v is 0 absent (x, y then 0), 1 occluded, 2 visible.",
        "properties": {
            "label": _LABEL,
            "keypoints": {
                "type": "array",
                "items": {
                    "type": "array",
                    "items": {"type": "number"},
                    "minItems": 3,
                    "maxItems": 3,
                },
                "description": "[[x, y, v], ...] in full-image pixels.",
            },
            **_MERGED,
        },
        "required": ["label", "keypoints"],
        "additionalProperties": False,
    },
    "PolygonItem": {
        "type": "object",
        "description": "polygon: one outline of at least 3 points enclosing an area.",
        "properties": {
            "label": _LABEL,
            "points": {
                "type": "array",
                "items": _POINT,
                "minItems": 3,
                "description": "[[x, y], ...] in full-image pixels.",
            },
            **_MERGED,
        },
        "required": ["label", "points"],
        "additionalProperties": False,
    },
    "BoxItem": {
        "type": "object",
        "description": "bbox: one box; a few pixels past the image's edge are clipped to it.",
        "properties": {
            "label": _LABEL,
            "bbox": {
                "type": "array",
                "items": {"type": "number"},
                "minItems": 4,
                "maxItems": 4,
                "description": "[x, y, width, height] in full-image pixels, origin top-left.",
            },
            **_MERGED,
        },
        "required": ["label", "bbox"],
        "additionalProperties": False,
    },
    "ClassificationItem": {
        "type": "object",
        "description": "classification: the one label of the image (exactly one item).",
        "properties": {"label": _LABEL, **_MERGED},
        "required": ["label"],
        "additionalProperties": False,
    },
}
ANNOTATIONS_SCHEMA = {
    "type": "array",
    "items": {"oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in ANNOTATION_ITEMS]},
    "description": "The objects of one answer, items as the project's kind has them (none "
    "means nothing to mark here; a classification has exactly one).",
}


@extend_schema_field(ANNOTATIONS_SCHEMA)
class AnnotationsField(serializers.JSONField):
    """``annotations``: parsed as JSON, checked against the project by its validator; the schema
    names the item of each kind."""


def add_components(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Post-processing hook: the annotation items, which the fields above refer to by name."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in ANNOTATION_ITEMS.items():
        schemas.setdefault(name, schema)
    return result


# --- Tags -------------------------------------------------------------------------------------
# Each operation's tag, by the first rule its path (after /api/v1/) matches; the tags'
# descriptions are SPECTACULAR_SETTINGS["TAGS"].
TAG_RULES: tuple[tuple[str, str], ...] = (
    (r"^auth/", "Accounts"),
    (r"^clients/", "Accounts"),
    (r"^me/$", "Accounts"),
    (r"^me/(assignments)/", "Work"),
    (r"^assignments/\{[a-z_]+\}/(submit|skip)/", "Work"),
    (r"^projects/\{[a-z_]+\}/assignments/", "Work"),
    (r"^projects/\{[a-z_]+\}/me/", "Work"),
    (r"^me/", "Money"),
    (r"^payouts/", "Money"),
    (r"^assignments/", "Review"),
    (r"^projects/\{[a-z_]+\}/(reviews|bonuses)/", "Review"),
    (r"^projects/\{[a-z_]+\}/(gold|workers|agreement|consensus|tasks/\{)", "Quality"),
    (r"(^|/)exports/", "Datasets"),
    (r"^projects/\{[a-z_]+\}/predictions/", "Models"),
    (r"^images/\{[a-z_]+\}/signed/", "Models"),
    (r"^images/", "Images"),
    (r"^projects/\{[a-z_]+\}/images/", "Images"),
    (r"^projects/", "Projects"),
)


def tag_for(path: str) -> str:
    rest = re.sub(r"^/api/v1/", "", path)
    for pattern, tag in TAG_RULES:
        if re.search(pattern, rest):
            return tag
    raise LookupError(f"No tag rule matches {path}")
