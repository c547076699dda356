import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("qa", "0009_export_format_cityscapes"),
        ("tasks", "0007_predictions"),
    ]

    operations = [
        migrations.CreateModel(
            name="ModelScore",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("model_version", models.CharField(max_length=200)),
                ("fingerprint", models.CharField(blank=True, default="", max_length=200)),
                ("gold_seen", models.PositiveIntegerField(default=0)),
                ("gold_passed", models.PositiveIntegerField(default=0)),
                ("gold_score_sum", models.FloatField(default=0.0)),
                ("details", models.JSONField(default=dict)),
                ("calibration", models.JSONField(default=dict)),
                ("model_seen", models.FloatField(default=0.0)),
                ("model_sum", models.FloatField(default=0.0)),
                ("model_params", models.JSONField(default=dict)),
                ("computed_at", models.DateTimeField(auto_now=True)),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="model_scores",
                        to="tasks.project",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("project", "model_version"), name="model_score_version_unique"
                    )
                ],
            },
        ),
    ]
