from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0009_task_actor_label"),
    ]

    operations = [
        migrations.AlterField(
            model_name="importmapping",
            name="header_key",
            field=models.CharField(
                help_text=(
                    "SHA-256 of the sorted, normalized header names (a failed-rows file's error column left out): "
                    "the same headers in any order share one mapping."
                ),
                max_length=64,
                unique=True,
            ),
        ),
    ]
