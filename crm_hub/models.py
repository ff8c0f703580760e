"""Project-wide models: the agents that write over the API."""

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

rate_limit_validator = RegexValidator(
    r"^[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)$",
    "Write the rate as N/sec, N/min, N/hour or N/day, e.g. 600/min.",
)


class Agent(models.Model):
    """An API client (chat bot, voice bot, LLM tool) with one hashed, scoped token."""

    class Scope(models.TextChoices):
        CONTACTS_READ = "contacts:read", "Read contacts"
        CONTACTS_WRITE = "contacts:write", "Create and update contacts"
        NOTES_WRITE = "notes:write", "Add notes"
        TASKS_WRITE = "tasks:write", "Create tasks"
        FILES_WRITE = "files:write", "Upload files"
        CONVERSATIONS_WRITE = "conversations:write", "Write conversations"
        IDENTITY_READ = "identity:read", "Read identity (tax/ID) numbers"
        ACCESS_CHECK = "access:check", "Only ask access/check (a gated public bot: it can list no one)"

    name = models.CharField(max_length=120, unique=True)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True, help_text="Inactive agents get 401 on every call.")
    scopes = models.JSONField(default=list, blank=True, help_text="List of scope codes, e.g. contacts:read.")
    rate_limit = models.CharField(
        max_length=32,
        default="600/min",
        validators=[rate_limit_validator],
        help_text="Requests allowed per token, as N/sec, N/min, N/hour or N/day.",
    )
    token_prefix = models.CharField(max_length=16, blank=True, help_text="First characters of the token, for recognising it.")
    token_hash = models.CharField(max_length=64, blank=True, editable=False)
    token_created_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["token_hash"], condition=~Q(token_hash=""), name="agent_unique_token_hash"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])


class IdempotencyRecord(models.Model):
    """One agent call made with an ``Idempotency-Key``: its fingerprint and, once answered, its response.

    The unique (agent, key) pair lets the database decide which of two concurrent
    duplicates runs; the other sees the row and waits, replays or gets 409.
    """

    class State(models.TextChoices):
        IN_FLIGHT = "in_flight", "In flight"
        DONE = "done", "Done"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="idempotency_records")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=500)
    fingerprint = models.CharField(max_length=64, help_text="sha256 of method, path and body.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.IN_FLIGHT)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    content_type = models.CharField(max_length=120, blank=True)
    body = models.BinaryField(blank=True, default=b"")
    # The agent's scopes when the answer was made: a replay must not show what they no longer allow.
    scopes = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "key"], name="idempotency_unique_agent_key"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id}:{self.key} ({self.state})"
