"""On SQLite, rewrite contact times that the intake's raw touch stored as "...+00:00" text.

The ORM stores bare UTC text there; SQLite compares the two as text, so those contacts sorted
after their own cursor and a keyset walk returned them again. PostgreSQL stores a timestamp
either way and needs nothing.
"""

from django.db import migrations


def bare_utc(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    for column in ("updated_at", "last_activity_at"):
        schema_editor.execute(
            f"UPDATE contacts_contact SET {column} = substr({column}, 1, length({column}) - 6) "
            f"WHERE {column} LIKE '%+00:00'"
        )


class Migration(migrations.Migration):
    dependencies = [("contacts", "0016_import_job_reverting")]
    operations = [migrations.RunPython(bare_utc, migrations.RunPython.noop)]
