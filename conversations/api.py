"""Agent API for conversations: serializers and thin views (validate, call one service, serialize).

Visibility: an agent reads every conversation (scope ``contacts:read``), since a
contact's chat history spans agents and channels; it writes (append, end) only
the conversations it holds itself (scope ``conversations:write``), because
``external_id`` is unique per agent and means nothing to another agent. Another
agent's conversation answers 404 to a write.
"""

from __future__ import annotations

import json

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import exceptions, generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts.api.serializers import CompletenessOutput
from contacts.models import Contact, CustomField, Source, Task
from conversations import services
from conversations.filters import ConversationFilter
from conversations.models import Conversation, Message
from conversations.selectors import conversation_detail, conversation_list
from crm_hub.actors import Actor
from crm_hub.api.errors import validated
from crm_hub.api.inputs import RefusesUnknownKeys
from crm_hub.api.pagination import CheckedCursorPagination
from crm_hub.api.permissions import MissingScope, intake_scopes, require_scopes
from crm_hub.api.schema import ERRORS as SHARED_ERRORS
from crm_hub.api.throttling import AgentRateThrottle
from crm_hub.errors import InputRejected

READ = "contacts:read"
WRITE = "conversations:write"
CONTACTS_WRITE = "contacts:write"


def end_scopes(options: dict) -> list[str]:
    """Scopes an end with these options needs besides conversations:write: those POST intake needs for its parts.

    An intake, or an extraction (which writes the contact it finds and the summary as its note), needs what
    POST intake needs for the parts it writes; a plain end needs nothing more.
    """
    intake = options.get("intake")
    if intake is None and not options.get("extract"):
        return []
    parts = dict(intake) if isinstance(intake, dict) else {"contact": True}
    if options.get("summary") and not parts.get("note"):
        parts["note"] = options["summary"]  # without a note, the summary becomes the note
    return intake_scopes(parts)


class ConversationClosed(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conversation_ended"
    default_detail = "The conversation has ended; it takes no new messages and no second intake."

    def __init__(self, detail=None, *, field: str | None = None):
        super().__init__(detail)
        self.field = field  # where the request named the conversation (POST intake: conversation.external_id)


# --- Serializers: errors -------------------------------------------------------------------------


# The one error envelope every agent endpoint documents (crm_hub.api.schema).
ConversationErrorsSerializer = SHARED_ERRORS


ERRORS = {
    400: OpenApiResponse(ConversationErrorsSerializer, description="Invalid input; nothing was written."),
    401: OpenApiResponse(ConversationErrorsSerializer, description="Missing, unknown or revoked token."),
    403: OpenApiResponse(ConversationErrorsSerializer, description="The token lacks the scope (code missing_scope)."),
    429: OpenApiResponse(ConversationErrorsSerializer, description="Too many requests; see Retry-After."),
}
NOT_FOUND = {404: OpenApiResponse(ConversationErrorsSerializer, description="No such conversation (or not this agent's).")}
CONFLICT = {409: OpenApiResponse(ConversationErrorsSerializer, description="The conversation has ended (code conversation_ended).")}


# --- Serializers: output -------------------------------------------------------------------------


class MessageSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True, help_text="Message id.")
    role = serializers.CharField(help_text="visitor, agent, staff, system or tool.")
    content = serializers.CharField(help_text="The message text.")
    sent_at = serializers.DateTimeField(help_text="When it was sent.")
    external_id = serializers.CharField(help_text="The agent platform's id for the message; empty if none was given.")


class ConversationSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="Conversation id.")
    external_id = serializers.CharField(help_text="The agent platform's id (unique per agent); empty if none.")
    agent = serializers.CharField(source="agent.name", allow_null=True, default=None, help_text="Name of the agent that held it.")
    channel = serializers.CharField(help_text="web_chat, whatsapp, sms, voice, email or other.")
    status = serializers.CharField(help_text="open or ended.")
    started_at = serializers.DateTimeField(help_text="When it started.")
    ended_at = serializers.DateTimeField(allow_null=True, help_text="When it ended; null while open.")
    summary = serializers.CharField(help_text="Summary given when it ended; empty if none.")
    metadata = serializers.JSONField(help_text="Free-form data the agent attached at creation.")
    contact_id = serializers.IntegerField(allow_null=True, help_text="The linked contact; null while unlinked.")
    linked = serializers.SerializerMethodField(help_text="Whether a contact is linked.")
    message_count = serializers.IntegerField(default=0, help_text="Number of stored messages.")
    extraction = serializers.JSONField(
        help_text="Outcome of transcript extraction: {extractor, found, dropped: [{field, value, reason}], error, fallback?}; "
        "empty object if none ran."
    )
    updated_at = serializers.DateTimeField(help_text="Last change (new messages, link, end).")

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_linked(self, obj) -> bool:
        return obj.contact_id is not None


class ConversationDetailSerializer(ConversationSerializer):
    messages = MessageSerializer(many=True, help_text="Every message, oldest first.")


class RecentConversationSerializer(serializers.Serializer):
    """Compact form for a contact's ``recent_conversations`` (use with selectors.recent_for_contact)."""

    id = serializers.IntegerField(help_text="Conversation id.")
    channel = serializers.CharField(help_text="web_chat, whatsapp, sms, voice, email or other.")
    status = serializers.CharField(help_text="open or ended.")
    started_at = serializers.DateTimeField(help_text="When it started.")
    ended_at = serializers.DateTimeField(allow_null=True, help_text="When it ended; null while open.")
    summary = serializers.CharField(help_text="Summary given when it ended.")
    agent = serializers.CharField(source="agent.name", allow_null=True, default=None, help_text="Agent that held it.")
    message_count = serializers.IntegerField(default=0, help_text="Number of stored messages.")


class CustomValueSerializer(serializers.Serializer):
    value = serializers.JSONField(help_text="The stored value.")
    band = serializers.CharField(allow_null=True, help_text="For numeric fields with bands: the label the value falls in.")


class ContactBriefSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="Contact id.")
    name = serializers.CharField(help_text="Full name.")
    phone = serializers.CharField(source="phone_e164", help_text="Phone in E.164 (the dedup key); empty if none.")
    email = serializers.CharField(source="email_normalized", help_text="Email, lower-cased; empty if none.")
    custom = serializers.SerializerMethodField(
        help_text='Custom field values, each with its band label beside the number, e.g. {"intent_score": {"value": 0.82, "band": "High intent"}}.'
    )

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "object", "properties": {"value": {}, "band": {"type": "string", "nullable": True}}}})
    def get_custom(self, obj: Contact) -> dict:
        values = obj.custom or {}
        definitions = {d.key: d for d in CustomField.objects.filter(key__in=list(values))} if values else {}
        return {
            key: {"value": value, "band": (definitions[key].band_label(value) or None) if key in definitions else None}
            for key, value in values.items()
        }


class PendingChangeSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="Change request id.")
    field = serializers.CharField(help_text="The protected field (phone, email, identity, owner).")
    new_value = serializers.CharField(help_text="The value that awaits staff approval.")


class StartResponseSerializer(serializers.Serializer):
    conversation = ConversationSerializer(help_text="The conversation (created or fetched).")
    created = serializers.BooleanField(help_text="true if created by this call; false if fetched by external_id.")
    messages_added = serializers.IntegerField(help_text="Messages stored by this call (resent ones are not counted).")


class AppendResponseSerializer(serializers.Serializer):
    conversation = ConversationSerializer(help_text="The conversation after the append.")
    added = MessageSerializer(many=True, help_text="Messages stored by this call.")
    duplicates = serializers.IntegerField(help_text="Messages skipped because their external_id was already stored.")


class EndResponseSerializer(serializers.Serializer):
    conversation = ConversationSerializer(help_text="The ended conversation (with its extraction outcome, if any).")
    contact = ContactBriefSerializer(
        allow_null=True,
        help_text="The contact written by the intake; null if none, or if the token lacks contacts:read.",
    )
    created = serializers.BooleanField(allow_null=True, help_text="Whether the intake created the contact; null without intake.")
    matched_by = serializers.CharField(
        allow_null=True,
        help_text="phone, email, conversation (no phone or email given: the contact the conversation is linked to) or null.",
    )
    possible_duplicates = serializers.ListField(child=serializers.IntegerField(), help_text="Contact ids flagged for review.")
    pending_changes = PendingChangeSerializer(many=True, help_text="Protected-field changes awaiting staff approval.")
    note_id = serializers.IntegerField(allow_null=True, help_text="The note written, linked to this conversation.")
    task_id = serializers.IntegerField(allow_null=True, help_text="The task created, linked to this conversation.")
    completeness = CompletenessOutput(allow_null=True, help_text="Which parts of a clean record the contact now has.")
    extraction = serializers.JSONField(allow_null=True, help_text="Extraction outcome when extract was true; else null.")


# --- Serializers: input --------------------------------------------------------------------------


class MessageRoleField(serializers.ChoiceField):
    @property
    def allowed_values(self) -> list[str]:
        return [*(str(key) for key in self.choices), *services.ROLE_ALIASES]

    def to_internal_value(self, data):
        return super().to_internal_value(services.ROLE_ALIASES.get(data, data) if isinstance(data, str) else data)


class MessageInputSerializer(RefusesUnknownKeys):
    role = MessageRoleField(
        choices=Message.Role.choices,
        help_text="Who wrote it: visitor, agent, staff, system or tool (\"user\" and \"assistant\" are taken as visitor and agent).",
    )
    content = serializers.CharField(max_length=services.MAX_MESSAGE_CHARS, trim_whitespace=False, help_text="The message text.")
    sent_at = serializers.DateTimeField(required=False, allow_null=True, help_text="ISO 8601; defaults to now.")
    external_id = serializers.CharField(
        required=False, allow_blank=True, max_length=200,
        help_text="The platform's message id; a message resent with the same id is stored once.",
    )


class StartInputSerializer(RefusesUnknownKeys):
    external_id = serializers.CharField(
        required=False, allow_blank=True, max_length=200,
        help_text="The agent platform's conversation id. With it the call is create-or-fetch; without it, it always creates.",
    )
    channel = serializers.ChoiceField(
        choices=Conversation.Channel.choices, default=Conversation.Channel.WEB_CHAT,
        help_text="web_chat, whatsapp, sms, voice, email or other (taken only at creation).",
    )
    started_at = serializers.DateTimeField(required=False, allow_null=True, help_text="ISO 8601; defaults to now (taken only at creation).")
    metadata = serializers.DictField(required=False, help_text="Free-form object kept with the conversation (taken only at creation).")
    messages = MessageInputSerializer(many=True, required=False, max_length=services.MAX_MESSAGES_PER_CALL,
                                      help_text="First messages, oldest first (at most 500).")
    contact_id = serializers.IntegerField(required=False, allow_null=True, min_value=1,
                                          help_text="Link to this known contact (a relink is recorded in history).")


class AppendInputSerializer(RefusesUnknownKeys):
    messages = MessageInputSerializer(many=True, allow_empty=False, max_length=services.MAX_MESSAGES_PER_CALL,
                                      help_text="One or many messages, oldest first (at most 500).")


class IntakeTaskDocSerializer(serializers.Serializer):
    title = serializers.CharField(help_text="What to do.")
    due_at = serializers.DateTimeField(help_text="ISO 8601 due date and time.")
    assignee = serializers.CharField(required=False, help_text="User id, username or email; defaults to the contact's owner.")
    priority = serializers.ChoiceField(choices=Task.Priority.choices, required=False, help_text="Defaults to normal.")


class IntakeDocSerializer(serializers.Serializer):
    """The body of POST intake (without conversation): documented here, validated by the intake write path."""

    contact = serializers.DictField(help_text="Standard contact fields as in upsert (name, phone, email, company, ...).")
    note = serializers.CharField(required=False, help_text="The conversation summary as a note (HTML allowed, sanitized). Defaults to summary.")
    tags = serializers.ListField(child=serializers.CharField(), required=False, help_text="Existing tag names to add.")
    pipeline = serializers.CharField(required=False, help_text="Pipeline name or id.")
    stage = serializers.CharField(required=False, help_text="Stage name or id in that pipeline.")
    task = IntakeTaskDocSerializer(required=False, help_text="Follow-up task.")
    custom = serializers.DictField(required=False, help_text="Custom field values keyed by field key (Allow for AI fields only).")


@extend_schema_field(IntakeDocSerializer)
class IntakeField(serializers.DictField):
    """Passed whole to the intake write path, which names every bad or unknown field.

    DRF's checks for NUL and lone surrogates sit on CharFields and do not see into this object;
    ``services.end_conversation`` refuses such text anywhere in it (field ``intake``), for every caller.
    """


class EndInputSerializer(RefusesUnknownKeys):
    summary = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False,
                                    max_length=services.MAX_SUMMARY_CHARS,
                                    help_text="What the conversation was about; also the intake note if the intake has none.")
    intake = IntakeField(required=False, help_text="Same body as POST intake; written with the end in one transaction.")
    extract = serializers.BooleanField(default=False, help_text="Without intake: read the visitor's messages and write what is found.")
    extractor = serializers.ChoiceField(
        choices=["rules", "llm"], required=False,
        help_text="rules (offline, deterministic) or llm; defaults to llm when CRM_LLM_BASE_URL is set, else rules.",
    )


# --- Pagination and views ------------------------------------------------------------------------


class ConversationCursorPagination(CheckedCursorPagination):
    ordering = ("-started_at", "-id")
    ordering_choices = ("-started_at", "started_at")
    example_path = "conversations"
    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 100


def _own_conversation(request, pk: int) -> Conversation:
    return get_object_or_404(Conversation, pk=pk, agent=request.auth)


START_EXAMPLE = {
    "external_id": "chat-8f2c",
    "channel": "whatsapp",
    "messages": [
        {"role": "visitor", "content": "Hi, I'd like a quote", "external_id": "m1"},
        {"role": "agent", "content": "Sure! What's your name?", "external_id": "m2"},
    ],
}
CONVERSATION_EXAMPLE = {
    "id": 42, "external_id": "chat-8f2c", "agent": "web-bot", "channel": "whatsapp", "status": "open",
    "started_at": "2026-05-01T14:30:00Z", "ended_at": None, "summary": "", "metadata": {}, "contact_id": None,
    "linked": False, "message_count": 2, "extraction": {}, "updated_at": "2026-05-01T14:30:05Z",
}


class ConversationListCreateView(generics.ListAPIView):
    required_scopes = {"GET": READ, "POST": WRITE}
    serializer_class = ConversationSerializer
    filterset_class = ConversationFilter
    pagination_class = ConversationCursorPagination

    def get_queryset(self):
        return conversation_list()

    @extend_schema(
        summary="List conversations",
        description="Every agent's conversations, newest first, with cursor pagination. "
        "Filter by contact, channel, status, since (started at or after), linked, mine.",
        responses={200: ConversationSerializer(many=True), **ERRORS,
                   404: OpenApiResponse(ConversationErrorsSerializer, description="The cursor is not valid.")},
        examples=[OpenApiExample("An unlinked conversation", value=CONVERSATION_EXAMPLE, response_only=True)],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Start or fetch a conversation",
        description="Create-or-fetch by external_id (unique per agent): a repeated call returns the same conversation "
        "(200) and stores resent messages once. Optional first messages and contact_id.",
        request=StartInputSerializer,
        responses={201: StartResponseSerializer, 200: StartResponseSerializer, **ERRORS, **CONFLICT},
        examples=[
            OpenApiExample("Start with first messages", value=START_EXAMPLE, request_only=True),
            OpenApiExample(
                "Created", value={"conversation": CONVERSATION_EXAMPLE, "created": True, "messages_added": 2},
                response_only=True, status_codes=["201"],
            ),
        ],
    )
    def post(self, request, *args, **kwargs):
        data = validated(StartInputSerializer(data=request.data))
        if data.get("contact_id") is not None and not (request.auth.has_scope(READ) or request.auth.has_scope(CONTACTS_WRITE)):
            # Linking names a contact: without a contacts scope the answer (201 vs 400 not_found) would probe ids.
            raise MissingScope(READ)
        try:
            result = services.start_conversation(actor=Actor.for_agent(request.auth), source=Source.CHAT, **data)
        except services.ConversationEnded as exc:
            raise ConversationClosed(str(exc)) from None
        conversation = conversation_detail(result.conversation.pk)
        data = StartResponseSerializer(
            {"conversation": conversation, "created": result.created, "messages_added": len(result.messages_added)}
        ).data
        return Response(data, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class ConversationDetailView(APIView):
    required_scopes = {"GET": READ}

    @extend_schema(
        summary="Read a conversation with its messages",
        responses={200: ConversationDetailSerializer, **ERRORS, **NOT_FOUND},
        examples=[OpenApiExample("Conversation", value={**CONVERSATION_EXAMPLE, "messages": [
            {"id": 1, "role": "visitor", "content": "Hi, I'd like a quote", "sent_at": "2026-05-01T14:30:00Z", "external_id": "m1"},
        ]}, response_only=True)],
    )
    def get(self, request, pk: int):
        conversation = conversation_detail(pk)
        if conversation is None:
            raise exceptions.NotFound("No such conversation.")
        return Response(ConversationDetailSerializer(conversation).data)


class ConversationMessagesView(APIView):
    required_scopes = {"POST": WRITE}

    @extend_schema(
        summary="Append messages",
        description="Append one or many messages. Idempotent by message external_id: a resent message is skipped "
        "(counted in duplicates). 201 if anything was stored, 200 if all were duplicates. An ended conversation "
        "takes no new messages (409).",
        request=AppendInputSerializer,
        responses={201: AppendResponseSerializer, 200: AppendResponseSerializer, **ERRORS, **NOT_FOUND, **CONFLICT},
        examples=[OpenApiExample("Two messages", request_only=True, value={"messages": [
            {"role": "visitor", "content": "call me on 561 555 0192", "external_id": "m3"},
            {"role": "agent", "content": "Thanks, we'll call you.", "external_id": "m4"},
        ]})],
    )
    def post(self, request, pk: int):
        conversation = _own_conversation(request, pk)
        data = validated(AppendInputSerializer(data=request.data))
        try:
            result = services.append_messages(conversation=conversation, messages=data["messages"])
        except services.ConversationEnded as exc:
            raise ConversationClosed(str(exc)) from None
        data = AppendResponseSerializer(
            {"conversation": conversation_detail(pk), "added": result.added, "duplicates": result.duplicates}
        ).data
        return Response(data, status=status.HTTP_201_CREATED if result.added else status.HTTP_200_OK)


class ConversationEndView(APIView):
    required_scopes = {"POST": WRITE}

    @classmethod
    def prepare_before_transaction(cls, request, agent, pk: int) -> None:
        """Idempotency hook: with an Idempotency-Key, run the extractor (the LLM call) before the middleware's
        transaction opens, and leave the result on the request for ``post``. Anything off: do nothing."""
        try:
            body = json.loads(request.body or b"{}")
        except (ValueError, RecursionError):
            return
        serializer = EndInputSerializer(data=body)
        if not isinstance(body, dict) or not serializer.is_valid():
            return
        options = serializer.validated_data
        if not options["extract"] or options.get("intake") is not None:
            return
        if not all(agent.has_scope(s) for s in [WRITE, *end_scopes(options)]):
            return
        conversation = Conversation.objects.filter(pk=pk, agent=agent).first()
        if conversation is None or conversation.status == Conversation.Status.ENDED:
            return
        # The throttle comes before the LLM call, not after it: a request turned away with 429
        # must not have cost a model call (and a web worker's wait for it).
        if not AgentRateThrottle().admit_early(request, agent):
            return
        try:
            extracted = services.prepare_extraction(
                conversation=conversation, actor=Actor.for_agent(agent), summary=options.get("summary"),
                extract=True, extractor=options.get("extractor"),
            )
        except InputRejected:
            return
        request._crm_prepared_extraction = (conversation.pk, extracted)

    @extend_schema(
        summary="End a conversation (optionally with an intake, or extraction from the transcript)",
        description="Ends the conversation. With `intake` (the body of POST intake) it also writes the contact, note, "
        "tags, stage and task, linked to this conversation, in the same transaction: if the intake is refused (400) "
        "the conversation stays open and nothing is written. With `extract: true` and no intake, an extractor reads "
        "the visitor's messages; values that fail validation are dropped with a reason in `extraction.dropped`; "
        "with no name, phone or email found, no contact is written and the conversation stays unlinked. "
        "An intake or extract needs what POST intake needs for the parts it writes: contacts:write, plus "
        "notes:write for a note (or a summary, which becomes the note) and tasks:write for a task (403 "
        "missing_scope otherwise, nothing written). The `contact` block is null without contacts:read.",
        request=EndInputSerializer,
        responses={200: EndResponseSerializer, **ERRORS, **NOT_FOUND, **CONFLICT},
        examples=[
            OpenApiExample("With intake", request_only=True, value={
                "summary": "Wants a quote for 20 seats.",
                "intake": {"contact": {"name": "Marcus Reed", "phone": "(561) 555-0192"}, "tags": ["lead"],
                           "task": {"title": "Send quote", "due_at": "2026-05-02T10:00:00Z"}},
            }),
            OpenApiExample("Extract from the transcript", request_only=True, value={"extract": True, "extractor": "rules"}),
        ],
    )
    def post(self, request, pk: int):
        conversation = _own_conversation(request, pk)
        options = validated(EndInputSerializer(data=request.data))
        # The same scopes POST intake needs for what this end writes; checked before anything is written.
        require_scopes(request.auth, end_scopes(options))
        prepared = getattr(request._request, "_crm_prepared_extraction", None)
        extracted = prepared[1] if prepared and prepared[0] == conversation.pk else None
        try:
            result = services.end_conversation(
                conversation=conversation, actor=Actor.for_agent(request.auth), source=Source.CHAT,
                summary=options.get("summary"), intake=options.get("intake"), extract=options["extract"],
                extractor=options.get("extractor"), extracted=extracted,
            )
        except services.ConversationEnded as exc:
            raise ConversationClosed(str(exc)) from None
        intake = result.intake
        upsert = intake.upsert if intake else None
        payload = {
            "conversation": conversation_detail(pk),
            # The person's data is a contacts read: left out (null) without contacts:read, as identity is
            # left out without identity:read.
            "contact": upsert.contact if upsert and request.auth.has_scope(READ) else None,
            "created": upsert.created if upsert else None,
            "matched_by": "conversation" if result.reached_by_link else (upsert.matched_by if upsert else None),
            "possible_duplicates": upsert.possible_duplicates if upsert else [],
            "pending_changes": upsert.pending_changes if upsert else [],
            "note_id": intake.note.pk if intake and intake.note else None,
            "task_id": intake.task.pk if intake and intake.task else None,
            "completeness": intake.completeness if intake else None,
            "extraction": result.extraction,
        }
        return Response(EndResponseSerializer(payload).data)


urlpatterns = [
    path("conversations", ConversationListCreateView.as_view(), name="conversation-list"),
    path("conversations/<int:pk>", ConversationDetailView.as_view(), name="conversation-detail"),
    path("conversations/<int:pk>/messages", ConversationMessagesView.as_view(), name="conversation-messages"),
    path("conversations/<int:pk>/end", ConversationEndView.as_view(), name="conversation-end"),
]
