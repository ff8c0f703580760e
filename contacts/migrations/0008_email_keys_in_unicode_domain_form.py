"""Email keys spelled with a punycode domain (x@xn--mail-9oa.com) move to the Unicode form (x@émail.com).

email_normalize now maps both spellings to the Unicode one. Where a contact already holds the
Unicode key, the two are one person written twice: the punycode one keeps its key and both are
flagged as a possible duplicate for staff, never merged here.
"""

from django.db import migrations


def to_unicode_domains(apps, schema_editor):
    from contacts.normalize import unicode_domain

    Contact = apps.get_model("contacts", "Contact")
    PossibleDuplicate = apps.get_model("contacts", "PossibleDuplicate")
    for contact in Contact.objects.filter(email_normalized__contains="xn--").only("pk", "email_normalized"):
        local, _, domain = contact.email_normalized.rpartition("@")
        key = f"{local}@{unicode_domain(domain)}"
        if key == contact.email_normalized:
            continue
        holder = Contact.objects.filter(email_normalized=key).exclude(pk=contact.pk).first()
        if holder is None:
            Contact.objects.filter(pk=contact.pk).update(email_normalized=key)
        elif not PossibleDuplicate.objects.filter(contact_id=contact.pk, other_id=holder.pk, status="open").exists():
            PossibleDuplicate.objects.create(
                contact_id=contact.pk, other_id=holder.pk, source="manual",
                reason=f"Same email in punycode and Unicode spelling ({key})",
            )


class Migration(migrations.Migration):

    dependencies = [
        ("contacts", "0007_drop_indexes_covered_by_composite"),
    ]

    operations = [
        migrations.RunPython(to_unicode_domains, migrations.RunPython.noop, elidable=True),
    ]
