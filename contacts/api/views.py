"""Agent API views: validate the shape, call one service, serialize the result.

Source of writes: ``POST intake`` records a conversation's outcome, so it writes with
source Chat; every other agent write uses source API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from django.db.models import Q
from django.http import Http404
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts import services
from contacts.api import selectors
from contacts.api.filters import ContactApiFilter
from contacts.api.serializers import (
    AccessCheckInput,
    AccessCheckOutput,
    BatchUpsertInput,
    BatchUpsertOutput,
    ContactDetailOutput,
    ContactFieldsInput,
    ContactListItemOutput,
    ContactPatchInput,
    FileInput,
    FileOutput,
    IntakeInput,
    IntakeOutput,
    NoteInput,
    NoteOutput,
    PendingChangeOutput,
    StageInput,
    StageMoveOutput,
    TagRemovedOutput,
    TagsInput,
    TagsOutput,
    TaskInput,
    TaskOutput,
    UpsertOutput,
    contact_record,
    split_contact_input,
)
from contacts.bulk_upsert import upsert_contacts_batch
from contacts.models import Contact, Source, Tag
from contacts.normalize import InvalidEmail, InvalidPhone, email_normalize, phone_to_e164
from contacts.selectors import merged_into
from conversations.api import ConversationClosed
from conversations.services import ConversationEnded
from crm_hub.actors import Actor
from crm_hub.api.errors import (
    ContactMergedAway,
    allowed_at,
    capped_errors,
    flatten_validation_error,
    validated,
)
from crm_hub.api.pagination import CheckedCursorPagination
from crm_hub.api.permissions import intake_scopes, require_scopes
from crm_hub.api.schema import IDEMPOTENCY_KEY, READ_ERRORS, WRITE_ERRORS, error_responses
from crm_hub.api.throttling import AccessCheckThrottle, AgentRateThrottle
from crm_hub.errors import FieldError, InputRejected

MAX_ID = 2**63 - 1


class AgentView(APIView):
    def actor(self) -> Actor:
        return Actor.for_agent(self.request.auth)

    def identity_visible(self) -> bool:
        return self.request.auth.has_scope("identity:read")

    def get_serializer_context(self) -> dict:
        return {"request": self.request, "identity_visible": self.identity_visible()}

    def contact(self, pk: int) -> Contact:
        if pk > MAX_ID:
            raise Http404
        found = Contact.objects.select_related("owner").filter(pk=pk).first()
        if found is None:
            into = merged_into(pk)
            raise ContactMergedAway(pk, into) if into is not None else Http404
        return found

    def clean_naming_every_problem(self, input_class, body, validate):
        """``input_class.clean(body)``; when it refuses only unknown keys, the rest of the body is checked too
        (``validate`` raises InputRejected for the values), so one answer names every problem.

        Refused at the first unknown key, a body with a typo'd key and a bad phone took two round trips.
        """
        try:
            return input_class.clean(body)
        except InputRejected as exc:
            if not isinstance(body, Mapping) or any(e.code != "unknown_field" for e in exc.errors):
                raise
            try:
                validate(input_class.clean(_without_paths(body, [e.field for e in exc.errors])))
            except InputRejected as more:
                raise InputRejected([*exc.errors, *more.errors]) from None
            raise

    def tags_if_readable(self, contact: Contact) -> list[str] | None:
        """All the contact's tags for a token that may read contacts; null for a write-only one."""
        return _tag_names(contact) if self.request.auth.has_scope("contacts:read") else None

    def upsert_body(self, result: services.UpsertResult) -> dict:
        """UpsertOutput's shape (the schema documents it through that serializer)."""
        # The record is a read: a token that may only write gets the id, not the person (else an
        # empty PATCH, or an upsert of a known email, would read any contact without contacts:read).
        readable = self.request.auth.has_scope("contacts:read")
        return {
            "contact": contact_record(result.contact, identity_visible=self.identity_visible()) if readable else None,
            "contact_id": result.contact.pk,
            "created": result.created,
            "matched_by": result.matched_by,
            "possible_duplicates": result.possible_duplicates,
            "pending_changes": PendingChangeOutput(
                result.pending_changes, many=True, context=self.get_serializer_context()
            ).data if result.pending_changes else [],
        }


UPSERT_REQUEST_EXAMPLE = OpenApiExample(
    "Upsert by phone",
    value={
        "name": "Marcus Reed", "phone": "(561) 555-0192", "email": "marcus@example.com",
        "custom": {"budget": 5000}, "tags": ["Lead"],
    },
    request_only=True,
)
CONTACT_EXAMPLE = {
    "id": 42, "name": "Marcus Reed", "phone": "(561) 555-0192", "phone_e164": "+15615550192",
    "email": "marcus@example.com", "email_normalized": "marcus@example.com", "company": "", "position": "",
    "birthday": None, "zip_code": "", "country": "", "state": "", "city": "", "district": "", "street": "",
    "number": "", "complement": "", "source": "api", "owner": None, "custom": {"budget": "5000"},
    "created_at": "2026-05-01T14:30:00Z", "updated_at": "2026-05-01T14:30:00Z", "last_activity_at": "2026-05-01T14:30:00Z",
}
UPSERT_RESPONSE_EXAMPLE = {
    "contact": CONTACT_EXAMPLE, "contact_id": CONTACT_EXAMPLE["id"], "created": False, "matched_by": "phone",
    "possible_duplicates": [],
    "pending_changes": [
        {"id": 7, "field": "email", "old_value": "marcus@old.example", "new_value": "marcus@example.com",
         "status": "pending", "created_at": "2026-05-01T14:30:00Z"}
    ],
}


def _without_paths(body: Mapping, paths: list[str]) -> dict:
    """A copy of ``body`` without the keys at the dotted ``paths`` ("contact.fax", "bogus")."""
    copy = json.loads(json.dumps(body))
    for path in paths:
        *parents, last = path.split(".")
        node = copy
        for part in parents:
            node = node[int(part)] if isinstance(node, list) and part.isdigit() else node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(last, None)
    return copy


class ContactUpsertView(AgentView):
    required_scopes = {"POST": "contacts:write"}

    @extend_schema(
        operation_id="contacts_upsert",
        summary="Create or update a contact by phone (first) or email",
        description=(
            "Matches by phone (any format), then email. Empty fields are filled; custom fields need 'Allow for AI'; "
            "tags are added, never replaced. Overwriting a filled phone, email, identity or owner becomes a pending "
            "change request for staff (listed in pending_changes). New contacts get source API. 201 when created, "
            "200 when updated."
        ),
        parameters=[IDEMPOTENCY_KEY],
        request=ContactFieldsInput,
        responses={
            200: OpenApiResponse(UpsertOutput, description="Updated an existing contact."),
            201: OpenApiResponse(UpsertOutput, description="Created a new contact."),
            **error_responses(*WRITE_ERRORS),
        },
        examples=[
            UPSERT_REQUEST_EXAMPLE,
            OpenApiExample("Matched by phone", value=UPSERT_RESPONSE_EXAMPLE, response_only=True, status_codes=["200"]),
        ],
    )
    def post(self, request):
        fields = self.clean_naming_every_problem(ContactFieldsInput, request.data, self.check_values)
        data, custom, tags = split_contact_input(fields)
        result = services.upsert_contact(data=data, custom=custom, tags=tags, actor=self.actor(), source=Source.API)
        return Response(self.upsert_body(result), status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)

    def check_values(self, fields: dict) -> None:
        data, custom, tags = split_contact_input(fields)
        services.clean_contact_input(data, custom=custom, tags=tags, actor=self.actor())


class ContactBatchUpsertView(AgentView):
    required_scopes = {"POST": "contacts:write"}

    @extend_schema(
        operation_id="contacts_batch_upsert",
        summary="Upsert up to 100 contacts in one call",
        description=(
            "Each item is shaped like POST contacts/upsert and answered in order with its own status (201, 200 or "
            "400) and errors (paths start with contacts.<index>). A bad item does not stop the good ones. New contacts "
            "get source API."
        ),
        parameters=[IDEMPOTENCY_KEY],
        request=BatchUpsertInput,
        responses={200: BatchUpsertOutput, **error_responses(*WRITE_ERRORS)},
        examples=[
            OpenApiExample(
                "Two contacts, one bad",
                value={"contacts": [{"name": "Ana", "phone": "+55 11 91234-5678"}, {"name": "Bo", "email": "not-an-email"}]},
                request_only=True,
            ),
            OpenApiExample(
                "Results in order",
                value={"results": [
                    {"status": 201, "contact": CONTACT_EXAMPLE, "created": True, "matched_by": None,
                     "possible_duplicates": [], "pending_changes": [], "errors": []},
                    {"status": 400, "contact": None, "created": False, "matched_by": None, "possible_duplicates": [],
                     "pending_changes": [], "errors": [{"field": "contacts.1.email", "code": "invalid_email",
                                                        "message": "'not-an-email' is not a valid email address."}]},
                ]},
                response_only=True, status_codes=["200"],
            ),
        ],
    )
    def post(self, request):
        batch = BatchUpsertInput.clean(request.data)
        items = []
        # One serializer for every item: building its fields once matters at 100 items per call.
        item = ContactFieldsInput()
        for index, raw in enumerate(batch["contacts"]):
            path = f"contacts.{index}"
            try:
                plain = ContactFieldsInput.plain(raw)
                items.append(split_contact_input(plain if plain is not None else item.run_validation(raw)))
            except ValidationError as exc:
                items.append(InputRejected(
                    FieldError(e["field"], e["code"], e["message"], allowed_at(item, e["field"].removeprefix(path + "."), e["code"]))
                    for e in flatten_validation_error(exc.detail, exc.get_codes(), path)
                ))
            except InputRejected as exc:
                items.append(exc)
        outcomes = upsert_contacts_batch(items=items, actor=self.actor(), source=Source.API)
        results = []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, InputRejected):
                errors = outcome.as_list()
                for error in errors:
                    if not error["field"] or not error["field"].startswith(f"contacts.{index}"):
                        error["field"] = f"contacts.{index}" + (f".{error['field']}" if error["field"] else "")
                errors = capped_errors(errors, BATCH_ITEM_MAX_ERRORS)
                results.append({"status": 400, "contact": None, "created": False, "matched_by": None,
                                "possible_duplicates": [], "pending_changes": [], "errors": errors})
            else:
                body = self.upsert_body(outcome)
                body.update(status=201 if outcome.created else 200, errors=[])
                results.append(body)
        return Response({"results": results}, status=status.HTTP_200_OK)


# A batch answers up to 100 items: ten errors each keep a small request from answering megabytes.
BATCH_ITEM_MAX_ERRORS = 10


class ContactCursorPagination(CheckedCursorPagination):
    ordering = ("-updated_at", "-id")
    ordering_choices = ("-updated_at", "updated_at")
    sync_filter = "updated_since"
    example_path = "contacts"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class ContactListView(AgentView, generics.ListAPIView):
    required_scopes = {"GET": "contacts:read"}
    serializer_class = ContactListItemOutput
    filterset_class = ContactApiFilter
    pagination_class = ContactCursorPagination

    def get_queryset(self):
        return selectors.contacts_for_api()

    @extend_schema(
        operation_id="contacts_list",
        summary="Look up and list contacts",
        description=(
            "Filter by phone (any format), email, q, tag, stage, owner, source or updated_since. Cursor-paginated "
            "(newest change first): follow 'next' until it is null."
        ),
        responses={200: ContactListItemOutput(many=True), **error_responses(*READ_ERRORS)},
        examples=[OpenApiExample(
            "One page",
            # One row: drf-spectacular puts it in a page with the paginator's own example links.
            value={**CONTACT_EXAMPLE, "tags": ["Lead"]},
            response_only=True, status_codes=["200"],
        )],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ContactDetailView(AgentView):
    required_scopes = {"GET": "contacts:read", "PATCH": "contacts:write"}

    @extend_schema(
        operation_id="contacts_retrieve",
        summary="A contact with the context an agent needs before it answers",
        description=(
            "The record plus tags, stage per pipeline, owner, custom fields (with band labels), the last notes, open "
            "tasks and recent conversations. identity is included only for tokens with identity:read."
        ),
        responses={200: ContactDetailOutput, **error_responses(*READ_ERRORS)},
        examples=[OpenApiExample(
            "With context",
            value={
                **CONTACT_EXAMPLE, "tags": ["Lead"],
                "stages": [{"pipeline": "Sales", "pipeline_id": 1, "stage": "Qualified", "stage_id": 2,
                            "entered_at": "2026-05-01T14:30:00Z"}],
                "custom_fields": [{"key": "intent", "label": "Intent score", "type": "decimal", "value": 0.55, "band": "Warm"}],
                "last_notes": [{"id": 91, "body": "<p>Wants a quote.</p>", "source": "chat", "conversation": 12,
                                "created_at": "2026-05-01T14:30:00Z"}],
                "open_tasks": [{"id": 33, "title": "Send the quote", "description": "", "due_at": "2026-05-02T10:00:00Z",
                                "assignee": "olivia", "status": "open", "priority": "normal", "created_at": "2026-05-01T14:30:00Z"}],
                "open_task_count": 1,
                "recent_conversations": [{"id": 12, "external_id": "chat-8812", "channel": "whatsapp", "status": "ended",
                                          "started_at": "2026-05-01T14:10:00Z", "summary": "Asked for a quote."}],
            },
            response_only=True, status_codes=["200"],
        )],
    )
    def get(self, request, pk: int):
        contact = self.contact(pk)
        context = selectors.contact_detail(contact)
        data = contact_record(contact, identity_visible=self.identity_visible())
        data.update(
            tags=context["tags"],
            stages=context["stages"],
            custom_fields=context["custom_fields"],
            last_notes=NoteOutput(context["last_notes"], many=True).data,
            open_tasks=TaskOutput(context["open_tasks"], many=True).data,
            open_task_count=context["open_task_count"],
            recent_conversations=[
                {"id": c.pk, "external_id": c.external_id, "channel": c.channel, "status": c.status,
                 "started_at": c.started_at.isoformat().replace("+00:00", "Z"), "summary": c.summary}
                for c in context["recent_conversations"]
            ],
        )
        return Response(data)

    @extend_schema(
        operation_id="contacts_partial_update",
        summary="Edit a contact",
        description=(
            "Sets the fields sent; an empty value clears a field. Filling an empty field applies at once; overwriting "
            "or clearing a filled phone, email, identity or owner becomes a pending change request for staff "
            "(pending_changes). A phone or email another contact holds is refused (already_exists). Source API."
        ),
        parameters=[IDEMPOTENCY_KEY],
        request=ContactPatchInput,
        responses={200: UpsertOutput, **error_responses(*WRITE_ERRORS)},
        examples=[OpenApiExample("Change company", value={"company": "Reed & Co"}, request_only=True)],
    )
    def patch(self, request, pk: int):
        contact = self.contact(pk)
        data, custom, _tags = split_contact_input(ContactPatchInput.clean(request.data))
        result = services.update_contact(contact=contact, data=data, custom=custom, actor=self.actor(), source=Source.API)
        return Response(self.upsert_body(result))


def _conversation(agent, conversation_id, contact):
    """The caller's own conversation, unlinked or linked to ``contact``: the note's provenance must be true.

    Any other id (someone else's conversation, one about another person, none at all) gets
    the same answer, so ids cannot be probed.
    """
    from conversations.models import Conversation

    if conversation_id is None:
        return None
    found = (
        Conversation.objects.filter(pk=conversation_id, agent=agent)
        .filter(Q(contact__isnull=True) | Q(contact=contact)).first()
    )
    if found is None:
        raise InputRejected([FieldError(
            "conversation_id", "invalid_value",
            f"No conversation {conversation_id} of yours that is about this contact (or about nobody yet).",
        )])
    return found


class ContactNotesView(AgentView):
    required_scopes = {"POST": "notes:write"}

    @extend_schema(
        operation_id="contacts_notes_create",
        summary="Add a note to a contact",
        description="Stores a sanitised note (source API), optionally tied to a conversation.",
        parameters=[IDEMPOTENCY_KEY],
        request=NoteInput,
        responses={201: NoteOutput, **error_responses(*WRITE_ERRORS)},
        examples=[OpenApiExample("Summary", value={"body": "Asked for a quote for 20 seats.", "conversation_id": 3}, request_only=True)],
    )
    def post(self, request, pk: int):
        contact = self.contact(pk)
        data = NoteInput.clean(request.data)
        conversation = _conversation(request.auth, data.get("conversation_id"), contact)
        note = services.add_note(contact=contact, body=data["body"], actor=self.actor(), source=Source.API, conversation=conversation)
        return Response(NoteOutput(note).data, status=status.HTTP_201_CREATED)


class ContactTasksView(AgentView):
    required_scopes = {"POST": "tasks:write"}

    @extend_schema(
        operation_id="contacts_tasks_create",
        summary="Create a follow-up task",
        description="The assignee defaults to the contact's owner. Source API.",
        parameters=[IDEMPOTENCY_KEY],
        request=TaskInput,
        responses={201: TaskOutput, **error_responses(*WRITE_ERRORS)},
        examples=[OpenApiExample("Call back", value={"title": "Send the quote", "due_at": "2026-05-02T10:00:00Z", "priority": "high"}, request_only=True)],
    )
    def post(self, request, pk: int):
        contact = self.contact(pk)
        try:
            data = TaskInput.clean(request.data)
        except InputRejected as exc:
            # The shape check names what it could not read; the service's checks name the rest
            # (an unknown assignee beside a missing due_at), so one answer lists every bad field.
            named = {e.field for e in exc.errors}
            more = services.clean_task_fields(request.data)[1] if isinstance(request.data, dict) else []
            raise InputRejected([*exc.errors, *(e for e in more if e.field not in named)]) from None
        task = services.create_task(
            contact=contact, title=data["title"], due_at=data["due_at"], assignee=data.get("assignee"),
            priority=data.get("priority") or "normal", description=data.get("description", ""),
            actor=self.actor(), source=Source.API,
        )
        return Response(TaskOutput(task).data, status=status.HTTP_201_CREATED)


class ContactFilesView(AgentView):
    required_scopes = {"POST": "files:write"}
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="contacts_files_create",
        summary="Attach a file (multipart/form-data, field 'file')",
        description="Size and type limits come from settings (CRM_MAX_UPLOAD_BYTES, CRM_ALLOWED_UPLOAD_TYPES). Source API.",
        parameters=[IDEMPOTENCY_KEY],
        request={"multipart/form-data": FileInput},
        responses={201: FileOutput, **error_responses(*WRITE_ERRORS)},
        examples=[OpenApiExample(
            "Stored", value={"id": 5, "name": "quote.pdf", "size": 48211, "content_type": "application/pdf",
                             "created_at": "2026-05-01T14:30:00Z"},
            response_only=True, status_codes=["201"],
        )],
    )
    def post(self, request, pk: int):
        contact = self.contact(pk)
        upload = validated(FileInput(data=request.data))["file"]
        stored = services.add_file(contact=contact, upload=upload, actor=self.actor(), source=Source.API)
        return Response(FileOutput(stored).data, status=status.HTTP_201_CREATED)


def _tag_names(contact: Contact) -> list[str]:
    return sorted(Tag.objects.filter(contacttag__contact=contact).values_list("name", flat=True))


class ContactTagsView(AgentView):
    required_scopes = {"POST": "contacts:write"}

    @extend_schema(
        operation_id="contacts_tags_add",
        summary="Add tags to a contact",
        description="Only existing tags (case-insensitive); unknown names are refused with the allowed list. Source API.",
        parameters=[IDEMPOTENCY_KEY],
        request=TagsInput,
        responses={200: TagsOutput, **error_responses(*WRITE_ERRORS)},
        examples=[OpenApiExample("Add", value={"tags": ["Lead", "VIP"]}, request_only=True)],
    )
    def post(self, request, pk: int):
        contact = self.contact(pk)
        added = services.add_tags(contact=contact, tags=TagsInput.clean(request.data)["tags"], actor=self.actor(), source=Source.API)
        return Response({"tags": self.tags_if_readable(contact), "added": [t.name for t in added]})


class ContactTagDeleteView(AgentView):
    required_scopes = {"DELETE": "contacts:write"}

    @extend_schema(
        operation_id="contacts_tags_remove",
        summary="Remove a tag from a contact",
        description="Removing a tag the contact does not carry answers removed=false. Source API.",
        responses={200: TagRemovedOutput, **error_responses(*READ_ERRORS)},
        examples=[OpenApiExample("Removed", value={"tags": ["Lead"], "removed": True}, response_only=True, status_codes=["200"])],
    )
    def delete(self, request, pk: int, tag: str):
        contact = self.contact(pk)
        removed = services.remove_tag(contact=contact, tag=tag, actor=self.actor(), source=Source.API)
        return Response({"tags": self.tags_if_readable(contact), "removed": removed})


class ContactStageView(AgentView):
    required_scopes = {"PUT": "contacts:write"}

    @extend_schema(
        operation_id="contacts_stage_set",
        summary="Put a contact in a pipeline stage",
        description="Pipeline and stage by id or name; unknown ones are refused with the allowed list. Source API.",
        parameters=[IDEMPOTENCY_KEY],
        request=StageInput,
        responses={200: StageMoveOutput, **error_responses(*WRITE_ERRORS)},
        examples=[OpenApiExample("Move", value={"pipeline": "Sales", "stage": "Qualified"}, request_only=True)],
    )
    def put(self, request, pk: int):
        contact = self.contact(pk)
        data = StageInput.clean(request.data)
        moved = services.move_to_stage(
            contact=contact, pipeline=data.get("pipeline"), stage=data.get("stage"), actor=self.actor(), source=Source.API
        )
        membership = moved.membership
        return Response({
            "pipeline": membership.pipeline.name, "pipeline_id": membership.pipeline_id,
            "stage": membership.stage.name, "stage_id": membership.stage_id,
            "entered_at": membership.entered_at, "changed": moved.changed,
        })


INTAKE_EXAMPLE = {
    "contact": {"name": "Marcus Reed", "phone": "(561) 555-0192", "email": "marcus@example.com", "custom": {"budget": 5000}},
    "note": "Wants a quote for 20 seats; decision next week.",
    "tags": ["Lead"],
    "pipeline": "Sales",
    "stage": "Qualified",
    "task": {"title": "Send the quote", "due_at": "2026-05-02T10:00:00Z"},
    "conversation": {"external_id": "chat-8812", "channel": "whatsapp",
                     "messages": [{"role": "visitor", "content": "Hi, I need a quote"}]},
}


class IntakeView(AgentView):
    required_scopes = {"POST": "contacts:write"}

    @extend_schema(
        operation_id="intake",
        summary="Write a conversation's whole outcome in one transaction",
        description=(
            "Contact (as in upsert), note (the summary), tags, pipeline + stage, task and optionally the conversation "
            "with its transcript: validated together, written all or nothing. New contacts get source Chat. Needs "
            "contacts:write, plus notes:write for a note, tasks:write for a task and conversations:write for a "
            "conversation. completeness says which parts of a clean record the contact now has."
        ),
        parameters=[IDEMPOTENCY_KEY],
        request=IntakeInput,
        responses={200: IntakeOutput, 201: IntakeOutput, **error_responses(*WRITE_ERRORS)},
        examples=[
            OpenApiExample("After a chat", value=INTAKE_EXAMPLE, request_only=True),
            OpenApiExample(
                "Clean record",
                value={**UPSERT_RESPONSE_EXAMPLE, "contact": {**CONTACT_EXAMPLE, "source": "chat"}, "pending_changes": [],
                       "note_id": 91, "task_id": 33, "conversation_id": 12,
                       "completeness": {"fields": True, "note": True, "tags": True, "stage": True, "task": True, "clean": True}},
                response_only=True, status_codes=["200"],
            ),
        ],
    )
    def post(self, request):
        data = self.clean_naming_every_problem(IntakeInput, request.data, lambda known: self.record(known, validate_only=True))
        require_scopes(request.auth, intake_scopes(data))  # the same rule as conversations' end
        try:
            result = self.record(data)
        except ConversationEnded as exc:
            raise ConversationClosed(str(exc), field="conversation.external_id") from None
        body = self.upsert_body(result.upsert)
        body.update(
            note_id=result.note.pk if result.note else None,
            task_id=result.task.pk if result.task else None,
            conversation_id=result.conversation.pk if result.conversation is not None else None,
            # Which parts the contact has (tags, a stage...) is a read of the record.
            completeness=result.completeness if self.request.auth.has_scope("contacts:read") else None,
        )
        return Response(body, status=status.HTTP_201_CREATED if result.upsert.created else status.HTTP_200_OK)

    def record(self, data: dict, *, validate_only: bool = False):
        return services.record_intake(
            contact=dict(data["contact"]), actor=self.actor(), source=Source.CHAT, tags=data.get("tags"),
            note=data.get("note"), pipeline=data.get("pipeline"), stage=data.get("stage"),
            task=dict(data["task"]) if data.get("task") else None, custom=data.get("custom") or None,
            conversation=dict(data["conversation"]) if data.get("conversation") else None, validate_only=validate_only,
        )


class AccessCheckView(AgentView):
    # access:check alone lets a public gate bot ask this and nothing else: with contacts:read it could
    # walk GET contacts at 600 a minute, which this endpoint's own 30-a-minute throttle was meant to stop.
    required_scopes = {"POST": "access:check|contacts:read"}
    throttle_classes = [AgentRateThrottle, AccessCheckThrottle]

    @extend_schema(
        operation_id="access_check",
        summary="May this person talk to the agent?",
        description=(
            "For gated agents: is there a contact with this phone (any format) or email, carrying the tag if one is "
            "named? One indexed query; answers only allowed, contact_id (when allowed) and reason. Throttled per "
            "token on its own tight budget (CRM_ACCESS_CHECK_RATE) so it cannot enumerate contacts."
        ),
        parameters=[IDEMPOTENCY_KEY],
        request=AccessCheckInput,
        responses={200: AccessCheckOutput, **error_responses(*WRITE_ERRORS)},
        examples=[
            OpenApiExample("Check a caller", value={"phone": "+1 561 555 0192", "tag": "VIP"}, request_only=True),
            OpenApiExample("Allowed", value={"allowed": True, "contact_id": 42, "reason": "contact_found"}, response_only=True, status_codes=["200"]),
        ],
    )
    def post(self, request):
        data = AccessCheckInput.clean(request.data)
        phone, email, tag = (data.get(k) or "" for k in ("phone", "email", "tag"))
        errors, e164, normalized = [], "", ""
        if phone:
            try:
                e164 = phone_to_e164(phone)
            except InvalidPhone:
                errors.append(services.invalid_phone_error(phone))
        if email:
            try:
                normalized = email_normalize(email)
            except InvalidEmail:
                errors.append(services.invalid_email_error(email))
        if not phone and not email:
            errors.append(FieldError("phone", "required", "Send a phone or an email."))
        if errors:
            raise InputRejected(errors)
        contact_id, has_tag = selectors.access_match(phone_e164=e164, email_normalized=normalized, tag=tag.strip())
        if tag.strip() and not (contact_id and has_tag):
            # A gate naming a tag that does not exist would turn everyone away without a word: refuse it
            # (one more query, on the refusing path only).
            services.resolve_tags([tag], field_name="tag")
        if contact_id is None:
            return Response({"allowed": False, "contact_id": None, "reason": "no_contact"})
        if not has_tag:
            return Response({"allowed": False, "contact_id": None, "reason": "tag_missing"})
        return Response({"allowed": True, "contact_id": contact_id, "reason": "contact_found"})
