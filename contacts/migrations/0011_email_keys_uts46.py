"""Email keys recomputed where the new rules read them differently: non-ASCII and punycode domains.

email_normalize now drops invisible format characters (zero-width space, soft hyphen), maps each
domain label through IDNA's UTS #46 (NFC, full-width letters, ß kept apart from ss) and decodes
every xn-- label under IDNA2008. Keys that are plain ASCII without xn-- cannot change, so only the
others are read again, from the email as entered. Where another contact already holds the new
key, the two are one person written twice: this one keeps its key and both are flagged as a
possible duplicate for staff, never merged here. An address the new rules refuse keeps its key.
"""

from django.db import migrations
from django.db.models import Q


def recompute_keys(apps, schema_editor):
    from contacts.normalize import InvalidEmail, email_normalize

    Contact = apps.get_model("contacts", "Contact")
    PossibleDuplicate = apps.get_model("contacts", "PossibleDuplicate")
    candidates = Contact.objects.filter(
        Q(email_normalized__contains="xn--") | Q(email_normalized__regex=r"[^ -~]")
    ).only("pk", "email", "email_normalized")
    for contact in candidates.iterator():
        try:
            key = email_normalize(contact.email)
        except InvalidEmail:
            continue
        if key == contact.email_normalized:
            continue
        holder = Contact.objects.filter(email_normalized=key).exclude(pk=contact.pk).first()
        if holder is None:
            Contact.objects.filter(pk=contact.pk).update(email_normalized=key)
        elif not PossibleDuplicate.objects.filter(contact_id=contact.pk, other_id=holder.pk, status="open").exists():
            PossibleDuplicate.objects.create(
                contact_id=contact.pk, other_id=holder.pk, source="manual",
                reason=f"Same email in two spellings ({key})",
            )


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0010_import_mapping_header_key_help"),
    ]

    operations = [
        migrations.RunPython(recompute_keys, migrations.RunPython.noop, elidable=True),
    ]
