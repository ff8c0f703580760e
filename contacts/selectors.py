"""Reads shared by the web UI, the API, admin and exports."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import (
    CharField,
    Count,
    Exists,
    F,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Value,
    Window,
)
from django.db.models.functions import Lower, RowNumber
from django.db.models.signals import post_delete, post_save

from contacts.models import (
    ChangeRequest,
    Contact,
    ContactFile,
    ContactStage,
    ContactTag,
    CustomField,
    HistoryEntry,
    MergedContact,
    Note,
    Pipeline,
    PossibleDuplicate,
    Stage,
    Tag,
    Task,
)
from contacts.normalize import email_normalize_or_none, phone_to_e164_or_none

# More words than this add SQL but hardly narrow the result; the rest of a long query is ignored.
SEARCH_MAX_WORDS = 6


def typed_phone(text: str) -> str | None:
    """The E.164 of a phone typed into a search box, an international one even without its "+" (442079460958)."""
    e164 = phone_to_e164_or_none(text)
    if e164 is None and sum(ch.isdigit() for ch in text) >= 11 and not text.lstrip().startswith("+"):
        e164 = phone_to_e164_or_none("+" + text.strip())
    return e164


def search_contacts(queryset: QuerySet[Contact], text: str) -> QuerySet[Contact]:
    """Filter by one search box: an exact phone (any format) or email, else every word in name/company/email.

    Each word must be in the name or the company, or start the email, in any order: "kowalski diego"
    finds Diego Kowalski. Each word is an ILIKE that the trigram indexes on upper(name) and
    upper(company) (and the email prefix index) serve on PostgreSQL: the planner scans them for
    the most selective word and checks the other words on the rows found.
    """
    words = (text or "").split()
    if not words:
        return queryset
    # Runs of spaces (as pasted) count as one; the phone and email checks read the tidy text.
    text = " ".join(words)
    digits = sum(ch.isdigit() for ch in text)
    if digits >= 6:
        e164 = typed_phone(text)
        if e164:
            return queryset.filter(phone_e164=e164)
    if "@" in text:
        email = email_normalize_or_none(text)
        if email:
            return queryset.filter(email_normalized=email)
    for word in dict.fromkeys(words[:SEARCH_MAX_WORDS]):
        # O'Reilly and O’Reilly are one name however it was typed or stored.
        spellings = {word, word.replace("’", "'"), word.replace("'", "’")}
        match = Q()
        for spelling in spellings:
            match |= Q(name__icontains=spelling) | Q(company__icontains=spelling)
        queryset = queryset.filter(match | Q(email_normalized__startswith=word.lower()))
    return queryset


def custom_field_definitions() -> list[CustomField]:
    return list(CustomField.objects.order_by("position", "id"))


# --- Contact list vocabulary: cached choices of the filter form (perf) ---------------------

LIST_VOCABULARY_CACHE_KEY = "contacts:list-vocabulary:v1"
# Saves and deletes in this process (and in every process sharing a Redis cache) drop the entry
# at once; the TTL bounds how long another process's local-memory cache can show old choices.
LIST_VOCABULARY_TTL = 60


@dataclass(frozen=True)
class ListVocabulary:
    """What the contact list offers as filter choices and columns, identical for every request."""

    tags: list[Tag]
    stages: list[Stage]  # with .pipeline loaded, in board order
    custom_fields: list[CustomField]
    staff_users: list[Any]


def list_vocabulary() -> ListVocabulary:
    """Return tags, stages, custom field definitions and staff users, from the cache when it has them."""
    vocabulary = cache.get(LIST_VOCABULARY_CACHE_KEY)
    if vocabulary is None:
        vocabulary = ListVocabulary(
            tags=list(Tag.objects.order_by(Lower("name"))),
            stages=list(
                Stage.objects.select_related("pipeline").order_by("pipeline__position", "pipeline_id", "position")
            ),
            custom_fields=custom_field_definitions(),
            staff_users=list(get_user_model().objects.filter(is_active=True, is_staff=True).order_by("username")),
        )
        cache.set(LIST_VOCABULARY_CACHE_KEY, vocabulary, LIST_VOCABULARY_TTL)
    return vocabulary


def forget_list_vocabulary(update_fields=None, **_signal_kwargs) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # every login saves the user; owner choices do not change with it
    # Dropped now and again after commit: a request reading between the two could otherwise
    # cache the rows as they were before this transaction.
    cache.delete(LIST_VOCABULARY_CACHE_KEY)
    transaction.on_commit(lambda: cache.delete(LIST_VOCABULARY_CACHE_KEY))


for _model in (Tag, Stage, Pipeline, CustomField, settings.AUTH_USER_MODEL):
    for _name, _signal in (("save", post_save), ("delete", post_delete)):
        _signal.connect(forget_list_vocabulary, sender=_model, dispatch_uid=f"list-vocabulary-{_name}-{_model}")


def field_provenance(contact: Contact, field_name: str) -> HistoryEntry | None:
    """Return the history entry that last set ``field_name`` (e.g. "email", "custom.budget")."""
    for entry in contact.history.filter(changes__has_key=field_name).order_by("-created_at", "-id")[:1]:
        return entry
    return None


# --- Web UI: who sees what (issue 5) --------------------------------------------------

ADMINS_GROUP = "Admins"


def user_is_crm_admin(user) -> bool:
    """Return whether ``user`` administers the CRM: a superuser or a member of the "Admins" group."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    cached = getattr(user, "_crm_is_admin", None)
    if cached is None:
        cached = user.groups.filter(name=ADMINS_GROUP).exists()
        user._crm_is_admin = cached
    return cached


def sees_only_own_contacts(user) -> bool:
    """Whether ``user`` is a sales user limited to their own contacts (CRM_SALES_SEE_OWN_ONLY)."""
    return settings.CRM_SALES_SEE_OWN_ONLY and not user_is_crm_admin(user)


def visible_contacts(user) -> QuerySet[Contact]:
    """Return the contacts ``user`` may see: all, or only their own for sales users when CRM_SALES_SEE_OWN_ONLY is on.

    Every web page (list, contact page, export, board, tasks) starts from this queryset, so a
    contact hidden here answers 404 everywhere.
    """
    queryset = Contact.objects.all()
    if user is None or not user.is_authenticated or not user.is_staff:
        return queryset.none()
    if sees_only_own_contacts(user):
        queryset = queryset.filter(owner=user)
    return queryset


def can_see_contact(user, contact: Contact) -> bool:
    """What ``visible_contacts`` decides, for a contact already loaded (no query)."""
    if user is None or not user.is_authenticated or not user.is_staff:
        return False
    return not sees_only_own_contacts(user) or contact.owner_id == user.pk


def open_duplicates_of(contact: Contact, user) -> list[tuple[PossibleDuplicate, Contact]]:
    """The open possible-duplicate flags naming ``contact``, each with the other contact, if ``user`` may see it."""
    flags = list(
        PossibleDuplicate.objects.filter(Q(contact=contact) | Q(other=contact), status=PossibleDuplicate.Status.OPEN)
        .order_by("-created_at", "-id")
    )
    ids = {f.other_id if f.contact_id == contact.pk else f.contact_id for f in flags}
    others = visible_contacts(user).in_bulk(ids)
    pairs = []
    for flag in flags:
        other = others.get(flag.other_id if flag.contact_id == contact.pk else flag.contact_id)
        if other is not None:
            pairs.append((flag, other))
    return pairs


def find_visible_contact(user, text: str) -> Contact | None:
    """The contact ``user`` may see that ``text`` names: an id (``42`` or ``#42``), an email or a phone."""
    text = (text or "").strip()
    visible = visible_contacts(user)
    if text.lstrip("#").isdigit() and len(text) < 19:
        found = visible.filter(pk=int(text.lstrip("#"))).first()
        if found is not None:
            return found
    if "@" in text:
        email = email_normalize_or_none(text)
        return visible.filter(email_normalized=email).first() if email else None
    e164 = typed_phone(text) if sum(ch.isdigit() for ch in text) >= 6 else None
    return visible.filter(phone_e164=e164).first() if e164 else None


def merged_into(contact_id: int) -> int | None:
    """The id of the contact that ``contact_id`` was merged into, if it was."""
    return MergedContact.objects.filter(merged_id=contact_id).values_list("contact_id", flat=True).first()


def contact_keys(contact_id: int | None) -> dict | None:
    """A contact's name and dedup keys (phone_e164, phone_extension, email_normalized), or None."""
    if not contact_id:
        return None
    return Contact.objects.filter(pk=contact_id).values("name", "phone_e164", "phone_extension", "email_normalized").first()


def missing_contact_message(contact_id: int) -> str:
    """Why there is no contact ``contact_id``: merged into another (named, so a caller can follow it) or none."""
    into = merged_into(contact_id)
    if into is not None:
        return f"Contact #{contact_id} was merged into contact #{into}; use #{into}."
    return f"There is no contact #{contact_id}."


def merge_moves(other: Contact, keep: Contact) -> dict[str, int]:
    """What merging ``other`` into ``keep`` moves over, counted as the merge reports it."""
    from conversations.models import Conversation
    from forms_app.models import Submission

    counts = {
        "tags": ContactTag.objects.filter(contact=other).exclude(tag_id__in=ContactTag.objects.filter(contact=keep).values("tag_id")).count(),
        "pipeline stages": ContactStage.objects.filter(contact=other).exclude(
            pipeline_id__in=ContactStage.objects.filter(contact=keep).values("pipeline_id")).count(),
        "notes": Note.objects.filter(contact=other).count(),
        "tasks": Task.objects.filter(contact=other).count(),
        "files": ContactFile.objects.filter(contact=other).count(),
        "change requests": ChangeRequest.objects.filter(contact=other).count(),
        "conversations": Conversation.objects.filter(contact=other).count(),
        "form submissions": Submission.objects.filter(contact=other).count(),
    }
    return {name: count for name, count in counts.items() if count}


# --- Contact list: keyset pagination and cheap totals (issue 5) ---------------------------

LIST_COUNT_CAP = 10_000


@dataclass
class KeysetPage:
    rows: list
    next_cursor: str | None
    prev_cursor: str | None


def encode_cursor(value: Any, pk: int) -> str:
    if isinstance(value, dt.datetime):
        packed: list[Any] = ["dt", value.isoformat(), pk]
    elif isinstance(value, dt.date):
        packed = ["d", value.isoformat(), pk]
    else:
        packed = ["v", value, pk]
    return base64.urlsafe_b64encode(json.dumps(packed, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[Any, int] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        kind, value, pk = json.loads(raw)
        if kind == "dt":
            value = dt.datetime.fromisoformat(value)
            value.astimezone(dt.UTC)  # near year 1 or 9999 an offset overflows, as the database's UTC would
        elif kind == "d":
            value = dt.date.fromisoformat(value)
        elif kind != "v" or not isinstance(value, (str, int, float, type(None))):
            return None
        if not isinstance(pk, int) or (isinstance(value, str) and "\x00" in value):  # PostgreSQL refuses NUL
            return None
        return value, pk
    except (ValueError, TypeError, OverflowError, binascii.Error, json.JSONDecodeError):
        return None


def keyset_page(
    queryset: QuerySet,
    *,
    sort_expr: Any,
    descending: bool,
    nullable: bool,
    after: str = "",
    before: str = "",
    size: int = 50,
) -> KeysetPage:
    """Return one page ordered by ``sort_expr`` then pk, starting after/before a cursor.

    Keyset pagination: a deep page costs the same as the first (no OFFSET). Nulls sort last
    in both directions. For non-null keys the bound is also given as a plain range
    (``key <= v``) so PostgreSQL turns it into an index condition instead of a filter.
    A cursor that does not fit the sort (edited by hand, or from another sort) gives the first page.
    """
    options = dict(sort_expr=sort_expr, descending=descending, nullable=nullable, size=size)
    try:
        return _keyset_page(queryset, after=after, before=before, **options)
    except (ValidationError, ValueError, TypeError):
        if not (after or before):
            raise
        return _keyset_page(queryset, after="", before="", **options)


def _keyset_page(
    queryset: QuerySet, *, sort_expr: Any, descending: bool, nullable: bool, after: str, before: str, size: int
) -> KeysetPage:
    queryset = queryset.annotate(_sort=sort_expr)
    cmp, rcmp = ("lt", "gt") if descending else ("gt", "lt")
    decoded_after = _decode_cursor(after) if after else None
    decoded_before = _decode_cursor(before) if before and not decoded_after else None
    key = F("_sort")
    backwards = decoded_before is not None
    if backwards:
        value, pk = decoded_before
        if value is None:
            condition = Q(_sort__isnull=False) | Q(_sort__isnull=True, **{f"pk__{rcmp}": pk})
        else:
            condition = Q(**{f"_sort__{rcmp}": value}) | Q(_sort=value, **{f"pk__{rcmp}": pk})
            condition &= Q(**{f"_sort__{rcmp}e": value})
        queryset = queryset.filter(condition)
        order = [_ordered(key, descending=not descending, nullable=nullable, nulls_first=True), "pk" if descending else "-pk"]
    else:
        if decoded_after is not None:
            value, pk = decoded_after
            if value is None:
                condition = Q(_sort__isnull=True, **{f"pk__{cmp}": pk})
            else:
                condition = Q(**{f"_sort__{cmp}": value}) | Q(_sort=value, **{f"pk__{cmp}": pk})
                if nullable:
                    condition |= Q(_sort__isnull=True)
                else:
                    condition &= Q(**{f"_sort__{cmp}e": value})
            queryset = queryset.filter(condition)
        order = [_ordered(key, descending=descending, nullable=nullable, nulls_first=False), "-pk" if descending else "pk"]
    rows = list(queryset.order_by(*order)[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    if backwards:
        rows.reverse()
        has_prev, has_next = more, True
    else:
        has_prev, has_next = decoded_after is not None, more
    next_cursor = encode_cursor(rows[-1]._sort, rows[-1].pk) if rows and has_next else None
    prev_cursor = encode_cursor(rows[0]._sort, rows[0].pk) if rows and has_prev else None
    return KeysetPage(rows=rows, next_cursor=next_cursor, prev_cursor=prev_cursor)


def _ordered(key, *, descending: bool, nullable: bool, nulls_first: bool):
    # NULLS FIRST/LAST only where the key can be null: on a NOT NULL key it would stop
    # PostgreSQL from walking the (key DESC, id DESC) index and make it sort the whole table.
    if not nullable:
        return key.desc() if descending else key.asc()
    if nulls_first:
        return key.desc(nulls_first=True) if descending else key.asc(nulls_first=True)
    return key.desc(nulls_last=True) if descending else key.asc(nulls_last=True)


def estimated_total(queryset: QuerySet[Contact], *, filtered: bool, page: KeysetPage | None = None,
                    first_page: bool = False) -> tuple[int, bool]:
    """Return (total, exact) without counting a large table.

    A first page that has no next page is the whole result: its length is exact. Otherwise,
    on PostgreSQL, the planner answers: pg_class.reltuples for the whole table, the EXPLAIN row
    estimate for a filtered query (planning only, about a millisecond). Elsewhere (SQLite,
    small development databases) rows are counted up to LIST_COUNT_CAP + 1, a bounded cost.
    """
    if page is not None and first_page and page.next_cursor is None:
        return len(page.rows), True
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [Contact._meta.db_table])
            row = cursor.fetchone()
        # -1: never analysed (a new database, before autovacuum's first pass). The planner then guesses
        # from the table's size on disk and said "about 50" of 200 matches: counted instead, as elsewhere.
        estimate = int(row[0]) if row and row[0] is not None else -1
        if filtered and estimate >= 0:
            estimate = _planner_rows(queryset)
        if estimate >= 0:
            # Never fewer than the page shows, and more when there is a next page.
            shown = (len(page.rows) + (1 if page.next_cursor else 0)) if page else 0
            return max(estimate, shown), False
    counted = queryset.order_by().values("pk")[: LIST_COUNT_CAP + 1].count()
    if counted > LIST_COUNT_CAP:
        return LIST_COUNT_CAP, False
    return counted, True


def _planner_rows(queryset: QuerySet) -> int:
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def with_list_relations(queryset: QuerySet[Contact]) -> QuerySet[Contact]:
    """Load what list rows, cards and exports show in a fixed number of queries (owner, tags, stages)."""
    return queryset.select_related("owner").prefetch_related(
        Prefetch("tags", queryset=Tag.objects.order_by(Lower("name"))),
        Prefetch(
            "stage_memberships",
            queryset=ContactStage.objects.select_related("stage", "pipeline").order_by("pipeline__position", "pipeline_id"),
        ),
    )


def attach_list_relations(contacts: list[Contact], vocabulary: ListVocabulary, *, tags: bool, stages: bool) -> None:
    """Set ``list_tags`` and ``list_stages`` on each contact of a list page in at most one query.

    Only the (contact, tag) and (contact, stage) id pairs are read, in one UNION ALL; the Tag and
    Stage objects come from the cached vocabulary. Ids it does not know yet (a tag created in
    another process within the cache's TTL) reload the vocabulary once.
    """
    for contact in contacts:
        contact.list_tags, contact.list_stages = [], []
    if not contacts or not (tags or stages):
        return
    ids = [contact.pk for contact in contacts]
    kind = CharField()
    parts = []
    if tags:
        parts.append(ContactTag.objects.filter(contact_id__in=ids).annotate(kind=Value("t", output_field=kind))
                     .values_list("kind", "contact_id", "tag_id").order_by())
    if stages:
        parts.append(ContactStage.objects.filter(contact_id__in=ids).annotate(kind=Value("s", output_field=kind))
                     .values_list("kind", "contact_id", "stage_id").order_by())
    query = parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0]
    pairs = list(query)
    tag_by_id = {t.pk: t for t in vocabulary.tags}
    stage_by_id = {s.pk: s for s in vocabulary.stages}
    if any(pk not in (tag_by_id if k == "t" else stage_by_id) for k, _contact, pk in pairs):
        forget_list_vocabulary()
        vocabulary = list_vocabulary()
        tag_by_id = {t.pk: t for t in vocabulary.tags}
        stage_by_id = {s.pk: s for s in vocabulary.stages}
    tag_rank = {t.pk: i for i, t in enumerate(vocabulary.tags)}
    stage_rank = {s.pk: i for i, s in enumerate(vocabulary.stages)}
    by_contact = {contact.pk: contact for contact in contacts}
    for k, contact_id, pk in pairs:
        contact = by_contact[contact_id]
        if k == "t" and pk in tag_by_id:
            contact.list_tags.append(tag_by_id[pk])
        elif k == "s" and pk in stage_by_id:
            contact.list_stages.append(stage_by_id[pk])
    for contact in contacts:
        contact.list_tags.sort(key=lambda t: tag_rank[t.pk])
        contact.list_stages.sort(key=lambda s: stage_rank[s.pk])


# --- Contact page: timeline and field provenance (issue 5) -----------------------------


@dataclass
class TimelineItem:
    """One entry of a contact's timeline; ``kind`` picks the template ``contacts/timeline/<kind>.html``."""

    kind: str
    at: dt.datetime
    obj: Any

    @property
    def template(self) -> str:
        return f"contacts/timeline/{self.kind}.html"


TimelineSource = Callable[[Contact, int, "dt.datetime | None"], Iterable[TimelineItem]]
TIMELINE_SOURCES: list[TimelineSource] = []
# History actions that another source already shows as its own item.
TIMELINE_HISTORY_SHOWN_ELSEWHERE: set[str] = {
    HistoryEntry.Action.NOTE_ADDED,
    HistoryEntry.Action.FILE_ADDED,
    HistoryEntry.Action.TASK_CREATED,
    HistoryEntry.Action.TASK_COMPLETED,
    HistoryEntry.Action.TASK_REOPENED,
    HistoryEntry.Action.CONVERSATION,
}


def register_timeline_source(source: TimelineSource, *, replaces_history_actions: Iterable[str] = ()) -> TimelineSource:
    """Add one more kind to every contact timeline (one query per source, newest ``limit`` rows).

    ``source(contact, limit, before)`` returns TimelineItems newer-first; history entries with
    ``replaces_history_actions`` are then left out so an event is not shown twice.
    """
    if source not in TIMELINE_SOURCES:
        TIMELINE_SOURCES.append(source)
    TIMELINE_HISTORY_SHOWN_ELSEWHERE.update(replaces_history_actions)
    return source


def _before(queryset: QuerySet, field: str, before: dt.datetime | None) -> QuerySet:
    return queryset.filter(**{f"{field}__lt": before}) if before is not None else queryset


def _notes_source(contact: Contact, limit: int, before: dt.datetime | None) -> list[TimelineItem]:
    notes = _before(Note.objects.filter(contact=contact), "created_at", before)
    notes = notes.select_related("author", "agent").order_by("-created_at", "-id")[:limit]
    return [TimelineItem("note", n.created_at, n) for n in notes]


TRANSCRIPT_MESSAGES = 200


def _conversations_source(contact: Contact, limit: int, before: dt.datetime | None) -> list[TimelineItem]:
    from conversations.models import Conversation, Message

    conversations = _before(Conversation.objects.filter(contact=contact), "started_at", before)
    # The latest TRANSCRIPT_MESSAGES of each (a long WhatsApp thread made the page megabytes); the count says
    # how many there are in all. Read newest first, shown oldest first.
    conversations = (
        conversations.select_related("agent")
        .annotate(message_total=Count("messages"))
        .prefetch_related(Prefetch(
            "messages", queryset=Message.objects.order_by("-sent_at", "-id")[:TRANSCRIPT_MESSAGES],
            to_attr="latest_messages",
        ))
        .order_by("-started_at", "-id")[:limit]
    )
    for conversation in conversations:
        conversation.latest_messages.reverse()
    return [TimelineItem("conversation", c.started_at, c) for c in conversations]


def _files_source(contact: Contact, limit: int, before: dt.datetime | None) -> list[TimelineItem]:
    files = _before(ContactFile.objects.filter(contact=contact), "created_at", before)
    files = files.select_related("uploaded_by", "agent").order_by("-created_at", "-id")[:limit]
    return [TimelineItem("file", f.created_at, f) for f in files]


def _tasks_source(contact: Contact, limit: int, before: dt.datetime | None) -> list[TimelineItem]:
    tasks = _before(Task.objects.filter(contact=contact), "created_at", before)
    tasks = tasks.select_related("assignee", "created_by", "agent").order_by("-created_at", "-id")[:limit]
    return [TimelineItem("task", t.created_at, t) for t in tasks]


def _history_source(contact: Contact, limit: int, before: dt.datetime | None) -> list[TimelineItem]:
    entries = _before(HistoryEntry.objects.filter(contact=contact), "created_at", before)
    shown_elsewhere = TIMELINE_HISTORY_SHOWN_ELSEWHERE - {HistoryEntry.Action.CONVERSATION}
    entries = entries.exclude(action__in=list(shown_elsewhere))
    if HistoryEntry.Action.CONVERSATION in TIMELINE_HISTORY_SHOWN_ELSEWHERE:
        # A conversation still linked here is shown as itself; one moved to another contact is not, so
        # its "moved to contact #…" entry is what tells this contact's timeline where it went.
        entries = entries.exclude(action=HistoryEntry.Action.CONVERSATION, conversation__contact_id=contact.pk)
    entries = entries.order_by("-created_at", "-id")[:limit]
    return [TimelineItem("change", e.created_at, e) for e in entries]


for _source in (_notes_source, _conversations_source, _files_source, _tasks_source, _history_source):
    register_timeline_source(_source)


def contact_timeline(contact: Contact, *, limit: int = 50, before: dt.datetime | None = None) -> list[TimelineItem]:
    """Return the newest ``limit`` timeline items of every registered kind, merged newest first.

    Each source asks for its own newest ``limit`` rows, so the merge is exact and the number
    of queries depends on the number of sources, never on the number of rows.
    """
    items: list[TimelineItem] = []
    for source in TIMELINE_SOURCES:
        items.extend(source(contact, limit, before))
    items.sort(key=lambda item: item.at, reverse=True)
    return items[:limit]


PROVENANCE_ACTIONS = (
    HistoryEntry.Action.CREATED,
    HistoryEntry.Action.UPDATED,
    HistoryEntry.Action.CHANGE_APPROVED,
    HistoryEntry.Action.IMPORTED,
    HistoryEntry.Action.FORM_SUBMITTED,
    HistoryEntry.Action.AUTOMATION,
)


def fields_provenance(contact: Contact, *, scan: int = 500) -> dict[str, HistoryEntry]:
    """Return, per field ("email", "custom.budget", "owner"), the newest history entry that set it: one query."""
    entries = (
        HistoryEntry.objects.filter(contact=contact, action__in=PROVENANCE_ACTIONS)
        .order_by("-created_at", "-id")[:scan]
    )
    found: dict[str, HistoryEntry] = {}
    for entry in entries:
        for key in entry.changes or {}:
            found.setdefault(key, entry)
    return found


# --- Pipeline board and tasks (issue 5) ---------------------------------------------------

BOARD_COLUMN_SIZE = 25


def board_memberships(pipeline: Pipeline, *, user, owner: str = "", tag: Tag | None = None) -> QuerySet[ContactStage]:
    """Return the pipeline's memberships (cards) the user may see, filtered by owner and tag."""
    memberships = ContactStage.objects.filter(pipeline=pipeline)
    if sees_only_own_contacts(user):
        memberships = memberships.filter(contact__owner=user)
    if owner == "none":
        memberships = memberships.filter(contact__owner__isnull=True)
    elif owner == "me":
        memberships = memberships.filter(contact__owner=user)
    elif owner.isdigit():
        memberships = memberships.filter(contact__owner_id=int(owner))
    if tag is not None:
        memberships = memberships.filter(Exists(ContactTag.objects.filter(contact=OuterRef("contact_id"), tag=tag)))
    return memberships


def board_columns(pipeline: Pipeline, memberships: QuerySet[ContactStage]) -> tuple[list[Stage], dict[int, list], dict[int, int]]:
    """Return (stages, first cards per stage, count per stage) in a fixed number of queries whatever the board's size."""
    stages = list(pipeline.stages.order_by("position", "id"))
    newest = [F("entered_at").desc(), F("id").desc()]
    if connection.features.supports_slicing_ordering_in_compound and stages:
        # Top N of each column through one UNION ALL of per-stage LIMIT queries: each walks the
        # (stage, entered_at) index and stops after N rows, however large the column.
        parts = [memberships.filter(stage=stage).order_by(*newest).values("id")[:BOARD_COLUMN_SIZE] for stage in stages]
        ids = parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0]
        first = memberships.filter(id__in=[row["id"] for row in ids])
    else:
        first = memberships.annotate(row=Window(RowNumber(), partition_by=[F("stage_id")], order_by=newest)).filter(
            row__lte=BOARD_COLUMN_SIZE
        )
    first = first.select_related("contact", "contact__owner").order_by("stage_id", "-entered_at", "-id")
    cards: dict[int, list] = {stage.pk: [] for stage in stages}
    for membership in first:
        cards.setdefault(membership.stage_id, []).append(membership)
    counts = {
        row["stage_id"]: row["n"] for row in memberships.order_by().values("stage_id").annotate(n=Count("contact_id"))
    }
    return stages, cards, counts


def board_column_page(memberships: QuerySet[ContactStage], stage: Stage, *, after: str = "") -> KeysetPage:
    """Return the next cards of one column (newest in stage first) after a cursor."""
    return keyset_page(
        memberships.filter(stage=stage).select_related("contact", "contact__owner"),
        sort_expr=F("entered_at"), descending=True, nullable=False, after=after, size=BOARD_COLUMN_SIZE,
    )


def tasks_for(user, *, assignee=None, everyone: bool = False) -> QuerySet[Task]:
    """Return open tasks of ``assignee`` (or of everyone) on contacts ``user`` may see, soonest due first."""
    tasks = Task.objects.filter(status=Task.Status.OPEN).select_related("contact", "assignee")
    if not everyone:
        tasks = tasks.filter(assignee=assignee or user)
    if sees_only_own_contacts(user):
        tasks = tasks.filter(Q(contact__owner=user) | Q(assignee=user))
    return tasks.order_by("due_at", "id")
