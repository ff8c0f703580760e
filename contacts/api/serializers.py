"""Agent API shapes. Input serializers check types only; the services decide what is valid."""

from __future__ import annotations

import re

from django.core.validators import (
    MaxLengthValidator,
    MinLengthValidator,
    ProhibitNullCharactersValidator,
)
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import _UnvalidatedField
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from contacts.models import ChangeRequest, Contact, Note, Source, Task
from contacts.selectors import list_vocabulary
from contacts.services import STANDARD_FIELDS, TEXT_ONLY_FIELDS
from crm_hub.api.errors import validated
from crm_hub.api.inputs import RefusesUnknownKeys

FIELD_HELP = {
    "name": "Full name as the person gave it.",
    "identity": "Tax or national ID number. Protected: overwriting a filled one needs staff approval.",
    "phone": "Phone in any format (national numbers use the CRM's default region). The dedup key: matched first. Protected once filled.",
    "email": "Email address; matched case-insensitively when no phone matches. Protected once filled.",
    "company": "Company or organisation.",
    "position": "Job title.",
    "birthday": "Date of birth as YYYY-MM-DD.",
    "zip_code": "Postal code.",
    "country": "Country.",
    "state": "State or province.",
    "city": "City.",
    "district": "District or neighbourhood.",
    "street": "Street name.",
    "number": "Street number.",
    "complement": "Apartment, suite, floor.",
}


class StrictSerializer(RefusesUnknownKeys):
    """An input whose well-formed bodies skip DRF.

    ``clean(data)`` is what views call: a plain well-formed body is checked by a plan compiled
    once per class (DRF builds and deep-copies every field on every call, a visible share of
    an intake's time); anything else goes through DRF, which also words every error.
    """

    @classmethod
    def clean(cls, data) -> dict:
        plain = cls.plain(data)
        if plain is not None:
            return plain
        return validated(cls(data=data))

    @classmethod
    def plain(cls, data) -> dict | None:
        """The validated data of a plain well-formed body, or None when DRF must look at it."""
        plan = _plan_for(cls)
        if plan is None:
            return None
        try:
            return plan(data)
        except _NotPlain:
            return None


class _NotPlain(Exception):
    """The body needs DRF: it is invalid, or shaped in a way the compiled plan leaves to DRF."""


_PLANS: dict[type, object] = {}
# DRF's CharField refuses these (ProhibitSurrogateCharactersValidator); leave them to it.
_PLANNED_VALIDATORS = (
    MaxLengthValidator, MinLengthValidator, ProhibitNullCharactersValidator, ProhibitSurrogateCharactersValidator,
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _plan_for(cls):
    if cls not in _PLANS:
        _PLANS[cls] = _compile(cls())
    return _PLANS[cls]


def _compile(serializer):
    """A function doing what ``serializer`` does to a valid body, or None for a field type it does not know."""
    fields = {}
    for name, f in serializer.fields.items():
        if f.read_only:
            continue
        if f.source != name or any(not isinstance(v, _PLANNED_VALIDATORS) for v in f.validators):
            return None
        check = _compile_field(f)
        if check is None:
            return None
        fields[name] = (check, f.required, f.default)

    def run(data):
        if not isinstance(data, dict) or not data.keys() <= fields.keys():
            raise _NotPlain
        out = {}
        for name, (check, required, default) in fields.items():
            if name in data:
                out[name] = check(data[name])
            elif required:
                raise _NotPlain
            elif default is not serializers.empty:
                out[name] = default() if callable(default) else default
        return out

    return run


def _compile_field(f):
    allow_null = f.allow_null
    if isinstance(f, StrictSerializer):
        nested = _compile(f)
        if nested is None:
            return None

        def check_nested(value):
            return None if value is None and allow_null else nested(value)

        return check_nested
    if isinstance(f, serializers.ChoiceField):
        choices = {str(key): key for key in f.choices}

        def check_choice(value):
            if isinstance(value, str) and value in choices:
                return choices[value]
            raise _NotPlain

        return check_choice
    if isinstance(f, serializers.CharField):
        trim, allow_blank = f.trim_whitespace, f.allow_blank
        low, high = f.min_length, f.max_length

        def check_text(value):
            if value is None and allow_null:
                return None
            if not isinstance(value, str) or "\x00" in value or _SURROGATE.search(value):
                raise _NotPlain
            if trim:
                value = value.strip()
            if (not value and not allow_blank) or (high is not None and len(value) > high) or (
                low is not None and len(value) < low
            ):
                raise _NotPlain
            return value

        return check_text
    if isinstance(f, serializers.ListField):
        child = _compile_field(f.child)
        if child is None:
            return None
        low, high, allow_empty = f.min_length, f.max_length, f.allow_empty

        def check_list(value):
            if value is None and allow_null:
                return None
            if not isinstance(value, list) or (not value and not allow_empty) or (high is not None and len(value) > high) or (
                low is not None and len(value) < low
            ):
                raise _NotPlain
            return [child(item) for item in value]

        return check_list
    if isinstance(f, serializers.DictField) and isinstance(f.child, _UnvalidatedField):
        allow_empty = f.allow_empty

        def check_dict(value):
            if value is None and allow_null:
                return None
            if not isinstance(value, dict) or (not value and not allow_empty):
                raise _NotPlain
            return {str(key): item for key, item in value.items()}

        return check_dict
    return None


class _TextOnlyField(serializers.CharField):
    """A CharField that refuses a number instead of turning it into text (a name of 123 is a sender's bug)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def _text(name: str) -> serializers.CharField:
    kind = _TextOnlyField if name in TEXT_ONLY_FIELDS else serializers.CharField
    return kind(required=False, allow_blank=True, allow_null=True, trim_whitespace=True, help_text=FIELD_HELP[name])


class ContactFieldsInput(StrictSerializer):
    """The standard fields plus custom values and tags, as an agent sends them."""

    custom = serializers.DictField(
        required=False, allow_null=True,
        help_text="Custom field values keyed by field key, e.g. {\"budget\": 5000}. Only fields with 'Allow for AI' are writable.",
    )
    tags = serializers.ListField(
        child=serializers.CharField(help_text="An existing tag name (case-insensitive)."),
        required=False, allow_null=True, max_length=50,
        help_text="Existing tag names to add (never replaces tags already on the contact). Unknown names are refused.",
    )
    owner = serializers.CharField(
        required=False, allow_blank=True, allow_null=True,
        help_text="Owner as user id, username or email. Protected: replacing an owner needs staff approval.",
    )

    def get_fields(self):
        fields = {name: _text(name) for name in STANDARD_FIELDS}
        fields.update(super().get_fields())
        return fields


class ContactPatchInput(ContactFieldsInput):
    tags = None  # tags have their own endpoints


def split_contact_input(validated: dict) -> tuple[dict, dict | None, list | None]:
    data = dict(validated)
    return data, data.pop("custom", None), data.pop("tags", None)


class _BatchItemField(serializers.DictField):
    """An object, or anything else handed on as it is: the view refuses that item alone, as
    contacts.<index>, so one malformed item does not stop the good ones."""

    def run_validation(self, data=serializers.empty):
        return super().run_validation(data) if isinstance(data, dict) else data


class BatchUpsertInput(StrictSerializer):
    contacts = serializers.ListField(
        child=_BatchItemField(help_text="One contact, shaped like the body of POST contacts/upsert."),
        min_length=1, max_length=100,
        help_text="Up to 100 contacts; each is upserted on its own and answered in order.",
    )


class NoteInput(StrictSerializer):
    body = serializers.CharField(
        trim_whitespace=False, max_length=100_000,
        help_text="The note, plain text or basic HTML (sanitised). Typically the conversation summary.",
    )
    conversation_id = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=2**62,
        help_text="Id of the conversation this note came from (optional).",
    )


class PriorityField(serializers.ChoiceField):
    """A task priority in any case ("HIGH" is high), as tags, stages and choice fields are matched."""

    def __init__(self, **kwargs):
        super().__init__(choices=Task.Priority.choices, **kwargs)

    def to_internal_value(self, data):
        return super().to_internal_value(data.strip().casefold() if isinstance(data, str) else data)


class TaskInput(StrictSerializer):
    title = serializers.CharField(max_length=200, help_text="What to do, e.g. 'Call back with a quote'.")
    due_at = serializers.CharField(
        help_text="When it is due, ISO 8601 date-time (2026-05-01T14:30:00Z) or a date (then 09:00 local)."
    )
    assignee = serializers.CharField(
        required=False, allow_blank=True, allow_null=True,
        help_text="User id, username or email; defaults to the contact's owner.",
    )
    priority = PriorityField(required=False, default=Task.Priority.NORMAL, help_text="Task priority.")
    description = serializers.CharField(
        required=False, allow_blank=True, max_length=10_000, help_text="Details for whoever does it."
    )


class FileInput(StrictSerializer):
    file = serializers.FileField(help_text="The file (multipart/form-data). Size and type limits come from settings.")


class TagsInput(StrictSerializer):
    tags = serializers.ListField(
        child=serializers.CharField(help_text="An existing tag name."), min_length=1, max_length=50,
        help_text="Existing tag names to add; tags already on the contact are kept.",
    )


@extend_schema_field({"anyOf": [{"type": "integer", "nullable": True}, {"type": "string", "nullable": True}]})
class IdOrNameField(serializers.CharField):
    """An id (a JSON number, kept a number: the pipeline with id 2, not one named "2") or a name."""

    def to_internal_value(self, data):
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        return super().to_internal_value(data)


class StageInput(StrictSerializer):
    pipeline = IdOrNameField(
        required=False, allow_blank=True, allow_null=True,
        help_text="Pipeline id or name (case-insensitive). May be omitted when only one pipeline exists.",
    )
    # Optional here so that a missing stage is answered by the service, with the pipeline's stages listed.
    stage = IdOrNameField(
        required=False, allow_blank=True, allow_null=True,
        help_text="Stage id or name within the pipeline (case-insensitive). Required.",
    )


class IntakeTaskInput(StrictSerializer):
    title = serializers.CharField(allow_blank=True, help_text="The follow-up to do (up to 200 characters).")
    due_at = serializers.CharField(help_text="ISO 8601 date-time (or date) it is due.")
    assignee = serializers.CharField(
        required=False, allow_blank=True, allow_null=True,
        help_text="User id, username or email; defaults to the contact's owner.",
    )
    priority = PriorityField(required=False, help_text="Task priority (normal by default).")
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000, help_text="Details.")


class IntakeConversationInput(StrictSerializer):
    external_id = serializers.CharField(
        required=False, allow_blank=True, max_length=200,
        help_text="The platform's conversation id; the same id always means the same conversation.",
    )
    channel = serializers.CharField(
        required=False, help_text="web_chat, whatsapp, sms, voice, email or other (web_chat by default)."
    )
    messages = serializers.ListField(
        child=serializers.DictField(help_text="{role, content, sent_at?, external_id?}"),
        required=False, max_length=500, help_text="The transcript (appended; known external ids are skipped).",
    )
    metadata = serializers.DictField(required=False, help_text="Free-form data about the conversation.")


class IntakeContactInput(ContactFieldsInput):
    owner = None  # an intake never sets the owner; assignment rules do


class IntakeInput(StrictSerializer):
    contact = IntakeContactInput(help_text="The person, as in POST contacts/upsert (no owner).")
    note = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, trim_whitespace=False,
        help_text="The conversation summary, stored as a note.",
    )
    tags = serializers.ListField(
        child=serializers.CharField(help_text="An existing tag name."), required=False, allow_null=True,
        max_length=50, help_text="Existing tag names to add.",
    )
    pipeline = IdOrNameField(
        required=False, allow_blank=True, allow_null=True, help_text="Pipeline id or name for the stage."
    )
    stage = IdOrNameField(
        required=False, allow_blank=True, allow_null=True, help_text="Stage id or name to put the contact in."
    )
    task = IntakeTaskInput(required=False, allow_null=True, help_text="The follow-up task.")
    custom = serializers.DictField(
        required=False, allow_null=True,
        help_text="Custom field values by key, as contact.custom (errors then name custom.<key>).",
    )
    conversation = IntakeConversationInput(
        required=False, allow_null=True,
        help_text="The conversation and its transcript (needs conversations:write).",
    )


class AccessCheckInput(StrictSerializer):
    phone = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, help_text="The caller's phone in any format."
    )
    email = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, help_text="The caller's email."
    )
    tag = serializers.CharField(
        required=False, allow_blank=True, allow_null=True,
        help_text="A tag the contact must carry to be allowed (the agent's audience), e.g. 'VIP'.",
    )


# --- Output ----------------------------------------------------------------------------


class OwnerOutput(serializers.Serializer):
    id = serializers.IntegerField(help_text="User id.")
    username = serializers.CharField(help_text="Login name; agents may use it to assign.")
    name = serializers.CharField(source="get_full_name", help_text="Full name, may be empty.")
    email = serializers.CharField(help_text="Email, may be empty.")


class ContactOutput(serializers.ModelSerializer):
    """The record itself. ``identity`` appears only for tokens with identity:read."""

    owner = OwnerOutput(allow_null=True, help_text="The user who owns the contact, or null.")
    custom = serializers.DictField(help_text="Custom field values keyed by field key.")
    custom_bands = serializers.SerializerMethodField(
        help_text='Beside each number custom value that falls in a band, the band\'s label: {"intent_score": "High intent"}.'
    )
    source = serializers.ChoiceField(
        choices=Source.choices, help_text="How the contact first came in (Chat for intake, API for other agent writes); never changes."
    )

    class Meta:
        model = Contact
        fields = [
            "id", "name", "identity", "phone", "phone_e164", "email", "email_normalized", "company", "position",
            "birthday", "zip_code", "country", "state", "city", "district", "street", "number", "complement",
            "source", "owner", "custom", "custom_bands", "created_at", "updated_at", "last_activity_at",
        ]
        extra_kwargs = {
            "id": {"help_text": "Contact id."},
            "phone_e164": {"help_text": "The phone in E.164 (dedup key), empty if none."},
            "email_normalized": {"help_text": "The email lower-cased (dedup key), empty if none."},
            "created_at": {"help_text": "When the contact was created."},
            "updated_at": {"help_text": "When the record last changed."},
            "last_activity_at": {"help_text": "Last note, task, stage or field change."},
            **{name: {"help_text": FIELD_HELP[name]} for name in FIELD_HELP},
        }

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if not self.context.get("identity_visible", False):
            data.pop("identity", None)
        return data

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
    def get_custom_bands(self, contact: Contact) -> dict[str, str]:
        return custom_bands(contact.custom)


def custom_bands(custom: dict | None) -> dict[str, str]:
    """The band label of each custom value that falls in one (definitions from the cached list vocabulary)."""
    if not custom:
        return {}
    banded = {d.key: d for d in list_vocabulary().custom_fields if d.bands}
    return {key: label for key, value in custom.items() if key in banded and (label := banded[key].band_label(value))}


def _when(value) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def contact_record(contact: Contact, *, identity_visible: bool) -> dict:
    """ContactOutput's representation, built directly: the write endpoints answer with it on every call
    and DRF's per-call field construction was a visible share of an intake's time."""
    owner = contact.owner if contact.owner_id else None
    data = {
        "id": contact.pk,
        **{name: getattr(contact, name) for name in ContactOutput.Meta.fields[1:18]},
        "source": contact.source,
        "owner": None if owner is None else {
            "id": owner.pk, "username": owner.get_username(), "name": owner.get_full_name(), "email": owner.email,
        },
        "custom": contact.custom or {},
        "custom_bands": custom_bands(contact.custom),
        "created_at": _when(contact.created_at),
        "updated_at": _when(contact.updated_at),
        "last_activity_at": _when(contact.last_activity_at),
    }
    data["birthday"] = contact.birthday.isoformat() if contact.birthday else None
    if not identity_visible:
        del data["identity"]
    return data


class ContactListItemOutput(ContactOutput):
    tags = serializers.SerializerMethodField(help_text="Tag names on the contact.")

    class Meta(ContactOutput.Meta):
        fields = [*ContactOutput.Meta.fields, "tags"]

    def get_tags(self, contact) -> list[str]:
        return sorted(t.name for t in contact.tags.all())


class PendingChangeOutput(serializers.ModelSerializer):
    class Meta:
        model = ChangeRequest
        fields = ["id", "field", "old_value", "new_value", "status", "created_at"]
        extra_kwargs = {
            "id": {"help_text": "Change request id."},
            "field": {"help_text": "The protected field (phone, email, identity, owner)."},
            "old_value": {"help_text": "The value now on the record: empty for tokens without contacts:read (writing "
                                       "never reads), and for identity without identity:read."},
            "new_value": {"help_text": "The value that awaits staff approval."},
            "status": {"help_text": "pending until staff approve or reject it in admin."},
            "created_at": {"help_text": "When it was requested."},
        }

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if instance.field == "identity" and not self.context.get("identity_visible", False):
            data["old_value"] = data["new_value"] = ""
        request = self.context.get("request")
        auth = getattr(request, "auth", None)
        if auth is None or not auth.has_scope("contacts:read"):
            # The value on the record is a read: a write-only token probing ids with PATCH {"phone": ...}
            # learned every contact's phone, email and owner from it.
            data["old_value"] = ""
        return data


class UpsertOutput(serializers.Serializer):
    contact = ContactOutput(allow_null=True, help_text="The record after the write; null if the token lacks contacts:read.")
    contact_id = serializers.IntegerField(help_text="The contact written, whatever the token may read.")
    created = serializers.BooleanField(help_text="True when a new contact was created (status 201).")
    matched_by = serializers.ChoiceField(
        choices=["phone", "email"], allow_null=True, help_text="Which key found the existing contact; null when created."
    )
    possible_duplicates = serializers.ListField(
        child=serializers.IntegerField(), help_text="Ids of other contacts flagged as possible duplicates of this one."
    )
    pending_changes = PendingChangeOutput(
        many=True, help_text="Protected-field overwrites waiting for staff approval instead of being applied."
    )


class BatchErrorItem(serializers.Serializer):
    field = serializers.CharField(allow_null=True, help_text="Dotted path of the field, e.g. contacts.3.phone; null for the whole request.")
    code = serializers.CharField(help_text="Machine code: required, invalid_phone, unknown_tag, missing_scope, ...")
    message = serializers.CharField(help_text="What went wrong, for a person.")
    allowed = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="The permitted values, when the value comes from a list."
    )
    scope = serializers.CharField(required=False, help_text="The missing scope (code missing_scope).")


class BatchResultOutput(serializers.Serializer):
    status = serializers.IntegerField(help_text="201 created, 200 updated, 400 refused (see errors).")
    contact = ContactOutput(
        allow_null=True, help_text="The record after the write; null when refused or if the token lacks contacts:read."
    )
    contact_id = serializers.IntegerField(required=False, help_text="The contact written (absent when refused).")
    created = serializers.BooleanField(help_text="True when created.")
    matched_by = serializers.CharField(allow_null=True, help_text="phone, email or null.")
    possible_duplicates = serializers.ListField(child=serializers.IntegerField(), help_text="Flagged duplicate ids.")
    pending_changes = PendingChangeOutput(many=True, help_text="Overwrites awaiting approval.")
    errors = BatchErrorItem(many=True, help_text="Why this item was refused (field paths start with contacts.<index>).")


class BatchUpsertOutput(serializers.Serializer):
    results = BatchResultOutput(many=True, help_text="One result per input contact, in order.")


class CompletenessOutput(serializers.Serializer):
    fields = serializers.BooleanField(help_text="The contact has a name and a phone or email.")
    note = serializers.BooleanField(help_text="A note was written.")
    tags = serializers.BooleanField(help_text="The contact has at least one tag.")
    stage = serializers.BooleanField(help_text="The contact is in a pipeline stage.")
    task = serializers.BooleanField(help_text="A follow-up task was created.")
    clean = serializers.BooleanField(help_text="All five: a clean record.")


class IntakeOutput(UpsertOutput):
    note_id = serializers.IntegerField(allow_null=True, help_text="The note written, or null.")
    task_id = serializers.IntegerField(allow_null=True, help_text="The task created, or null.")
    conversation_id = serializers.IntegerField(allow_null=True, help_text="The conversation linked, or null.")
    completeness = CompletenessOutput(
        allow_null=True, help_text="Which parts of a clean record the contact now has; null for a token without contacts:read."
    )


class NoteOutput(serializers.ModelSerializer):
    class Meta:
        model = Note
        fields = ["id", "body", "source", "conversation", "created_at"]
        extra_kwargs = {
            "id": {"help_text": "Note id."},
            "body": {"help_text": "Sanitised HTML."},
            "source": {"help_text": "Where the note came from."},
            "conversation": {"help_text": "Conversation id, or null."},
            "created_at": {"help_text": "When it was written."},
        }


class TaskOutput(serializers.ModelSerializer):
    assignee = serializers.CharField(source="assignee.username", allow_null=True, default=None, help_text="Assignee's username, or null.")

    class Meta:
        model = Task
        fields = ["id", "title", "description", "due_at", "assignee", "status", "priority", "created_at"]
        extra_kwargs = {
            "id": {"help_text": "Task id."},
            "title": {"help_text": "What to do."},
            "description": {"help_text": "Details."},
            "due_at": {"help_text": "When it is due."},
            "status": {"help_text": "open or done."},
            "priority": {"help_text": "low, normal or high."},
            "created_at": {"help_text": "When it was created."},
        }


class FileOutput(serializers.Serializer):
    id = serializers.IntegerField(help_text="File id.")
    name = serializers.CharField(help_text="File name.")
    size = serializers.IntegerField(help_text="Size in bytes.")
    content_type = serializers.CharField(help_text="MIME type.")
    created_at = serializers.DateTimeField(help_text="When it was uploaded.")


class TagsOutput(serializers.Serializer):
    tags = serializers.ListField(child=serializers.CharField(), allow_null=True,
                                 help_text="All tag names now on the contact; null for a token without contacts:read.")
    added = serializers.ListField(child=serializers.CharField(), help_text="Tags this call added.")


class TagRemovedOutput(serializers.Serializer):
    tags = serializers.ListField(child=serializers.CharField(), allow_null=True,
                                 help_text="All tag names now on the contact; null for a token without contacts:read.")
    removed = serializers.BooleanField(help_text="False when the contact did not have the tag.")


class StageOutput(serializers.Serializer):
    pipeline = serializers.CharField(help_text="Pipeline name.")
    pipeline_id = serializers.IntegerField(help_text="Pipeline id.")
    stage = serializers.CharField(help_text="Stage name.")
    stage_id = serializers.IntegerField(help_text="Stage id.")
    entered_at = serializers.DateTimeField(help_text="When the contact entered the stage.")


class StageMoveOutput(StageOutput):
    changed = serializers.BooleanField(help_text="False when the contact was already in that stage.")


class CustomFieldValueOutput(serializers.Serializer):
    key = serializers.CharField(help_text="Field key.")
    label = serializers.CharField(help_text="Field label.")
    type = serializers.CharField(help_text="Field type.")
    value = serializers.JSONField(help_text="The value.")
    band = serializers.CharField(allow_null=True, help_text="For number fields with bands: the band the value falls in, else null.")


class ConversationOutput(serializers.Serializer):
    id = serializers.IntegerField(help_text="Conversation id.")
    external_id = serializers.CharField(help_text="The platform's id.")
    channel = serializers.CharField(help_text="web_chat, whatsapp, sms, voice, email or other.")
    status = serializers.CharField(help_text="open or ended.")
    started_at = serializers.DateTimeField(help_text="When it started.")
    summary = serializers.CharField(help_text="Its summary, may be empty.")


class ContactDetailOutput(ContactOutput):
    tags = serializers.ListField(child=serializers.CharField(), help_text="Tag names on the contact.")
    stages = StageOutput(many=True, help_text="The contact's stage in each pipeline it is in.")
    custom_fields = CustomFieldValueOutput(many=True, help_text="Filled custom fields with labels and band labels.")
    last_notes = NoteOutput(many=True, help_text="The latest notes, newest first (up to 5).")
    open_tasks = TaskOutput(many=True, help_text="Open tasks, soonest due first (up to 20; see open_task_count).")
    open_task_count = serializers.IntegerField(help_text="How many open tasks the contact has in all.")
    recent_conversations = ConversationOutput(many=True, help_text="The latest conversations (up to 5).")

    class Meta(ContactOutput.Meta):
        fields = [
            *ContactOutput.Meta.fields, "tags", "stages", "custom_fields", "last_notes", "open_tasks",
            "open_task_count", "recent_conversations",
        ]


class AccessCheckOutput(serializers.Serializer):
    allowed = serializers.BooleanField(help_text="True when a contact matches (and carries the tag, if one was named).")
    contact_id = serializers.IntegerField(allow_null=True, help_text="The matching contact's id when allowed, else null.")
    reason = serializers.ChoiceField(
        choices=["contact_found", "no_contact", "tag_missing"],
        help_text="contact_found, no_contact (nobody with that phone/email) or tag_missing.",
    )
