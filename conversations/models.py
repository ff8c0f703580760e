"""Agents' conversations and their messages; a conversation links to at most one contact."""

from django.db import models
from django.db.models import Q


class Conversation(models.Model):
    class Channel(models.TextChoices):
        WEB_CHAT = "web_chat", "Web chat"
        WHATSAPP = "whatsapp", "WhatsApp"
        SMS = "sms", "SMS"
        VOICE = "voice", "Voice"
        EMAIL = "email", "Email"
        OTHER = "other", "Other"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ENDED = "ended", "Ended"

    agent = models.ForeignKey(
        "crm_hub.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="conversations"
    )
    external_id = models.CharField(max_length=200, blank=True, help_text="The agent platform's id for it.")
    channel = models.CharField(max_length=10, choices=Channel.choices, default=Channel.WEB_CHAT)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    summary = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    contact = models.ForeignKey(
        "contacts.Contact", null=True, blank=True, on_delete=models.SET_NULL, related_name="conversations"
    )
    # What the transcript extractor found and why it dropped values:
    # {"extractor", "found", "dropped": [{"field", "value", "reason"}], "error", "fallback"}.
    extraction = models.JSONField(default=dict, blank=True, help_text="Outcome of transcript extraction, if run.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "external_id"],
                condition=~Q(external_id=""),
                name="conversation_unique_external_id_per_agent",
            ),
            models.CheckConstraint(condition=Q(channel__in=["web_chat", "whatsapp", "sms", "voice", "email", "other"]), name="conversation_channel_valid"),
            models.CheckConstraint(
                condition=Q(status="open", ended_at__isnull=True) | Q(status="ended", ended_at__isnull=False),
                name="conversation_ended_at_matches_status",
            ),
        ]
        indexes = [
            models.Index(fields=["contact", "-started_at"], name="conversation_contact_idx"),
            models.Index(fields=["status", "-started_at"], name="conversation_status_idx"),
            models.Index(fields=["agent", "-started_at"], name="conversation_agent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} conversation {self.external_id or self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        VISITOR = "visitor", "Visitor"
        AGENT = "agent", "Agent"
        STAFF = "staff", "Human staff"
        SYSTEM = "system", "System"
        TOOL = "tool", "Tool"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=8, choices=Role.choices)
    content = models.TextField()
    sent_at = models.DateTimeField()
    external_id = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["sent_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "external_id"],
                condition=~Q(external_id=""),
                name="message_unique_external_id_per_conversation",
            ),
            models.CheckConstraint(condition=Q(role__in=["visitor", "agent", "staff", "system", "tool"]), name="message_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"
