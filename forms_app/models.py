"""Lead forms, their versions and the submissions they receive.

A form's field definitions live in versions: a submission points at the version
it was filled in, so editing a form later never changes how an old submission
reads.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse


class FieldType(models.TextChoices):
    TEXT = "text", "Text"
    LONG_TEXT = "long_text", "Long text"
    EMAIL = "email", "Email"
    PHONE = "phone", "Phone"
    NUMBER = "number", "Number"
    DATE = "date", "Date"
    SINGLE_CHOICE = "single_choice", "Single choice"
    MULTIPLE_CHOICE = "multiple_choice", "Multiple choice"
    CHECKBOX = "checkbox", "Checkbox"
    FILE = "file", "File"


class Form(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    title = models.CharField(max_length=120)
    slug = models.SlugField(max_length=80, unique=True, help_text="Public address: /f/<slug>/.")
    description = models.TextField(blank=True, help_text="Shown above the fields (plain text).")
    success_message = models.CharField(max_length=500, blank=True)
    redirect_url = models.URLField(blank=True, help_text="Send visitors here after submitting instead of the message.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    tags = models.ManyToManyField("contacts.Tag", blank=True, related_name="forms", help_text="Added to every contact.")
    stage = models.ForeignKey(
        "contacts.Stage", null=True, blank=True, on_delete=models.SET_NULL, related_name="forms",
        help_text="Pipeline stage set on every contact.",
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Owner given to contacts that have none yet.",
    )
    current_version = models.ForeignKey(
        # SET_NULL: deleting a form deletes its versions, this one included (PROTECT refused every delete).
        "FormVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
    )
    views_count = models.PositiveIntegerField(default=0, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["draft", "open", "closed"]), name="form_status_valid"),
            models.CheckConstraint(condition=~Q(slug=""), name="form_slug_not_empty"),
        ]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("forms_app:detail", args=[self.pk])

    def get_public_url(self) -> str:
        return reverse("forms_public:form", args=[self.slug])

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.OPEN


class FormVersion(models.Model):
    """A frozen list of field definitions; replaced (not edited) once submissions point at it."""

    form = models.ForeignKey(Form, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    # [{"id", "type", "label", "placeholder", "help_text", "required", "choices", "maps_to"}, ...] in display order.
    fields = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["form_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["form", "number"], name="formversion_unique_number"),
            models.CheckConstraint(condition=Q(number__gte=1), name="formversion_number_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.form} v{self.number}"


class Submission(models.Model):
    class Status(models.TextChoices):
        NEW = "new", "New"
        REVIEWED = "reviewed", "Reviewed"

    class Outcome(models.TextChoices):
        CREATED = "created", "Created a contact"
        UPDATED = "updated", "Updated a contact"

    form = models.ForeignKey(Form, on_delete=models.CASCADE, related_name="submissions")
    version = models.ForeignKey(FormVersion, on_delete=models.PROTECT, related_name="submissions")
    contact = models.ForeignKey(
        "contacts.Contact", null=True, blank=True, on_delete=models.SET_NULL, related_name="form_submissions"
    )
    # Raw answers keyed by field id, as the visitor gave them (files: {"name", "size", "file_id"}).
    answers = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.NEW)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    ip_hash = models.CharField(max_length=64, blank=True, help_text="HMAC of the visitor's IP; the IP itself is never stored.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["new", "reviewed"]), name="submission_status_valid"),
            models.CheckConstraint(condition=Q(outcome__in=["created", "updated"]), name="submission_outcome_valid"),
        ]
        indexes = [
            models.Index(fields=["form", "-created_at"], name="submission_form_created_idx"),
            models.Index(fields=["contact", "-created_at"], name="submission_contact_created_idx"),
        ]

    def __str__(self) -> str:
        return f"Submission #{self.pk} to {self.form_id}"

    def get_absolute_url(self) -> str:
        return reverse("forms_app:submission", args=[self.pk])

    def answer_rows(self) -> list[tuple[dict, object]]:
        """Return (field definition, answer) pairs in the order of the version it was submitted to."""
        return [(definition, self.answers.get(definition["id"])) for definition in self.version.fields]
