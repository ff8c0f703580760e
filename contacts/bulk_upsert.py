"""Upsert many contacts at once (the agent API's batch-upsert) with a fixed number of queries.

Each item is validated on its own and fails alone. Items that create a new contact
whose phone and email appear nowhere else (in the table or earlier in the batch)
are inserted together; the rest (matches, in-batch repeats, lost races) go through
``upsert_contact`` one by one, in input order, inside the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q

from contacts import services
from contacts.custom_fields import clean_custom_values
from contacts.models import Contact, ContactTag, CustomField, HistoryEntry, Source, Tag
from crm_hub import rawsql
from crm_hub.actors import Actor
from crm_hub.errors import FieldError, InputRejected

Item = tuple[Mapping[str, Any], Mapping[str, Any] | None, list | None]


def _clean_items(items, *, actor: Actor) -> list[services.CleanContactInput | InputRejected]:
    needs_custom = any(not isinstance(i, InputRejected) and i[1] for i in items)
    needs_tags = any(not isinstance(i, InputRejected) and i[2] for i in items)
    definitions = {d.key: d for d in CustomField.objects.all()} if needs_custom else {}
    tags = {t.name.casefold(): t for t in Tag.objects.all()} if needs_tags else {}
    allowed_tags = sorted((t.name for t in tags.values()), key=str.casefold)
    cleaned: list[services.CleanContactInput | InputRejected] = []
    for index, item in enumerate(items):
        if isinstance(item, InputRejected):
            cleaned.append(item)
            continue
        data, custom, tag_names = item
        errors: list[FieldError] = []
        result = None
        try:
            result = services.clean_contact_input(data, actor=actor)
        except InputRejected as exc:
            errors.extend(exc.errors)
        custom_values, custom_errors = clean_custom_values(
            dict(custom) if isinstance(custom, Mapping) else custom, definitions=definitions, agent_write=actor.is_agent
        ) if custom else ({}, [])
        errors.extend(custom_errors)
        found_tags: list[Tag] = []
        for name in tag_names or []:
            tag = tags.get(str(name).strip().casefold())
            if tag is None:
                errors.append(FieldError("tags", "unknown_tag", f"Tag {name!r} does not exist; use one of the allowed tags.", allowed_tags))
            elif tag not in found_tags:
                found_tags.append(tag)
        if result is not None and not (result.values.get("name") or result.phone_e164 or result.email_normalized):
            errors.append(FieldError("name", "required", "Give at least a name, a phone or an email."))
        if errors:
            cleaned.append(InputRejected(errors).prefixed(f"contacts.{index}"))
            continue
        result.custom = custom_values
        result.tags = found_tags
        cleaned.append(result)
    return cleaned


def upsert_contacts_batch(*, items: list[Item | InputRejected], actor: Actor, source: str) -> list[services.UpsertResult | InputRejected]:
    """Upsert each item; return, in order, its UpsertResult or the InputRejected that refused it."""
    if source not in Source.values:
        raise InputRejected([FieldError("source", "invalid_value", "Unknown source.", list(Source.values))])
    outcomes: list[services.UpsertResult | InputRejected] = list(_clean_items(items, actor=actor))
    valid = [(i, c) for i, c in enumerate(outcomes) if not isinstance(c, InputRejected)]
    if not valid:
        return outcomes
    with transaction.atomic():
        taken = _lock_existing(valid)
        fresh, slow = [], []
        for index, item in valid:
            keys = {("p", item.phone_e164)} if item.phone_e164 else set()
            if item.email_normalized:
                keys.add(("e", item.email_normalized))
            if keys & taken:
                slow.append((index, item))
            else:
                fresh.append((index, item))
            taken |= keys
        # Concurrent batches write the same people in one order (by key, ties in input order): two
        # inserts that wait on each other's unique-index entries in opposite orders deadlock.
        fresh.sort(key=_key_order)
        created = _insert_fresh(fresh, actor=actor, source=source)
        if created is None:
            # Another writer committed some of these people first. Lock every match again, in
            # primary-key order like the first time, before going row by row: rows locked one at
            # a time in each caller's input order would deadlock two such batches.
            _lock_existing(valid)
            slow = slow + fresh
        else:
            for (index, _item), result in zip(fresh, created, strict=True):
                outcomes[index] = result
        for index, item in _people_in_key_order(slow):
            try:
                outcomes[index] = services.upsert_contact(data={}, cleaned=item, actor=actor, source=source)
            except InputRejected as exc:
                outcomes[index] = exc.prefixed(f"contacts.{index}")
    return outcomes


def _key_order(pair: tuple[int, services.CleanContactInput]) -> tuple[str, str, int]:
    index, item = pair
    return (item.phone_e164 or "\U0010ffff", item.email_normalized or "\U0010ffff", index)


def _people_in_key_order(pairs: list[tuple[int, services.CleanContactInput]]) -> list[tuple[int, services.CleanContactInput]]:
    """The items grouped by the person they write (items sharing a phone or an email, however linked), people
    in key order as ``_key_order`` has it, and each person's items in input order.

    Key order across people keeps two concurrent batches from waiting on each other in opposite orders;
    input order within a person is what the caller said last: sorted by key alone, an item that carried
    an email was applied after a later one without, which then won.
    """
    parent: dict[object, object] = {}

    def root(node):
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for index, item in pairs:
        for key in (("p", item.phone_e164) if item.phone_e164 else None, ("e", item.email_normalized) if item.email_normalized else None):
            if key is not None:
                parent[root(("i", index))] = root(key)
    people: dict[object, list[tuple[int, services.CleanContactInput]]] = {}
    for pair in pairs:
        people.setdefault(root(("i", pair[0])), []).append(pair)
    ordered = sorted(people.values(), key=lambda items: min(_key_order(pair) for pair in items))
    return [pair for items in ordered for pair in sorted(items, key=lambda pair: pair[0])]


def _lock_existing(valid) -> set[tuple[str, str]]:
    """Lock the contacts any item's phone or email matches, in primary-key order; return their keys."""
    phones = {c.phone_e164 for _, c in valid if c.phone_e164}
    emails = {c.email_normalized for _, c in valid if c.email_normalized}
    taken: set[tuple[str, str]] = set()
    if phones or emails:
        for phone, email in (
            Contact.objects.filter(Q(phone_e164__in=phones, phone_e164__gt="") | Q(email_normalized__in=emails, email_normalized__gt=""))
            .order_by("pk").select_for_update().values_list("phone_e164", "email_normalized")
        ):
            taken.update({("p", phone), ("e", email)})
    return taken


def _insert_fresh(fresh, *, actor: Actor, source: str) -> list[services.UpsertResult] | None:
    """Insert the new contacts in one statement; None when a concurrent writer took a key first."""
    if not fresh:
        return []
    contacts, all_changes = [], []
    for _index, cleaned in fresh:
        values = {k: v for k, v in cleaned.values.items() if v not in ("", None)}
        contact = Contact(
            **values, phone_e164=cleaned.phone_e164, phone_extension=cleaned.phone_extension,
            email_normalized=cleaned.email_normalized, custom={k: v for k, v in cleaned.custom.items() if v is not None},
            source=source, last_activity_at=services.timezone.now(),
        )
        changes = {k: [None, v] for k, v in values.items()}
        changes.update({f"custom.{k}": [None, v] for k, v in contact.custom.items()})
        contacts.append(contact)
        all_changes.append(changes)
    try:
        with transaction.atomic():
            rawsql.run_together([rawsql.insert(contacts)])
    except IntegrityError:
        return None
    entries, links, results = [], [], []
    label = Source(source).label
    for contact, changes, (_index, cleaned) in zip(contacts, all_changes, fresh, strict=True):
        entries.append(services._history(contact, action=HistoryEntry.Action.CREATED, actor=actor, source=source,
                                         changes=changes, summary=f"Created via {label}"))
        result = services.UpsertResult(contact=contact, created=True, matched_by=None, changes=changes)
        if cleaned.tags:
            links += [ContactTag(contact=contact, tag=t) for t in cleaned.tags]
            result.tags_added = [t.name for t in cleaned.tags]
            entries.append(services._history(contact, action=HistoryEntry.Action.TAG_ADDED, actor=actor, source=source,
                                             changes={"tags": [[], result.tags_added]},
                                             summary="Tags added: " + ", ".join(result.tags_added)))
        results.append(result)
    # Tag links and history rows in one round trip; SQL built once per row count.
    rawsql.run_together([rawsql.insert(links, returning=False) if links else rawsql.Statement("", ()),
                         rawsql.insert(entries, returning=False)])
    for result in results:
        services.announce_created(result.contact, tags_added=result.tags_added, actor=actor, source=source)
    return results
