"""The queries of one import batch: a portable ORM version and a PostgreSQL version built on unnest().

Each method is one query whatever the number of rows. On PostgreSQL, arrays
bound as parameters and expanded with ``unnest`` replace Django's
``bulk_update`` (CASE/WHEN SQL that grows with the batch) and avoid building
model instances for inserts.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, IntegrityError, connection
from django.db.models import Case, F, Q, Value, When

from contacts.models import Contact, ContactTag, HistoryEntry, ImportChange, Source
from contacts.services import STANDARD_FIELDS
from crm_hub.actors import Actor

FETCH_FIELDS = ("id", *STANDARD_FIELDS, "phone_e164", "phone_extension", "email_normalized", "custom")
WRITE_FIELDS = (*STANDARD_FIELDS, "phone_e164", "phone_extension", "email_normalized")
TEXT_FIELDS = tuple(f for f in WRITE_FIELDS if f != "birthday")


def _with_psycopg(django_error: type[Exception], psycopg_name: str) -> tuple[type[Exception], ...]:
    # Raw psycopg cursors raise psycopg's own exceptions, not Django's wrappers.
    try:
        import psycopg
    except ImportError:
        return (django_error,)
    return (django_error, getattr(psycopg, psycopg_name))


INTEGRITY_ERRORS = _with_psycopg(IntegrityError, "IntegrityError")
DATABASE_ERRORS = _with_psycopg(DatabaseError, "Error")


def is_deadlock(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL breaking a deadlock (raw psycopg, or wrapped by Django)."""
    try:
        from psycopg.errors import DeadlockDetected
    except ImportError:
        return False
    return isinstance(exc, DeadlockDetected) or isinstance(exc.__cause__, DeadlockDetected)


# One encoder for every row: json.dumps(..., default=str) builds a new JSONEncoder
# per call, which was a third of the history and undo rows' encoding time.
_dumps = json.JSONEncoder(default=str).encode


def _copy(cursor, sql: str):
    """COPY whose rows go to the server from a background thread.

    The server then maintains its indexes for the rows already sent while
    Python encodes the next ones, instead of each side waiting for the other.
    """
    from psycopg.copy import QueuedLibpqWriter  # only PostgresWriter calls this

    return cursor.copy(sql, writer=QueuedLibpqWriter(cursor))


def _joined(keys: Iterable[Any], separator: str) -> str:
    """Keys as one string for ``string_to_array``: a batch binds thousands of them per query.

    Bound as a list, each key was quoted and escaped on its own in Python (the
    cursors bind client-side); one string is escaped once, in C. Phones (E.164)
    and email keys cannot hold a newline (control characters are refused), ids
    no comma.
    """
    return separator.join(map(str, keys))


def _loaded(value: Any) -> Any:
    # A raw psycopg cursor on Django's connection hands jsonb back as text.
    return json.loads(value) if isinstance(value, str) else value


@dataclass(slots=True)
class JobRecord:
    """An undo record as the PostgreSQL writer reads it (the ORM writer hands ImportChange itself)."""

    id: int
    contact_id: int
    created: bool
    before: dict[str, Any]
    tags_added: list[int]


def _birthday(value: str) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


# Columns that make up one value: written all together or not at all, so that a
# concurrent edit of the phone cannot end up with the import's number and its extension.
_TOGETHER = (("phone", "phone_e164", "phone_extension"), ("email", "email_normalized"))
_TEXT_INDEX = {f: i for i, f in enumerate(TEXT_FIELDS)}
_WRITTEN_WITH = {_TEXT_INDEX[f]: tuple(_TEXT_INDEX[g] for g in group) for group in _TOGETHER for f in group}
# C-level getters: an update compares 5,000 rows of 16 columns per batch.
_text_of = operator.itemgetter(*TEXT_FIELDS)  # from a state or an ORM row, both dicts
_FETCH_INDEX = {f: i for i, f in enumerate(FETCH_FIELDS)}
_fetched_text_of = operator.itemgetter(*(_FETCH_INDEX[f] for f in TEXT_FIELDS))  # from a psycopg row
_MISSING = object()


class _Patch:
    """What an update changes on one contact, against the state the batch looked up.

    ``text`` has one entry per TEXT_FIELDS column: the new value, or None when
    unchanged (those columns are NOT NULL, so None is never a new value).
    """

    __slots__ = ("id", "text", "birthday_set", "birthday", "custom_set", "custom_drop")

    def __init__(self, contact_id: int, state: dict[str, Any], before: tuple | None):
        self.id = contact_id
        new_text = _text_of(state)
        self.birthday = _birthday(state["birthday"])
        new_custom = state["custom"]
        if before is None:
            # Not looked up by this writer, so nothing to compare with: write it all.
            self.text, self.birthday_set = list(new_text), True
            self.custom_set, self.custom_drop = dict(new_custom), []
            return
        old_text, old_birthday, old_custom = before
        text: list[Any] = [None] * len(new_text)
        if new_text != old_text:
            for i, (new, old) in enumerate(zip(new_text, old_text, strict=True)):
                if new != old:
                    for j in _WRITTEN_WITH.get(i, (i,)):
                        text[j] = new_text[j]
        self.text = text
        self.birthday_set = self.birthday != old_birthday
        if isinstance(old_custom, str):  # a raw psycopg cursor hands jsonb back as text
            old_custom = {} if old_custom == "{}" else json.loads(old_custom)
        if not isinstance(old_custom, dict):
            old_custom = {}
        if not (new_custom or old_custom):
            self.custom_set, self.custom_drop = {}, []
            return
        self.custom_set = {k: v for k, v in new_custom.items() if old_custom.get(k, _MISSING) != v}
        self.custom_drop = [k for k in old_custom if k not in new_custom]

    def columns(self) -> dict[str, Any]:
        """The changed columns of WRITE_FIELDS and their new values (birthday a date or None)."""
        changed = {f: v for f, v in zip(TEXT_FIELDS, self.text, strict=True) if v is not None}
        if self.birthday_set:
            changed["birthday"] = self.birthday
        return changed

    @property
    def custom_changed(self) -> bool:
        return bool(self.custom_set or self.custom_drop)


class OrmWriter:
    """Batch queries through Django's ORM (SQLite and anything but PostgreSQL).

    An update writes only what the import changes on each contact, against
    the state ``fetch_existing`` read. Nothing locks the contacts between that
    lookup and the update, so a salesperson's edit in between must survive:
    writing back the whole looked-up row overwrote their change of another
    field while their history entry still said it happened.
    """

    def __init__(self) -> None:
        self._fetched: dict[int, Any] = {}

    def begin_batch(self) -> None:
        pass

    def fetch_existing(self, phones: set[str], emails: set[str]) -> list[dict[str, Any]]:
        query = Q()
        if phones:
            # Repeating the partial index's condition lets PostgreSQL use it.
            query |= Q(phone_e164__in=phones) & ~Q(phone_e164="")
        if emails:
            query |= Q(email_normalized__in=emails) & ~Q(email_normalized="")
        if not query:
            return []
        rows = list(Contact.objects.filter(query).order_by().values(*FETCH_FIELDS))
        # Copies: the update compares against the state as read, whatever the caller does with these.
        self._fetched = {row["id"]: (_text_of(row), row["birthday"], dict(row["custom"] or {})) for row in rows}
        return rows

    def _before(self, contact_id: int) -> tuple | None:
        """(text columns, birthday, custom) of a contact as the lookup read it."""
        return self._fetched.get(contact_id)

    def _patches(self, rows: list[tuple[int, dict[str, Any]]]) -> list[_Patch]:
        return [_Patch(contact_id, state, self._before(contact_id)) for contact_id, state in rows]

    def fetch_tags(self, contact_ids: list[int]) -> list[tuple[int, int]]:
        return list(ContactTag.objects.filter(contact_id__in=contact_ids).values_list("contact_id", "tag_id"))

    def insert_contacts(self, states: list[dict[str, Any]], *, now: dt.datetime) -> list[int]:
        contacts = [
            Contact(
                **{f: s[f] for f in WRITE_FIELDS if f != "birthday"},
                birthday=_birthday(s["birthday"]),
                custom=s["custom"],
                source=Source.IMPORT,
                created_at=now,
                updated_at=now,
                last_activity_at=now,
            )
            for s in states
        ]
        Contact.objects.bulk_create(contacts)
        return [c.pk for c in contacts]

    def update_contacts(self, rows: list[tuple[int, dict[str, Any]]], *, now: dt.datetime) -> None:
        patches = self._patches(rows)
        fields = {f: Contact._meta.get_field(f) for f in WRITE_FIELDS}
        # bulk_update writes every listed field of every row; a CASE per column whose
        # default is the column itself writes each row's changed columns only.
        for chunk in _param_chunks(patches):
            cases: dict[str, list[When]] = {}
            for patch in chunk:
                for name, value in patch.columns().items():
                    cases.setdefault(name, []).append(When(pk=patch.id, then=Value(value, output_field=fields[name])))
            Contact.objects.filter(pk__in=[p.id for p in chunk]).update(
                **{name: Case(*whens, default=F(name), output_field=fields[name]) for name, whens in cases.items()},
                updated_at=now, last_activity_at=now,
            )
        patched = [p for p in patches if p.custom_changed]
        if not patched:
            return
        # Read after the UPDATE above, which holds these rows' locks (SQLite: the database's
        # write lock) until the batch commits: no edit can land between this read and the write.
        current = dict(Contact.objects.filter(pk__in=[p.id for p in patched]).values_list("pk", "custom"))
        contacts = []
        for patch in patched:
            custom = current.get(patch.id)
            custom = {**(custom if isinstance(custom, dict) else {}), **patch.custom_set}
            for key in patch.custom_drop:
                custom.pop(key, None)
            contacts.append(Contact(pk=patch.id, custom=custom))
        Contact.objects.bulk_update(contacts, ["custom"])

    def insert_contact_tags(self, pairs: list[tuple[int, int]], *, now: dt.datetime) -> None:
        ContactTag.objects.bulk_create(
            [ContactTag(contact_id=c, tag_id=t, added_at=now) for c, t in pairs], ignore_conflicts=True
        )

    def fetch_written_by_job(self, job_id: int, contact_ids: list[int]) -> list[ImportChange]:
        """The undo records an earlier batch of the job wrote for any of ``contact_ids``."""
        return list(ImportChange.objects.filter(job_id=job_id, contact_id__in=contact_ids).order_by("id"))

    def merge_changes(self, records: list[ImportChange]) -> None:
        ImportChange.objects.bulk_update(records, ["before", "tags_added"])

    def insert_changes(self, job_id: int, records: list[tuple[int, bool, dict, list[int]]]) -> None:
        ImportChange.objects.bulk_create(
            [
                ImportChange(job_id=job_id, contact_id=c, created=created, before=before, tags_added=tags)
                for c, created, before, tags in records
            ]
        )

    def insert_history(self, entries: list[tuple[int, dict, str]], *, actor: Actor, now: dt.datetime) -> None:
        HistoryEntry.objects.bulk_create(
            [
                HistoryEntry(
                    contact_id=c, action=HistoryEntry.Action.IMPORTED, changes=changes, summary=summary[:255],
                    source=Source.IMPORT, actor_user=actor.user, actor_agent=actor.agent,
                    actor_label=actor.label[:160], created_at=now,
                )
                for c, changes, summary in entries
            ]
        )


class PostgresWriter(OrmWriter):
    """Same queries as OrmWriter, as COPY and set-based SQL on the raw psycopg connection.

    Going past Django's cursor wrapper skips its per-query bookkeeping and
    lets COPY stream rows through psycopg's C encoder. Parameters are still
    bound client-side (Django sets that cursor factory on the connection);
    binding the lookup's arrays server-side measured no faster. The cursors
    share Django's connection, so the caller's ``transaction.atomic`` still
    covers them.
    """

    def __init__(self, connection):
        super().__init__()
        connection.ensure_connection()
        self.raw = connection.connection

    def begin_batch(self) -> None:
        # A batch's commit need not wait for its WAL flush: a crash can lose the
        # last batches, but each one whole (contacts, history and undo log commit
        # together), never half of one. It saves an fsync (up to ~80 ms here) per batch.
        with self.raw.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")

    def fetch_existing(self, phones: set[str], emails: set[str]) -> list[dict[str, Any]]:
        if not phones and not emails:
            return []
        sql = (
            f"SELECT {', '.join(FETCH_FIELDS)} FROM contacts_contact "
            # Repeating the partial indexes' condition lets PostgreSQL use them.
            "WHERE (phone_e164 = ANY(string_to_array(%s, E'\\n')) AND NOT (phone_e164 = '')) "
            "OR (email_normalized = ANY(string_to_array(%s, E'\\n')) AND NOT (email_normalized = ''))"
        )
        with self.raw.cursor() as cursor:
            # A batch looks up thousands of keys at once. Past a few hundred thousand
            # contacts the planner prices that many index probes above a (parallel)
            # scan of the whole table and switches to the scan: 0.2 s per batch at 1M
            # contacts and growing, against ~10 ms for the probes. So no scan, for
            # this statement only (the batch's UPDATE must scan its temp table).
            cursor.execute("SET LOCAL enable_seqscan TO OFF")
            cursor.execute(sql, [_joined(phones, "\n"), _joined(emails, "\n")])
            rows = cursor.fetchall()
            cursor.execute("SET LOCAL enable_seqscan TO DEFAULT")
            # The tuples themselves (immutable, custom still JSON text): the few updated rows are decoded later.
            self._fetched = {row[0]: row for row in rows}
            return [dict(zip(FETCH_FIELDS, row, strict=True)) for row in rows]

    def _before(self, contact_id: int) -> tuple | None:
        row = self._fetched.get(contact_id)
        return None if row is None else (_fetched_text_of(row), row[_FETCH_INDEX["birthday"]], row[_FETCH_INDEX["custom"]])

    def fetch_tags(self, contact_ids: list[int]) -> list[tuple[int, int]]:
        with self.raw.cursor() as cursor:
            cursor.execute(
                "SELECT contact_id, tag_id FROM contacts_contacttag WHERE contact_id = ANY(string_to_array(%s, ',')::bigint[])",
                [_joined(contact_ids, ",")],
            )
            return cursor.fetchall()

    def _row(self, s: dict[str, Any]) -> list[Any]:
        return [*(s[f] for f in TEXT_FIELDS), s["birthday"] or None, _dumps(s["custom"])]

    def insert_contacts(self, states: list[dict[str, Any]], *, now: dt.datetime) -> list[int]:
        with self.raw.cursor() as cursor:
            # Take the ids first so the rows can go in by COPY (which returns nothing).
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence('contacts_contact', 'id')) FROM generate_series(1, %s)",
                [len(states)],
            )
            ids = [row[0] for row in cursor.fetchall()]
            columns = ", ".join(["id", *TEXT_FIELDS, "birthday", "custom", "source", "created_at", "updated_at", "last_activity_at"])
            with _copy(cursor, f"COPY contacts_contact ({columns}) FROM STDIN") as copy:
                for contact_id, s in zip(ids, states, strict=True):
                    copy.write_row([contact_id, *self._row(s), Source.IMPORT, now, now, now])
        return ids

    def update_contacts(self, rows: list[tuple[int, dict[str, Any]]], *, now: dt.datetime) -> None:
        # Per row, only what changed: NULL in a text column means "unchanged" (those columns are
        # NOT NULL, so NULL is never a new value); birthday, where NULL is a value, has its own flag.
        # Custom is merged as a patch into the row as it is when the UPDATE reaches it: in READ
        # COMMITTED a row edited since the lookup is re-read after that edit commits, so the edit stays.
        with self.raw.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE IF NOT EXISTS import_contact_patch "
                f"(id bigint, {', '.join(f + ' text' for f in TEXT_FIELDS)}, birthday date, birthday_set boolean, "
                "custom_set jsonb, custom_drop text[]) ON COMMIT DELETE ROWS"
            )
            cursor.execute("DELETE FROM import_contact_patch")
            ids = []
            columns = ", ".join(["id", *TEXT_FIELDS, "birthday", "birthday_set", "custom_set", "custom_drop"])
            with _copy(cursor, f"COPY import_contact_patch ({columns}) FROM STDIN") as copy:
                for patch in self._patches(rows):
                    ids.append(patch.id)
                    copy.write_row([
                        patch.id, *patch.text, patch.birthday, patch.birthday_set,
                        _dumps(patch.custom_set) if patch.custom_set else None, patch.custom_drop or None,
                    ])
            sets = ", ".join(f"{f} = COALESCE(u.{f}, c.{f})" for f in TEXT_FIELDS)
            # The id list lets PostgreSQL probe the primary key: joined on the
            # temp table alone (no statistics) it chose a merge or hash join over
            # the whole contacts table, a full scan per batch that grew with the CRM.
            cursor.execute(
                f"UPDATE contacts_contact AS c SET {sets}, "
                "birthday = CASE WHEN u.birthday_set THEN u.birthday ELSE c.birthday END, "
                "custom = CASE WHEN u.custom_set IS NULL AND u.custom_drop IS NULL THEN c.custom ELSE "
                "(CASE WHEN jsonb_typeof(c.custom) = 'object' THEN c.custom ELSE '{}'::jsonb END "
                "|| COALESCE(u.custom_set, '{}'::jsonb)) - COALESCE(u.custom_drop, '{}'::text[]) END, "
                "updated_at = %s, last_activity_at = %s "
                "FROM import_contact_patch AS u WHERE c.id = u.id AND c.id = ANY(string_to_array(%s, ',')::bigint[])",
                [now, now, _joined(ids, ",")],
            )

    def insert_contact_tags(self, pairs: list[tuple[int, int]], *, now: dt.datetime) -> None:
        with self.raw.cursor() as cursor:
            # The batch already knows each contact's tags, so these pairs are new: COPY, no conflict check.
            with _copy(cursor, "COPY contacts_contacttag (contact_id, tag_id, added_at) FROM STDIN") as copy:
                for contact_id, tag_id in pairs:
                    copy.write_row([contact_id, tag_id, now])

    def fetch_written_by_job(self, job_id: int, contact_ids: list[int]) -> list[JobRecord]:
        """The undo records an earlier batch of the job wrote for any of ``contact_ids``."""
        with self.raw.cursor() as cursor:
            cursor.execute(
                "SELECT id, contact_id, created, before, tags_added FROM contacts_importchange "
                "WHERE job_id = %s AND contact_id = ANY(string_to_array(%s, ',')::bigint[]) ORDER BY id",
                [job_id, _joined(contact_ids, ",")],
            )
            return [
                JobRecord(id=i, contact_id=c, created=created, before=_loaded(before), tags_added=_loaded(tags))
                for i, c, created, before, tags in cursor.fetchall()
            ]

    def merge_changes(self, records: list[JobRecord]) -> None:
        with self.raw.cursor() as cursor:
            cursor.execute(
                "UPDATE contacts_importchange AS c SET before = u.before::jsonb, tags_added = u.tags_added::jsonb "
                "FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS u(id, before, tags_added) WHERE c.id = u.id",
                [[r.id for r in records], [_dumps(r.before) for r in records], [_dumps(r.tags_added) for r in records]],
            )

    def insert_changes(self, job_id: int, records: list[tuple[int, bool, dict, list[int]]]) -> None:
        with self.raw.cursor() as cursor:
            with _copy(cursor, "COPY contacts_importchange (job_id, contact_id, created, before, tags_added) FROM STDIN") as copy:
                for contact_id, created, before, tags in records:
                    copy.write_row([job_id, contact_id, created, _dumps(before), _dumps(tags)])

    def insert_history(self, entries: list[tuple[int, dict, str]], *, actor: Actor, now: dt.datetime) -> None:
        user_id = actor.user.pk if actor.user else None
        agent_id = actor.agent.pk if actor.agent else None
        label = actor.label[:160]
        with self.raw.cursor() as cursor:
            with _copy(
                cursor,
                "COPY contacts_historyentry (contact_id, action, changes, summary, source, actor_user_id, "
                "actor_agent_id, actor_label, created_at) FROM STDIN"
            ) as copy:
                for contact_id, changes, summary in entries:
                    copy.write_row([
                        contact_id, HistoryEntry.Action.IMPORTED, _dumps(changes), summary[:255],
                        Source.IMPORT, user_id, agent_id, label, now,
                    ])


def _param_chunks(patches: list[_Patch]) -> list[list[_Patch]]:
    """Split an update so that no statement binds more parameters than the backend allows (SQLite: 999)."""
    limit = connection.features.max_query_params
    if not limit:
        return [patches] if patches else []
    budget = limit - 10  # updated_at and last_activity_at
    chunks: list[list[_Patch]] = []
    chunk: list[_Patch] = []
    used = 0
    for patch in patches:
        changed = sum(v is not None for v in patch.text) + patch.birthday_set
        cost = 1 + 2 * changed  # its id in the IN list, and an id and a value per changed column
        if chunk and used + cost > budget:
            chunks.append(chunk)
            chunk, used = [], 0
        chunk.append(patch)
        used += cost
    if chunk:
        chunks.append(chunk)
    return chunks


def writer_for(connection) -> OrmWriter:
    return PostgresWriter(connection) if connection.vendor == "postgresql" else OrmWriter()
