from __future__ import annotations

from django.conf import settings
from django.db import models

from tasks.models import Image, Project


class GoldAnswer(models.Model):
    """The expert answer for an image, in full-image pixels. Never shown to workers."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="gold_answers")
    image = models.OneToOneField(Image, on_delete=models.CASCADE, related_name="gold_answer")
    annotations = models.JSONField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
