from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0007_predictions"),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="prelabel_holdout",
            field=models.FloatField(db_default=0.1, default=0.1),
        ),
        migrations.AddField(
            model_name="assignment",
            name="prelabels",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
