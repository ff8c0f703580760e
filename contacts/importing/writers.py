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

from django.db.models import Q

from contacts.models import Contact, ContactTag, HistoryEntry, ImportChange, Source
from contacts.services import STANDARD_FIELDS
from crm_hub.actors import Actor

FETCH_FIELDS = ("id", *STANDARD_FIELDS, "phone_e164", "phone_extension", "email_normalized", "custom")
WRITE_FIELDS = (*STANDARD_FIELDS, "phone_e164", "phone_extension", "email_normalized")


def _birthday(value: str) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


class OrmWriter:
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
    """Same queries as OrmWriter, written as INSERT/UPDATE ... FROM unnest(arrays) on PostgreSQL."""

    def __init__(self, connection):
        self.connection = connection

    def _columns(self, states: list[dict[str, Any]]) -> list[list[Any]]:
        columns = [[s[f] for s in states] for f in WRITE_FIELDS if f != "birthday"]
        columns.append([_birthday(s["birthday"]) for s in states])
        columns.append([json.dumps(s["custom"]) for s in states])
        return columns

    def _text_fields(self) -> list[str]:
        return [f for f in WRITE_FIELDS if f != "birthday"]

    def insert_contacts(self, states: list[dict[str, Any]], *, now: dt.datetime) -> list[int]:
        text = self._text_fields()
        names = [*text, "birthday", "custom"]
        arrays = ", ".join(["%s::text[]"] * len(text) + ["%s::date[]", "%s::jsonb[]"])
        sql = (
            f"INSERT INTO contacts_contact ({', '.join(names)}, source, created_at, updated_at, last_activity_at) "
            f"SELECT u.*, %s, %s, %s, %s FROM unnest({arrays}) AS u({', '.join(names)}) RETURNING id"
        )
        with self.connection.cursor() as cursor:
            cursor.execute(sql, [Source.IMPORT, now, now, now, *self._columns(states)])
            # INSERT ... SELECT keeps the order of unnest; Django's bulk_create relies on the same.
            return [row[0] for row in cursor.fetchall()]

    def update_contacts(self, rows: list[tuple[int, dict[str, Any]]], *, now: dt.datetime) -> None:
        text = self._text_fields()
        names = [*text, "birthday", "custom"]
        arrays = ", ".join(["%s::bigint[]", *["%s::text[]"] * len(text), "%s::date[]", "%s::jsonb[]"])
        sets = ", ".join(f"{n} = u.{n}" for n in names)
        sql = (
            f"UPDATE contacts_contact AS c SET {sets}, updated_at = %s, last_activity_at = %s "
            f"FROM unnest({arrays}) AS u(id, {', '.join(names)}) WHERE c.id = u.id"
        )
        with self.connection.cursor() as cursor:
            cursor.execute(sql, [now, now, [r[0] for r in rows], *self._columns([r[1] for r in rows])])

    def insert_contact_tags(self, pairs: list[tuple[int, int]], *, now: dt.datetime) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO contacts_contacttag (contact_id, tag_id, added_at) "
                "SELECT c, t, %s FROM unnest(%s::bigint[], %s::bigint[]) AS u(c, t) ON CONFLICT DO NOTHING",
                [now, [p[0] for p in pairs], [p[1] for p in pairs]],
            )

    def insert_changes(self, job_id: int, records: list[tuple[int, bool, dict, list[int]]]) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO contacts_importchange (job_id, contact_id, created, before, tags_added) "
                "SELECT %s, c, n, b, t FROM unnest(%s::bigint[], %s::boolean[], %s::jsonb[], %s::jsonb[]) AS u(c, n, b, t)",
                [
                    job_id,
                    [r[0] for r in records],
                    [r[1] for r in records],
                    [json.dumps(r[2], default=str) for r in records],
                    [json.dumps(r[3]) for r in records],
                ],
            )

    def insert_history(self, entries: list[tuple[int, dict, str]], *, actor: Actor, now: dt.datetime) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO contacts_historyentry (contact_id, action, changes, summary, source, actor_user_id, "
                "actor_agent_id, actor_label, created_at) "
                "SELECT c, %s, ch, s, %s, %s, %s, %s, %s FROM unnest(%s::bigint[], %s::jsonb[], %s::text[]) AS u(c, ch, s)",
                [
                    HistoryEntry.Action.IMPORTED, Source.IMPORT,
                    actor.user.pk if actor.user else None, actor.agent.pk if actor.agent else None,
                    actor.label[:160], now,
                    [e[0] for e in entries],
                    [json.dumps(e[1], default=str) for e in entries],
                    [e[2][:255] for e in entries],
                ],
            )


def writer_for(connection) -> OrmWriter:
    return PostgresWriter(connection) if connection.vendor == "postgresql" else OrmWriter()
