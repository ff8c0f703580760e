"""Automation rules (assignment, starting stage, tags, follow-up tasks) and the webhook outbox."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from contacts.custom_fields import BadValue, clean_value
from contacts.models import CustomField, Source, Stage, Tag


class Trigger(models.TextChoices):
    CONTACT_CREATED = "contact_created", "Contact created"
    TAG_ADDED = "tag_added", "Tag added"
    STAGE_CHANGED = "stage_changed", "Stage changed"
    FORM_SUBMITTED = "form_submitted", "Form submitted"
    CONVERSATION_ENDED = "conversation_ended", "Conversation ended"


class WebhookEventType(models.TextChoices):
    CONTACT_CREATED = "contact.created", "contact.created"
    CONTACT_UPDATED = "contact.updated", "contact.updated"
    CONTACT_MERGED = "contact.merged", "contact.merged"
    NOTE_CREATED = "note.created", "note.created"
    TASK_CREATED = "task.created", "task.created"
    TASK_COMPLETED = "task.completed", "task.completed"
    STAGE_CHANGED = "stage.changed", "stage.changed"
    FORM_SUBMITTED = "form.submitted", "form.submitted"
    CONVERSATION_ENDED = "conversation.ended", "conversation.ended"


class Team(models.Model):
    """People a rule hands contacts to; ``turn`` is the round-robin counter, taken under a row lock."""

    name = models.CharField(max_length=80, unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="TeamMember", related_name="crm_teams")
    turn = models.PositiveBigIntegerField(default=0, editable=False, help_text="Round-robin turns taken so far.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TeamMember(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveIntegerField(default=0, help_text="Order in the round-robin.")

    class Meta:
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="team_member_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team}"


class Rule(models.Model):
    """One automation: when ``trigger`` happens and every set condition holds, do every set action."""

    class AssignMode(models.TextChoices):
        NONE = "", "Do not assign"
        FIXED = "fixed", "A fixed user"
        ROUND_ROBIN = "round_robin", "Round-robin over the team"
        FEWEST_OPEN_TASKS = "fewest_open_tasks", "Team member with the fewest open tasks"

    class DueUnit(models.TextChoices):
        MINUTES = "minutes", "minutes"
        HOURS = "hours", "hours"
        DAYS = "days", "days"

    name = models.CharField(max_length=120)
    position = models.PositiveIntegerField(default=0, help_text="Rules run in this order (then by id).")
    active = models.BooleanField(default=True)
    trigger = models.CharField(max_length=24, choices=Trigger.choices)

    # Conditions: each one left empty always holds.
    sources = models.JSONField(
        default=list, blank=True,
        help_text=f"Only for changes from these sources ({', '.join(Source.values)}); empty: any source.",
    )
    form_id = models.PositiveIntegerField(
        null=True, blank=True, help_text="Form submitted trigger: only this form (its id)."
    )
    tag = models.ForeignKey(
        Tag, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Tag added trigger: the tag that was added. Other triggers: the contact has this tag.",
    )
    stage = models.ForeignKey(
        Stage, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Stage changed trigger: the stage moved into. Other triggers: the contact is in this stage.",
    )
    custom_field_key = models.CharField(max_length=60, blank=True, help_text="Custom field key to test.")
    custom_field_value = models.CharField(
        max_length=200, blank=True, help_text="Value it must have (case-insensitive; a multiple choice must contain it)."
    )

    # Actions, run in this order: owner, stage, tags, task, webhook.
    assign_mode = models.CharField(max_length=20, choices=AssignMode.choices, blank=True, default="")
    assign_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    assign_team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.PROTECT, related_name="rules")
    assign_only_if_unowned = models.BooleanField(default=True, help_text="Leave contacts that already have an owner.")
    set_stage = models.ForeignKey(
        Stage, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Put the contact in this stage of its pipeline.",
    )
    stage_only_if_not_in_pipeline = models.BooleanField(
        default=True, help_text="Only when the contact is not already in that pipeline."
    )
    add_tags = models.ManyToManyField(Tag, blank=True, related_name="+")
    task_title = models.CharField(max_length=200, blank=True, help_text="Create a follow-up task for the owner.")
    task_due_amount = models.PositiveIntegerField(null=True, blank=True)
    task_due_unit = models.CharField(max_length=8, choices=DueUnit.choices, default=DueUnit.DAYS)
    webhook_event = models.CharField(
        max_length=24, choices=WebhookEventType.choices, blank=True,
        help_text="Send this webhook event about the contact.",
    )
    webhook_endpoint = models.ForeignKey(
        "WebhookEndpoint", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Only to this endpoint; empty: every endpoint subscribed to the event.",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "id"]
        indexes = [models.Index(fields=["trigger", "active", "position"], name="rule_trigger_active_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(trigger__in=Trigger.values), name="rule_trigger_valid"),
            models.CheckConstraint(
                condition=~Q(assign_mode="fixed") | Q(assign_user__isnull=False), name="rule_fixed_needs_user"
            ),
            models.CheckConstraint(
                condition=~Q(assign_mode__in=["round_robin", "fewest_open_tasks"]) | Q(assign_team__isnull=False),
                name="rule_team_mode_needs_team",
            ),
            models.CheckConstraint(
                condition=Q(task_title="") | Q(task_due_amount__isnull=False), name="rule_task_needs_due"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.assign_mode == self.AssignMode.FIXED and not self.assign_user_id:
            errors["assign_user"] = "Choose the user to assign."
        if self.assign_mode in (self.AssignMode.ROUND_ROBIN, self.AssignMode.FEWEST_OPEN_TASKS) and not self.assign_team_id:
            errors["assign_team"] = "Choose the team to assign from."
        errors.update(self._clean_targets())
        if self.task_due_amount is not None and not (self.task_title or "").strip():
            errors["task_title"] = "Give the task a title, or leave when it is due empty (no task)."
        if self.task_title and self.task_due_amount is None:
            errors["task_due_amount"] = "Say when the task is due."
        elif self.task_due_amount == 0:
            errors["task_due_amount"] = "At least 1: a task due at once is overdue when it is made."
        elif self.task_due_amount is not None:
            per_unit = {self.DueUnit.MINUTES: 60 * 24 * 365, self.DueUnit.HOURS: 24 * 365, self.DueUnit.DAYS: 365}
            limit = 10 * per_unit.get(self.task_due_unit, 365)  # ten years: a task past that is no follow-up
            if self.task_due_amount > limit:
                errors["task_due_amount"] = f"At most {limit:,} {self.task_due_unit} (ten years)."
        if self.form_id is not None:
            from forms_app.models import Form

            if not Form.objects.filter(pk=self.form_id).exists():
                errors["form_id"] = f"There is no form {self.form_id}."
        unknown = [s for s in (self.sources or []) if s not in Source.values]
        if not isinstance(self.sources, list) or unknown:
            errors["sources"] = f"A list of sources from {', '.join(Source.values)}."
        if bool(self.custom_field_key) != bool(self.custom_field_value):
            errors["custom_field_value"] = "Give both the custom field key and the value."
        elif self.custom_field_key:
            errors.update(self._clean_custom_field_condition())
        if errors:
            raise ValidationError(errors)

    def _clean_targets(self) -> dict[str, str]:
        """Refuse actions that could only ever fail or do nothing: nobody to assign to, an endpoint that drops the event.

        At run time such a rule records a failed run or "queued for 0 endpoint(s)" on
        every contact; saying so when it is saved is kinder.
        """
        errors: dict[str, str] = {}
        team_modes = (self.AssignMode.ROUND_ROBIN, self.AssignMode.FEWEST_OPEN_TASKS)
        # Checked on active rules only, as the team below: unticking Active is how a broken rule is put away.
        if self.assign_mode == self.AssignMode.FIXED and self.assign_user_id and self.active:
            if not self.assign_user.is_active:
                errors["assign_user"] = f"{self.assign_user.get_username()} is inactive: choose an active user."
            elif not self.assign_user.is_staff:
                errors["assign_user"] = f"{self.assign_user.get_username()} cannot sign in to the CRM: choose a staff user."
        if self.assign_mode in team_modes and self.assign_team_id and self.active:
            if not TeamMember.objects.filter(team_id=self.assign_team_id, user__is_active=True, user__is_staff=True).exists():
                errors["assign_team"] = (
                    f"Team {self.assign_team.name} has no active members: add someone to it first, "
                    "or save the rule inactive."
                )
        contact_events = {WebhookEventType.CONTACT_UPDATED}
        if self.webhook_event == WebhookEventType.CONTACT_CREATED:
            # Every new contact is already sent as contact.created to each endpoint subscribed to it: a rule
            # sending it again delivered it twice, under two webhook-ids no receiver could match up.
            errors["webhook_event"] = (
                "contact.created is already sent for every new contact to each endpoint subscribed to it; a rule "
                "sending it again would deliver it twice. Leave the event empty, or send contact.updated."
            )
        elif self.webhook_event and self.webhook_event not in contact_events:
            # The rule sends the contact; receivers of note.created, task.completed, ... read a note, a task.
            errors["webhook_event"] = (
                f"A rule sends the contact, which is what {' or '.join(sorted(contact_events))} carries; "
                f"{self.webhook_event} receivers expect something else in it."
            )
        elif self.webhook_endpoint_id and not self.webhook_event:
            errors["webhook_event"] = "Choose the event to send to this endpoint."
        elif self.webhook_endpoint_id and self.active:
            endpoint = self.webhook_endpoint
            if not endpoint.active:
                errors["webhook_endpoint"] = f"{endpoint.url} is disabled: enable it first, or leave the endpoint empty."
            elif self.webhook_event not in (endpoint.events or []):
                receives = ", ".join(endpoint.events or []) or "nothing"
                errors["webhook_endpoint"] = (
                    f"{endpoint.url} is not subscribed to {self.webhook_event} (it receives: {receives}), so it would "
                    "never get it: add the event to the endpoint, or choose another."
                )
        return errors

    def _clean_custom_field_condition(self) -> dict[str, str]:
        """Refuse a condition no contact can meet; store the value as contacts store it, so it matches.

        A rule whose key or value can never match fails silently (it just never
        fires), so the admin hears about it when saving instead.
        """
        definition = CustomField.objects.filter(key=self.custom_field_key).first()
        if definition is None:
            keys = ", ".join(CustomField.objects.order_by("key").values_list("key", flat=True)) or "none yet"
            return {"custom_field_key": f"There is no custom field {self.custom_field_key!r}. Existing keys: {keys}."}
        wanted = self.custom_field_value
        if definition.type == CustomField.Type.MULTIPLE_CHOICE:
            # The condition holds when the contact's list contains this one option.
            wanted = [wanted]
        try:
            cleaned = clean_value(definition, wanted)
        except BadValue as exc:
            allowed = f" Allowed: {', '.join(exc.allowed)}." if exc.allowed else ""
            return {"custom_field_value": f"{definition.label} ({definition.key}): {exc.message}{allowed}"}
        if isinstance(cleaned, list):
            cleaned = cleaned[0]
        # Compared as text, case-insensitively, with the stored value: "yes" becomes "true", "a" becomes "A".
        self.custom_field_value = str(cleaned).lower() if isinstance(cleaned, bool) else str(cleaned)
        return {}


class RuleRun(models.Model):
    """A rule that fired (or failed) on a contact: what it did, or why it could not."""

    class Status(models.TextChoices):
        APPLIED = "applied", "Applied"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (depth limit)"

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="runs")
    contact = models.ForeignKey("contacts.Contact", on_delete=models.CASCADE, related_name="rule_runs")
    trigger = models.CharField(max_length=24, choices=Trigger.choices)
    status = models.CharField(max_length=8, choices=Status.choices)
    actions = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "-created_at"], name="rulerun_status_created_idx")]

    def __str__(self) -> str:
        return f"{self.rule} on contact {self.contact_id}: {self.status}"


class WebhookEndpoint(models.Model):
    url = models.URLField(max_length=500, help_text="http(s) URL; private addresses are refused unless allow-listed.")
    description = models.CharField(max_length=200, blank=True)
    events = models.JSONField(default=list, help_text="Event types this endpoint receives.")
    active = models.BooleanField(default=True)
    # Kept in clear: signing needs it. Shown once in admin when created or rotated.
    secret = models.CharField(max_length=100, editable=False)
    previous_secret = models.CharField(max_length=100, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.CharField(max_length=255, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """The outbox: one event for one endpoint, written in the transaction that made the change.

    ``next_attempt_at`` is both the retry schedule and the claim lease: a worker that
    claims a row pushes it forward, so a row whose worker died becomes due again.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (gave up)"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40, choices=WebhookEventType.choices)
    msg_id = models.CharField(max_length=40, unique=True, help_text="The webhook-id header; same on every retry.")
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    retry_from = models.DateTimeField(
        null=True, blank=True, help_text="When an admin last redelivered it: retries run for a day from then."
    )
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=255, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(
                fields=["next_attempt_at"], condition=Q(status="pending"), name="delivery_pending_due_idx"
            ),
            models.Index(fields=["endpoint", "-created_at"], name="delivery_endpoint_created_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "delivered", "failed"]), name="delivery_status_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status="pending") | Q(next_attempt_at__isnull=False), name="delivery_pending_has_due"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint_id} ({self.status})"


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    attempted_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    response_snippet = models.CharField(max_length=500, blank=True)
    error = models.CharField(max_length=255, blank=True)
    success = models.BooleanField(default=False)

    class Meta:
        ordering = ["-attempted_at", "-id"]

    def __str__(self) -> str:
        return f"{self.attempted_at:%Y-%m-%d %H:%M:%S} {self.status_code or self.error}"
