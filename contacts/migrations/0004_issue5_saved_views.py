"""Saved contact-list views, and the indexes the contact list's sorts, filters and search need.

The indexes are created with SQL (not in model state) so the foundation's Contact model stays
untouched; PostgreSQL also gets trigram indexes for the name/company "contains" search and a
pattern index for the email prefix search.
"""

import django.db.models.deletion
import django.db.models.functions.text
from django.conf import settings
from django.db import migrations, models


PORTABLE_INDEXES = {
    # Keyset pagination: ORDER BY <key>, id must walk an index from any cursor.
    "contact_created_id_idx": "contacts_contact (created_at DESC, id DESC)",
    "contact_updated_id_idx": "contacts_contact (updated_at DESC, id DESC)",
    "contact_name_id_idx": "contacts_contact (lower(name), id)",
    "contact_company_id_idx": "contacts_contact (lower(company), id)",
    # Board columns and the stage filter: contacts of one stage, and tag membership by tag.
    "contactstage_stage_contact_idx": "contacts_contactstage (stage_id, contact_id)",
    "task_status_due_idx": "contacts_task (status, due_at)",
}
POSTGRES_INDEXES = {
    "contact_name_trgm_idx": "contacts_contact USING gin ((upper(name::text)) gin_trgm_ops)",
    "contact_company_trgm_idx": "contacts_contact USING gin ((upper(company::text)) gin_trgm_ops)",
    "contact_email_pattern_idx": "contacts_contact (email_normalized varchar_pattern_ops)",
}


def create_indexes(apps, schema_editor):
    indexes = dict(PORTABLE_INDEXES)
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        indexes.update(POSTGRES_INDEXES)
    for name, target in indexes.items():
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {target}")


def drop_indexes(apps, schema_editor):
    names = list(PORTABLE_INDEXES)
    if schema_editor.connection.vendor == "postgresql":
        names += list(POSTGRES_INDEXES)
    for name in names:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):

    dependencies = [
        ('contacts', '0003_custom_gin_index'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='SavedView',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=80)),
                ('shared', models.BooleanField(default=False, help_text='Everyone on the team sees it; only the owner changes it.')),
                ('query', models.TextField(blank=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('owner', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='saved_views', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': [django.db.models.functions.text.Lower('name'), 'id'],
                'indexes': [models.Index(condition=models.Q(('shared', True)), fields=['shared'], name='savedview_shared_idx')],
                'constraints': [models.UniqueConstraint(models.F('owner'), django.db.models.functions.text.Lower('name'), name='savedview_unique_name_per_owner_ci'), models.CheckConstraint(condition=models.Q(('name', ''), _negated=True), name='savedview_name_not_empty')],
            },
        ),
        migrations.RunPython(create_indexes, drop_indexes),
    ]
