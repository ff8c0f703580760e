"""django-import-export resource for exporting contacts from the admin, formula-safe."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from import_export import fields, resources

from contacts.exporting import EXPORT_CHUNK, custom_cell
from contacts.exporting import neutralize_cell as neutralize
from contacts.models import Contact, CustomField
from contacts.services import STANDARD_FIELDS


class ContactExportResource(resources.ModelResource):
    phone_e164 = fields.Field(attribute="phone_e164", column_name="phone_e164")
    tags = fields.Field(column_name="tags")
    owner = fields.Field(column_name="owner")

    class Meta:
        model = Contact
        fields = ("id", *STANDARD_FIELDS, "phone_e164", "source", "owner", "tags", "created_at", "updated_at")
        export_order = fields

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # One column per custom field, named by its immutable key (what import maps back).
        for definition in CustomField.objects.all():
            name = f"custom_{definition.key}"
            self.fields[name] = fields.Field(column_name=f"custom.{definition.key}", attribute=None)
            self.fields[name].custom_definition = definition

    def get_export_order(self):
        return tuple(self.fields)

    def filter_export(self, queryset, **kwargs):
        return queryset.select_related("owner").prefetch_related("tags")

    def export_field(self, field, instance, **kwargs):
        definition = getattr(field, "custom_definition", None)
        if definition is not None:
            return neutralize(custom_cell(definition, (instance.custom or {}).get(definition.key)))
        return neutralize(super().export_field(field, instance, **kwargs))

    def iter_rows(self, queryset, *, selected_fields=None, native: bool = False) -> Iterator[list[Any]]:
        """Yield the header, then one row per contact, reading EXPORT_CHUNK contacts at a time.

        The stock ``export`` builds the whole file as one tablib Dataset (and pages
        prefetching querysets with OFFSET), so an admin export of every contact held
        them all in memory; this feeds the same cells to a streamed response instead.
        """
        yield self.get_export_headers(selected_fields=selected_fields)
        rows = self.filter_export(queryset).iterator(chunk_size=EXPORT_CHUNK)
        for contact in rows:
            yield self.export_resource(contact, selected_fields=selected_fields, force_native_type=native)

    def dehydrate_tags(self, contact: Contact) -> str:
        return ", ".join(t.name for t in contact.tags.all())

    def dehydrate_owner(self, contact: Contact) -> str:
        return contact.owner.get_username() if contact.owner else ""
