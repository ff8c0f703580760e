"""The queries of one import batch: a portable ORM version and a PostgreSQL version built on unnest().

Each method is one query whatever the number of rows. On PostgreSQL, arrays
bound as parameters and expanded with ``unnest`` replace Django's
``bulk_update`` (CASE/WHEN SQL that grows with the batch) and avoid building
model instances for inserts.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.db import IntegrityError
from django.db.models import Q

from contacts.models import Contact, ContactTag, HistoryEntry, ImportChange, Source
from contacts.services import STANDARD_FIELDS
from crm_hub.actors import Actor

FETCH_FIELDS = ("id", *STANDARD_FIELDS, "phone_e164", "phone_extension", "email_normalized", "custom")
WRITE_FIELDS = (*STANDARD_FIELDS, "phone_e164", "phone_extension", "email_normalized")
TEXT_FIELDS = tuple(f for f in WRITE_FIELDS if f != "birthday")


def _integrity_errors() -> tuple[type[Exception], ...]:
    # Raw psycopg cursors raise psycopg's own exceptions, not Django's wrappers.
    try:
        import psycopg
    except ImportError:
        return (IntegrityError,)
    return (IntegrityError, psycopg.IntegrityError)


INTEGRITY_ERRORS = _integrity_errors()


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


def _birthday(value: str) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


class OrmWriter:
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
        return list(Contact.objects.filter(query).order_by().values(*FETCH_FIELDS))

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
        contacts = []
        for contact_id, s in rows:
            contact = Contact(pk=contact_id, **{f: s[f] for f in WRITE_FIELDS if f != "birthday"})
            contact.birthday = _birthday(s["birthday"])
            contact.custom = s["custom"]
            contact.updated_at = contact.last_activity_at = now
            contacts.append(contact)
        Contact.objects.bulk_update(contacts, [*WRITE_FIELDS, "custom", "updated_at", "last_activity_at"])

    def insert_contact_tags(self, pairs: list[tuple[int, int]], *, now: dt.datetime) -> None:
        ContactTag.objects.bulk_create(
            [ContactTag(contact_id=c, tag_id=t, added_at=now) for c, t in pairs], ignore_conflicts=True
        )

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
            "WHERE (phone_e164 = ANY(%s) AND NOT (phone_e164 = '')) "
            "OR (email_normalized = ANY(%s) AND NOT (email_normalized = ''))"
        )
        with self.raw.cursor() as cursor:
            # A batch looks up thousands of keys at once. Past a few hundred thousand
            # contacts the planner prices that many index probes above a (parallel)
            # scan of the whole table and switches to the scan: 0.2 s per batch at 1M
            # contacts and growing, against ~10 ms for the probes. So no scan, for
            # this statement only (the batch's UPDATE must scan its temp table).
            cursor.execute("SET LOCAL enable_seqscan TO OFF")
            cursor.execute(sql, [list(phones), list(emails)])
            rows = cursor.fetchall()
            cursor.execute("SET LOCAL enable_seqscan TO DEFAULT")
            return [dict(zip(FETCH_FIELDS, row, strict=True)) for row in rows]

    def fetch_tags(self, contact_ids: list[int]) -> list[tuple[int, int]]:
        with self.raw.cursor() as cursor:
            cursor.execute("SELECT contact_id, tag_id FROM contacts_contacttag WHERE contact_id = ANY(%s)", [contact_ids])
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
        names = [*TEXT_FIELDS, "birthday", "custom"]
        with self.raw.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE IF NOT EXISTS import_contact_update "
                f"(id bigint, {', '.join(f + ' text' for f in TEXT_FIELDS)}, birthday date, custom jsonb) "
                "ON COMMIT DELETE ROWS"
            )
            cursor.execute("DELETE FROM import_contact_update")
            with _copy(cursor, f"COPY import_contact_update (id, {', '.join(names)}) FROM STDIN") as copy:
                for contact_id, s in rows:
                    copy.write_row([contact_id, *self._row(s)])
            sets = ", ".join(f"{n} = u.{n}" for n in names)
            # The id list lets PostgreSQL probe the primary key: joined on the
            # temp table alone (no statistics) it chose a merge or hash join over
            # the whole contacts table, a full scan per batch that grew with the CRM.
            cursor.execute(
                f"UPDATE contacts_contact AS c SET {sets}, updated_at = %s, last_activity_at = %s "
                "FROM import_contact_update AS u WHERE c.id = u.id AND c.id = ANY(%s)",
                [now, now, [contact_id for contact_id, _s in rows]],
            )

    def insert_contact_tags(self, pairs: list[tuple[int, int]], *, now: dt.datetime) -> None:
        with self.raw.cursor() as cursor:
            # The batch already knows each contact's tags, so these pairs are new: COPY, no conflict check.
            with _copy(cursor, "COPY contacts_contacttag (contact_id, tag_id, added_at) FROM STDIN") as copy:
                for contact_id, tag_id in pairs:
                    copy.write_row([contact_id, tag_id, now])

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


def writer_for(connection) -> OrmWriter:
    return PostgresWriter(connection) if connection.vendor == "postgresql" else OrmWriter()
