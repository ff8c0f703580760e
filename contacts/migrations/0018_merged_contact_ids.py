import re

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

MERGED_RECORD_ID = re.compile(r"^#(\d+)\b")


def pointers_from_history(apps, schema_editor):
    """Merges made before this table existed left their merged id in the kept contact's history."""
    HistoryEntry = apps.get_model("contacts", "HistoryEntry")
    MergedContact = apps.get_model("contacts", "MergedContact")
    pointers = {}
    # Oldest first: where an id shows up twice, the later merge is the one that holds it now.
    for entry in HistoryEntry.objects.filter(action="merged").order_by("created_at", "pk").iterator():
        record = (entry.changes or {}).get("merged_contact")
        found = MERGED_RECORD_ID.match(record[1] or "") if isinstance(record, list) and len(record) == 2 else None
        if found:
            pointers[int(found.group(1))] = MergedContact(merged_id=int(found.group(1)), contact_id=entry.contact_id,
                                                          merged_at=entry.created_at)
    MergedContact.objects.bulk_create(pointers.values(), batch_size=1000)


class Migration(migrations.Migration):

    dependencies = [
        ("contacts", "0017_sqlite_touch_times"),
    ]

    operations = [
        migrations.CreateModel(
            name="MergedContact",
            fields=[
                ("merged_id", models.BigIntegerField(primary_key=True, serialize=False)),
                ("merged_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("contact", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="merged_ids", to="contacts.contact")),
            ],
        ),
        migrations.RunPython(pointers_from_history, migrations.RunPython.noop),
    ]
