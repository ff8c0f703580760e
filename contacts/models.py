"""Contacts and their parts. Invariants live here as database constraints."""

from __future__ import annotations

import math

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.urls import reverse
from django.utils import timezone

from contacts.normalize import format_phone


class Source(models.TextChoices):
    CHAT = "chat", "Chat"
    FORM = "form", "Form"
    MANUAL = "manual", "Manual"
    IMPORT = "import", "Import"
    API = "api", "API"


HEX_COLOUR = RegexValidator(
    r"^#[0-9A-Fa-f]{6}\Z", "Write the colour as # and six hex digits (#RRGGBB), e.g. #2563eb.", code="invalid_colour"
)
# Imports split a Tags cell on these, so a tag name holding one could never be imported back.
TAG_SEPARATORS = (",", ";")


def validate_tag_name(value: str) -> None:
    """Refuse the separators a Tags column is split on."""
    found = [sep for sep in TAG_SEPARATORS if sep in (value or "")]
    if found:
        raise ValidationError(
            "A tag name cannot contain %(found)s: imports split the Tags column on commas and semicolons.",
            code="tag_separator",
            params={"found": " or ".join(repr(sep) for sep in found)},
        )


class Tag(models.Model):
    """An entry of the locked taxonomy: contacts only ever get tags that exist here."""

    name = models.CharField(
        max_length=60, validators=[validate_tag_name],
        help_text="Shown to users and sent by agents; matched case-insensitively. No commas or semicolons.",
    )
    color = models.CharField(max_length=7, default="#64748b", validators=[HEX_COLOUR], help_text="Hex colour, e.g. #2563eb.")
    description = models.CharField(max_length=255, blank=True, help_text="When to use this tag (agents read it).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                Lower("name"), name="tag_unique_name_ci",
                violation_error_message="A tag with this name already exists (names are compared without case).",
            ),
            models.CheckConstraint(condition=~Q(name=""), name="tag_name_not_empty"),
        ]

    def __str__(self) -> str:
        return self.name


class Pipeline(models.Model):
    name = models.CharField(max_length=80)
    description = models.CharField(max_length=255, blank=True)
    position = models.PositiveIntegerField(default=0, help_text="Order among pipelines.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(
                Lower("name"), name="pipeline_unique_name_ci",
                violation_error_message="A pipeline with this name already exists (names are compared without case).",
            )
        ]

    def __str__(self) -> str:
        return self.name


class Stage(models.Model):
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="stages")
    name = models.CharField(max_length=80)
    position = models.PositiveIntegerField(default=0, help_text="Order within the pipeline, left to right.")
    color = models.CharField(max_length=7, default="#94a3b8", validators=[HEX_COLOUR], help_text="Hex colour, e.g. #94a3b8.")

    class Meta:
        ordering = ["pipeline_id", "position", "id"]
        constraints = [
            models.UniqueConstraint(
                "pipeline", Lower("name"), name="stage_unique_name_per_pipeline_ci",
                violation_error_message="This pipeline already has a stage with this name (names are compared without case).",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pipeline.name}: {self.name}"


class CustomField(models.Model):
    """A custom field definition; values live in ``Contact.custom`` keyed by ``key``."""

    class Type(models.TextChoices):
        TEXT = "text", "Text"
        LONG_TEXT = "long_text", "Long text"
        NUMBER = "number", "Number"
        DECIMAL = "decimal", "Decimal"
        BOOLEAN = "boolean", "Yes/No"
        DATE = "date", "Date"
        DATETIME = "datetime", "Date and time"
        SINGLE_CHOICE = "single_choice", "Single choice"
        MULTIPLE_CHOICE = "multiple_choice", "Multiple choice"
        EMAIL = "email", "Email"
        PHONE = "phone", "Phone"
        URL = "url", "URL"

    key = models.SlugField(
        max_length=60,
        unique=True,
        help_text="Immutable machine key agents and imports use, e.g. budget. Cannot change after creation.",
    )
    label = models.CharField(max_length=120, help_text="Shown to people; can change at any time.")
    type = models.CharField(max_length=20, choices=Type.choices, default=Type.TEXT)
    choices = models.JSONField(default=list, blank=True, help_text="Allowed values for choice types.")
    bands = models.JSONField(
        default=list,
        blank=True,
        help_text='For number/decimal: labelled ranges, e.g. [{"min": 0, "max": 0.4, "label": "Low intent"}].',
    )
    required = models.BooleanField(default=False, help_text="Staff must fill it when editing by hand.")
    help_text = models.CharField(max_length=255, blank=True, help_text="Explains the field to people and agents.")
    allow_for_ai = models.BooleanField(
        default=False, help_text="Agents may write this field over the API. Off: agent writes are refused."
    )
    position = models.PositiveIntegerField(default=0, help_text="Display order.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            # Imports, filters and agents match keys loosely; "Budget" beside "budget" is one field twice.
            models.UniqueConstraint(
                Lower("key"), name="customfield_unique_key_ci",
                violation_error_message="A custom field with this key already exists (keys are compared without case).",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.key})"

    def clean(self) -> None:
        """Refuse reserved keys, and ``choices`` and ``bands`` in any shape other than the one the code reads."""
        super().clean()
        errors: dict[str, list[str]] = {}
        if self._state.adding and self.key and reserved_custom_key(self.key):
            errors["key"] = [
                f"{self.key!r} is a standard contact field or a reserved name "
                f"({', '.join(sorted(reserved_custom_keys()))}): pick another key, e.g. {self.key.lower()}_custom."
            ]
        choices, choice_errors = _clean_choices(self.choices, self.type)
        if choice_errors:
            errors["choices"] = choice_errors
        else:
            self.choices = choices
        bands, band_errors = _clean_bands(self.bands, self.type)
        if band_errors:
            errors["bands"] = band_errors
        else:
            self.bands = bands
        if errors:
            raise ValidationError(errors)

    def usable_bands(self) -> list[tuple[float | None, float | None, str]]:
        """Return the well-formed bands as ``(min, max, label)``; None is an open end.

        Malformed rows (saved before bands were validated) are skipped, so a bad
        definition never breaks a page that shows band labels.
        """
        rows = self.bands if isinstance(self.bands, list) else []
        usable = []
        for band in rows:
            if not isinstance(band, dict):
                continue
            low, high, label = _band_bound(band.get("min")), _band_bound(band.get("max")), band.get("label")
            if low is _BAD or high is _BAD or not isinstance(label, str) or not label.strip():
                continue
            if low is not None and high is not None and low >= high:
                continue
            usable.append((low, high, label.strip()))
        return usable

    def band_label(self, value) -> str:
        """Return the label of the band ``value`` falls in ("Warm"), or "".

        Bands are half-open ([min, max)) so 0.4 is "Warm", not "Low intent"; the
        highest band also takes its own max, so 1.0 is "High intent".
        """
        if value is None or isinstance(value, bool) or not self.bands:
            return ""
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return ""
        if not math.isfinite(number):
            return ""
        bands = self.usable_bands()
        top = max((high for _low, high, _label in bands if high is not None), default=None)
        for low, high, label in bands:
            above_low = low is None or number >= low
            below_high = high is None or number < high or (high == top and number == top)
            if above_low and below_high:
                return label
        return ""


# Names a custom key may not take besides the contact's own columns: import and list targets.
RESERVED_CUSTOM_KEYS = frozenset({
    "pk", "tags", "tag", "stage", "stages", "pipeline", "first_name", "last_name", "full_name",
    "created", "updated", "last_activity",
})


def reserved_custom_keys() -> frozenset[str]:
    """Return the keys a custom field cannot take: every contact column plus import and list targets."""
    columns = {f.name for f in Contact._meta.concrete_fields} | {f.attname for f in Contact._meta.concrete_fields}
    return frozenset(columns) | RESERVED_CUSTOM_KEYS


def reserved_custom_key(key: str) -> bool:
    """Return whether ``key`` names a standard field or target in any case, with - or _ ("Zip-Code")."""
    return key.strip().lower().replace("-", "_") in reserved_custom_keys()


CHOICE_TYPES = (CustomField.Type.SINGLE_CHOICE, CustomField.Type.MULTIPLE_CHOICE)
BAND_TYPES = (CustomField.Type.NUMBER, CustomField.Type.DECIMAL)
CHOICES_SHAPE = 'a list of distinct, non-empty texts, e.g. ["Starter", "Pro", "Enterprise"]'
BANDS_SHAPE = (
    'a list of {"min": number, "max": number, "label": "text"} objects with min below max that do not overlap, '
    'e.g. [{"min": 0, "max": 0.4, "label": "Low intent"}, {"min": 0.4, "max": 1, "label": "High intent"}] '
    "(null for min or max leaves that end open)"
)
BAND_KEYS = {"min", "max", "label"}
_BAD = object()


def _band_bound(value):
    """A band's min or max as a float, None for an open end, or _BAD."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _BAD
    try:
        number = float(value)
    except OverflowError:
        return _BAD
    return number if math.isfinite(number) else _BAD


def _clean_choices(choices, kind: str) -> tuple[list[str], list[str]]:
    if choices is None or choices == "":
        choices = []
    if not isinstance(choices, list):
        return [], [f"Expected {CHOICES_SHAPE}."]
    if kind not in CHOICE_TYPES:
        if choices:
            return [], [f"Only single and multiple choice fields have choices: leave this an empty list ([]) for a {kind} field."]
        return [], []
    if not choices:
        return [], [f"List at least one choice: expected {CHOICES_SHAPE}."]
    cleaned: list[str] = []
    seen: set[str] = set()
    for item in choices:
        if not isinstance(item, str) or not item.strip():
            return [], [f"Every choice must be a non-empty text ({item!r} is not): expected {CHOICES_SHAPE}."]
        text = item.strip()
        if text.casefold() in seen:
            return [], [f"{text!r} is listed twice (choices match case-insensitively): expected {CHOICES_SHAPE}."]
        seen.add(text.casefold())
        cleaned.append(text)
    return cleaned, []


def _clean_bands(bands, kind: str) -> tuple[list[dict], list[str]]:
    if bands is None or bands == "":
        bands = []
    if not isinstance(bands, list):
        return [], [f"Expected {BANDS_SHAPE}."]
    if kind not in BAND_TYPES:
        if bands:
            return [], [f"Only number and decimal fields have bands: leave this an empty list ([]) for a {kind} field."]
        return [], []
    cleaned: list[dict] = []
    for position, band in enumerate(bands, start=1):
        where = f"Band {position}"
        if not isinstance(band, dict):
            return [], [f"{where} is not an object: expected {BANDS_SHAPE}."]
        unknown = sorted(set(band) - BAND_KEYS)
        if unknown:
            return [], [f"{where} has unknown keys {', '.join(unknown)}: expected {BANDS_SHAPE}."]
        low, high = _band_bound(band.get("min")), _band_bound(band.get("max"))
        if low is _BAD or high is _BAD:
            return [], [f"{where}: min and max must be finite numbers (or null for an open end): expected {BANDS_SHAPE}."]
        if low is not None and high is not None and low >= high:
            return [], [f"{where}: min must be below max: expected {BANDS_SHAPE}."]
        label = band.get("label")
        if not isinstance(label, str) or not label.strip():
            return [], [f"{where} needs a non-empty text label: expected {BANDS_SHAPE}."]
        cleaned.append({"min": band.get("min"), "max": band.get("max"), "label": label.strip()})
    ordered = sorted(cleaned, key=lambda b: -math.inf if b["min"] is None else float(b["min"]))
    for before, after in zip(ordered, ordered[1:], strict=False):
        before_high = math.inf if before["max"] is None else float(before["max"])
        after_low = -math.inf if after["min"] is None else float(after["min"])
        if after_low < before_high:
            return [], [f"Bands {before['label']!r} and {after['label']!r} overlap: expected {BANDS_SHAPE}."]
    return cleaned, []


class Contact(models.Model):
    # Standard fields: the upsert field list agents send.
    name = models.CharField(max_length=200, blank=True)
    identity = models.CharField(
        max_length=40, blank=True, help_text="Tax/ID number. Sensitive: only tokens with identity:read see it."
    )
    phone = models.CharField(max_length=64, blank=True, help_text="As entered.")
    phone_e164 = models.CharField(max_length=20, blank=True, editable=False, help_text="Dedup key.")
    phone_extension = models.CharField(max_length=12, blank=True, editable=False)
    email = models.CharField(max_length=254, blank=True, help_text="As entered.")
    email_normalized = models.CharField(max_length=254, blank=True, editable=False, help_text="Dedup key.")
    company = models.CharField(max_length=200, blank=True)
    position = models.CharField(max_length=120, blank=True)
    birthday = models.DateField(null=True, blank=True)
    zip_code = models.CharField(max_length=20, blank=True)
    country = models.CharField(max_length=80, blank=True)
    state = models.CharField(max_length=80, blank=True)
    city = models.CharField(max_length=120, blank=True)
    district = models.CharField(max_length=120, blank=True)
    street = models.CharField(max_length=200, blank=True)
    number = models.CharField(max_length=20, blank=True)
    complement = models.CharField(max_length=120, blank=True)

    source = models.CharField(max_length=10, choices=Source.choices, editable=False)
    # No index of its own: contact_owner_created_idx (owner, -created_at) serves every owner lookup.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="owned_contacts",
        db_index=False,
    )
    tags = models.ManyToManyField(Tag, through="ContactTag", related_name="contacts", blank=True)
    custom = models.JSONField(default=dict, blank=True, help_text="Custom field values keyed by field key.")

    # created_at and updated_at are indexed as (key DESC, id DESC) for keyset paging
    # (migration 0004_issue5); a second single-column index only costs every write.
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_activity_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["phone_e164"], condition=~Q(phone_e164=""), name="contact_unique_phone_e164"
            ),
            models.UniqueConstraint(
                fields=["email_normalized"], condition=~Q(email_normalized=""), name="contact_unique_email"
            ),
            models.CheckConstraint(condition=Q(source__in=Source.values), name="contact_source_valid"),
        ]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="contact_owner_created_idx"),
            models.Index(fields=["source", "-created_at"], name="contact_source_created_idx"),
        ]

    def __str__(self) -> str:
        return self.name or self.email or self.phone_display or f"Contact #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("contacts:detail", args=[self.pk])

    @property
    def phone_display(self) -> str:
        return format_phone(self.phone_e164, self.phone_extension) if self.phone_e164 else self.phone

    @property
    def display_name(self) -> str:
        return str(self)


class ContactTag(models.Model):
    # No single-column indexes: the unique (contact, tag) and the (tag, contact) index lead with each.
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, db_index=False)
    tag = models.ForeignKey(Tag, on_delete=models.PROTECT, db_index=False)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["contact", "tag"], name="contact_tag_unique")]
        indexes = [models.Index(fields=["tag", "contact"], name="contacttag_tag_contact_idx")]

    def __str__(self) -> str:
        return f"{self.tag_id} on {self.contact_id}"


class ContactStage(models.Model):
    """Where a contact stands in one pipeline: at most one stage per pipeline."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="stage_memberships")
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="memberships")
    stage = models.ForeignKey(Stage, on_delete=models.PROTECT, related_name="memberships")
    entered_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["contact", "pipeline"], name="contact_one_stage_per_pipeline")
        ]
        indexes = [models.Index(fields=["stage", "-entered_at"], name="contactstage_stage_entered_idx")]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.stage}"


class StageChange(models.Model):
    """Every stage move with its time, for history and time-in-stage figures."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="stage_changes")
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="+")
    # A stage nobody is in any more can be deleted: the move stays here with an empty stage, and the
    # contact's history entry for it keeps both stage names as text.
    from_stage = models.ForeignKey(Stage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    to_stage = models.ForeignKey(Stage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    changed_at = models.DateTimeField()

    class Meta:
        ordering = ["-changed_at", "-id"]
        indexes = [models.Index(fields=["contact", "-changed_at"], name="stagechange_contact_idx")]

    def __str__(self) -> str:
        return f"{self.contact_id}: {self.from_stage_id} -> {self.to_stage_id}"


class Note(models.Model):
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="notes")
    body = models.TextField(help_text="Sanitized HTML.")
    source = models.CharField(max_length=10, choices=Source.choices)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent = models.ForeignKey("crm_hub.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    conversation = models.ForeignKey(
        "conversations.Conversation", null=True, blank=True, on_delete=models.SET_NULL, related_name="notes"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["contact", "-created_at"], name="note_contact_created_idx")]

    def __str__(self) -> str:
        return f"Note #{self.pk} on {self.contact_id}"


def contact_file_path(instance: ContactFile, filename: str) -> str:
    return f"contacts/{instance.contact_id}/{filename}"


class ContactFile(models.Model):
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="files")
    file = models.FileField(upload_to=contact_file_path, max_length=255)
    name = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    content_type = models.CharField(max_length=120)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent = models.ForeignKey("crm_hub.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    source = models.CharField(max_length=10, choices=Source.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class Task(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        DONE = "done", "Done"

    class Priority(models.TextChoices):
        LOW = "low", "Low"
        NORMAL = "normal", "Normal"
        HIGH = "high", "High"

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    due_at = models.DateTimeField()
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks"
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    source = models.CharField(max_length=10, choices=Source.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent = models.ForeignKey("crm_hub.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Who created it as history shows it ("automation rule 2: VIP to Ada", "form contact-us"): a rule or a form has no user.
    actor_label = models.CharField(max_length=160, blank=True)
    conversation = models.ForeignKey(
        "conversations.Conversation", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks"
    )
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["due_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["open", "done"]), name="task_status_valid"),
            models.CheckConstraint(
                condition=Q(status="open", completed_at__isnull=True) | Q(status="done", completed_at__isnull=False),
                name="task_completed_at_matches_status",
            ),
        ]
        indexes = [
            models.Index(fields=["assignee", "status", "due_at"], name="task_assignee_status_due_idx"),
            models.Index(fields=["contact", "status"], name="task_contact_status_idx"),
        ]

    def __str__(self) -> str:
        return self.title


class PossibleDuplicate(models.Model):
    """Two contacts that one write pointed at (phone matched one, email the other): for review, never merged silently."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        DISMISSED = "dismissed", "Not a duplicate"
        RESOLVED = "resolved", "Resolved"

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="duplicate_flags")
    other = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=255)
    source = models.CharField(max_length=10, choices=Source.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "other"], condition=Q(status="open"), name="possible_duplicate_open_unique"
            ),
            models.CheckConstraint(condition=~Q(contact=models.F("other")), name="possible_duplicate_not_self"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} ~ {self.other_id}"


class MergedContact(models.Model):
    """The id a merged-away contact had, and the contact it lives on in.

    Agents and links keep contact ids; after a merge the old id answers "merged into #N" instead of a
    bare 404. A later merge of the kept contact carries the pointer along (merges move every row that
    points at the contact), so it never names a contact that is gone.
    """

    merged_id = models.BigIntegerField(primary_key=True)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="merged_ids")
    merged_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"#{self.merged_id} → #{self.contact_id}"


class ChangeRequest(models.Model):
    """A pending overwrite of an identity field (phone, email, identity, owner) awaiting staff approval."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="change_requests")
    field = models.CharField(max_length=40)
    old_value = models.TextField(blank=True)
    new_value = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    source = models.CharField(max_length=10, choices=Source.choices)
    requested_by_agent = models.ForeignKey(
        "crm_hub.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_system = models.CharField(max_length=120, blank=True)
    conversation = models.ForeignKey(
        "conversations.Conversation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "-created_at"], name="changerequest_status_idx")]

    def __str__(self) -> str:
        return f"{self.field} of contact {self.contact_id}: {self.old_value!r} -> {self.new_value!r}"


class HistoryEntry(models.Model):
    """One change to a contact or its parts: who, when, from where, and each field's before and after."""

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        UPDATED = "updated", "Updated"
        TAG_ADDED = "tag_added", "Tag added"
        TAG_REMOVED = "tag_removed", "Tag removed"
        STAGE_CHANGED = "stage_changed", "Stage changed"
        NOTE_ADDED = "note_added", "Note added"
        TASK_CREATED = "task_created", "Task created"
        TASK_COMPLETED = "task_completed", "Task completed"
        TASK_REOPENED = "task_reopened", "Task reopened"
        TASK_UPDATED = "task_updated", "Task edited"
        TASK_DELETED = "task_deleted", "Task deleted"
        NOTE_DELETED = "note_deleted", "Note deleted"
        FILE_ADDED = "file_added", "File added"
        CHANGE_REQUESTED = "change_requested", "Change requested"
        CHANGE_APPROVED = "change_approved", "Change approved"
        CHANGE_REJECTED = "change_rejected", "Change rejected"
        POSSIBLE_DUPLICATE = "possible_duplicate", "Possible duplicate"
        CONVERSATION = "conversation", "Conversation"
        FORM_SUBMITTED = "form_submitted", "Form submitted"
        AUTOMATION = "automation", "Automation"
        IMPORTED = "imported", "Imported"
        MERGED = "merged", "Merged"

    # history_contact_created_idx leads with contact: a second index on it alone cost every write.
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="history", db_index=False)
    action = models.CharField(max_length=24, choices=Action.choices)
    # {"field": [before, after], ...}; custom fields as "custom.<key>".
    changes = models.JSONField(default=dict, blank=True)
    summary = models.CharField(max_length=255, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_agent = models.ForeignKey("crm_hub.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=160, help_text="Who, as it read at the time.")
    conversation = models.ForeignKey(
        "conversations.Conversation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "history entries"
        indexes = [models.Index(fields=["contact", "-created_at"], name="history_contact_created_idx")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} by {self.actor_label}"


class SavedView(models.Model):
    """A named contact-list view (filters, columns, sort) saved by a user, private or shared with the team."""

    name = models.CharField(max_length=80)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="saved_views")
    shared = models.BooleanField(default=False, help_text="Everyone on the team sees it; only the owner changes it.")
    # The list's query string (filters, columns, sort) without the page cursor.
    query = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = [Lower("name"), "id"]
        constraints = [
            models.UniqueConstraint(
                "owner", Lower("name"), name="savedview_unique_name_per_owner_ci",
                violation_error_message="You already have a view with this name (names are compared without case).",
            ),
            models.CheckConstraint(condition=~Q(name=""), name="savedview_name_not_empty"),
        ]
        indexes = [models.Index(fields=["shared"], name="savedview_shared_idx", condition=Q(shared=True))]

    def __str__(self) -> str:
        return self.name


# --- CSV/XLSX import (issue 7) -------------------------------------------------------


class ImportJob(models.Model):
    """One uploaded contact file: its mapping, mode, progress, counts and error file."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Waiting for confirmation"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLING = "cancelling", "Cancelling"
        CANCELLED = "cancelled", "Cancelled"
        REVERTING = "reverting", "Reverting"
        REVERTED = "reverted", "Reverted"

    class Mode(models.TextChoices):
        CREATE_UPDATE = "create_update", "Create and update"
        CREATE_ONLY = "create_only", "Create only"
        UPDATE_ONLY = "update_only", "Update only"

    file = models.FileField(upload_to="imports/%Y/%m/", max_length=255)
    file_name = models.CharField(max_length=255, help_text="Name of the uploaded file.")
    mapping = models.JSONField(default=dict, blank=True, help_text="{column header: target field}.")
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.CREATE_UPDATE)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DRAFT)
    background = models.BooleanField(default=False, help_text="Runs on a Celery worker.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rows_total = models.PositiveIntegerField(default=0, help_text="Data rows in the file (estimated for CSV).")
    rows_done = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    skipped_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    error_file = models.FileField(upload_to="imports/errors/", max_length=255, blank=True)
    message = models.TextField(blank=True, help_text="Why the import failed, when it did.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="Set after each batch while a worker imports or undoes the job; an old one means the worker stopped.",
    )
    reverted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["draft", "queued", "running", "done", "failed", "cancelling", "cancelled", "reverting", "reverted"]),
                name="importjob_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(mode__in=["create_update", "create_only", "update_only"]), name="importjob_mode_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"Import #{self.pk} {self.file_name}"

    def get_absolute_url(self) -> str:
        return reverse("importing:progress", args=[self.pk])


class ImportChange(models.Model):
    """What one import did to one contact, so the import can be reverted.

    ``contact_id`` is a plain column, not a foreign key: the undo log must not
    cascade away when a contact is deleted, and it costs no FK check per row.
    """

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="changes", db_index=False)  # importchange_job_contact_idx leads with it
    contact_id = models.BigIntegerField()
    created = models.BooleanField(help_text="The import created this contact (revert deletes it).")
    before = models.JSONField(default=dict, blank=True, help_text="Values of the fields the import changed, before it.")
    tags_added = models.JSONField(default=list, blank=True, help_text="Ids of tags the import added.")

    class Meta:
        # (job, contact): each batch asks which of its contacts an earlier batch wrote; a revert reads by job.
        indexes = [models.Index(fields=["job", "contact_id"], name="importchange_job_contact_idx")]

    def __str__(self) -> str:
        return f"import {self.job_id}, contact {self.contact_id}"


class ImportMapping(models.Model):
    """The column mapping last confirmed for a set of headers, offered again for the same headers."""

    header_key = models.CharField(
        max_length=64,
        unique=True,
        help_text=(
            "SHA-256 of the sorted, normalized header names (a failed-rows file's error column left out): "
            "the same headers in any order share one mapping."
        ),
    )
    headers = models.JSONField(default=list)
    mapping = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return ", ".join(self.headers)[:80]
