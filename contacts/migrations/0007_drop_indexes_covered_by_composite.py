"""Drop four single-column foreign-key indexes that a composite index already leads with.

contacttag.contact_id: the unique (contact_id, tag_id); contacttag.tag_id: (tag_id, contact_id);
historyentry.contact_id: (contact_id, created_at DESC); importchange.job_id: (job_id, created).
Every tag link, history row and undo-log row paid for them. Only the indexes go: the state change is
db_index=False, and the database keeps its foreign-key constraints (Django's own AlterField would
drop and re-add them, re-checking every row of these large tables).
"""

import django.db.models.deletion
from django.db import migrations, models

from crm_hub.migration_ops import drop_single_column_indexes


class Migration(migrations.Migration):

    dependencies = [
        ('contacts', '0006_drop_redundant_contact_indexes'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[drop_single_column_indexes([
                ("contacts_contacttag", "contact_id"),
                ("contacts_contacttag", "tag_id"),
                ("contacts_historyentry", "contact_id"),
                ("contacts_importchange", "job_id"),
            ])],
            state_operations=[
                migrations.AlterField(
                    model_name='contacttag',
                    name='contact',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, to='contacts.contact'),
                ),
                migrations.AlterField(
                    model_name='contacttag',
                    name='tag',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, to='contacts.tag'),
                ),
                migrations.AlterField(
                    model_name='historyentry',
                    name='contact',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='history', to='contacts.contact'),
                ),
                migrations.AlterField(
                    model_name='importchange',
                    name='job',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='changes', to='contacts.importjob'),
                ),
            ],
        ),
    ]
