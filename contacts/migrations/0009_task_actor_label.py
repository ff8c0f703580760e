from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0008_email_keys_in_unicode_domain_form"),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="actor_label",
            field=models.CharField(blank=True, max_length=160),
        ),
    ]
