"""Admin configuration rules the database and the forms now hold.

- Custom field keys are unique without case (``Budget`` beside ``budget`` was one field twice for
  imports, filters and agents). Existing case-only duplicates stop the migration with their names:
  keys are immutable, so an admin decides which field to delete (after moving its values) first.
- A stage move no longer keeps its stage from being deleted: ``StageChange.to_stage`` is set to
  NULL like ``from_stage``; the contact's "Stage changed" history entry keeps both names as text.
- Case-insensitive unique constraints say what went wrong instead of their names.
- Tag names refuse commas and semicolons and tag and stage colours must be #RRGGBB (form
  validation only: existing rows are left as they are).
"""

import django.core.validators
import django.db.models.deletion
import django.db.models.functions.text
from django.db import migrations, models
from django.db.models import Count
from django.db.models.functions import Lower

import contacts.models


def refuse_case_only_duplicate_keys(apps, schema_editor):
    CustomField = apps.get_model("contacts", "CustomField")
    clashes = (
        CustomField.objects.annotate(lower_key=Lower("key")).values("lower_key")
        .annotate(n=Count("id")).filter(n__gt=1).values_list("lower_key", flat=True)
    )
    groups = []
    for lower_key in clashes:
        keys = CustomField.objects.annotate(lower_key=Lower("key")).filter(lower_key=lower_key).values_list("key", flat=True)
        groups.append(" / ".join(sorted(keys)))
    if groups:
        raise RuntimeError(
            "Custom field keys that differ only in case: " + "; ".join(groups) + ". Keys must now be unique "
            "without case. In Django admin, move the contacts' values to one of each pair and delete the other "
            "field, then run migrate again."
        )


HEX_COLOUR = django.core.validators.RegexValidator(
    "^#[0-9A-Fa-f]{6}\\Z", "Write the colour as # and six hex digits (#RRGGBB), e.g. #2563eb.", code="invalid_colour"
)


class Migration(migrations.Migration):

    dependencies = [
        ("contacts", "0011_email_keys_uts46"),
    ]

    operations = [
        migrations.RunPython(refuse_case_only_duplicate_keys, migrations.RunPython.noop, elidable=True),
        migrations.AddConstraint(
            model_name="customfield",
            constraint=models.UniqueConstraint(
                django.db.models.functions.text.Lower("key"), name="customfield_unique_key_ci",
                violation_error_message="A custom field with this key already exists (keys are compared without case).",
            ),
        ),
        migrations.AlterField(
            model_name="stagechange",
            name="to_stage",
            field=models.ForeignKey(
                blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to="contacts.stage"
            ),
        ),
        migrations.AlterField(
            model_name="stage",
            name="color",
            field=models.CharField(default="#94a3b8", help_text="Hex colour, e.g. #94a3b8.", max_length=7, validators=[HEX_COLOUR]),
        ),
        migrations.AlterField(
            model_name="tag",
            name="color",
            field=models.CharField(default="#64748b", help_text="Hex colour, e.g. #2563eb.", max_length=7, validators=[HEX_COLOUR]),
        ),
        migrations.AlterField(
            model_name="tag",
            name="name",
            field=models.CharField(
                help_text="Shown to users and sent by agents; matched case-insensitively. No commas or semicolons.",
                max_length=60, validators=[contacts.models.validate_tag_name],
            ),
        ),
        migrations.AlterConstraint(
            model_name="pipeline",
            name="pipeline_unique_name_ci",
            constraint=models.UniqueConstraint(
                django.db.models.functions.text.Lower("name"), name="pipeline_unique_name_ci",
                violation_error_message="A pipeline with this name already exists (names are compared without case).",
            ),
        ),
        migrations.AlterConstraint(
            model_name="savedview",
            name="savedview_unique_name_per_owner_ci",
            constraint=models.UniqueConstraint(
                models.F("owner"), django.db.models.functions.text.Lower("name"), name="savedview_unique_name_per_owner_ci",
                violation_error_message="You already have a view with this name (names are compared without case).",
            ),
        ),
        migrations.AlterConstraint(
            model_name="stage",
            name="stage_unique_name_per_pipeline_ci",
            constraint=models.UniqueConstraint(
                models.F("pipeline"), django.db.models.functions.text.Lower("name"), name="stage_unique_name_per_pipeline_ci",
                violation_error_message="This pipeline already has a stage with this name (names are compared without case).",
            ),
        ),
        migrations.AlterConstraint(
            model_name="tag",
            name="tag_unique_name_ci",
            constraint=models.UniqueConstraint(
                django.db.models.functions.text.Lower("name"), name="tag_unique_name_ci",
                violation_error_message="A tag with this name already exists (names are compared without case).",
            ),
        ),
    ]
