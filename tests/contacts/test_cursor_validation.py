"""Cursors of the agent API's lists: one made by hand, cut short or out of range answers 400 on ``cursor``
(as a cursor that is not base64 at all does), never a 500; real cursors, ties included, page through everything."""

from __future__ import annotations

import base64
import datetime as dt
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from contacts.models import Contact
from conversations.models import Conversation
from tests.api.factories import AgentClient, make_agent
from tests.contacts.ui_helpers import make_contact

pytestmark = pytest.mark.django_db


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


BAD_POSITIONS = [
    "cD0yMDI2",  # p=2026: the OpenAPI example's cursor before it was a real one
    "cD0yMDI2LTEzLTQ1",  # p=2026-13-45
    b64("p=2026-05-01"),  # a bare date: positions carry a time and its offset
    b64("p=2026-05-01 14:30:00"),  # no offset
    b64("p=9999-12-31 23:59:59-05:00"),  # past year 9999 in UTC
    b64("p=0001-01-01 00:00:00%2B14:00"),  # before year 1 in UTC
    b64("p=x%00"),  # NUL
    b64("o=1&r=1&p=not a date"),
]
INVALID = {"errors": [{"field": "cursor", "code": "invalid_value", "message": (
    "Not a cursor of this list: pass back the whole `next` or `previous` link of a page, or leave cursor out."
)}]}


@pytest.fixture
def bot():
    _agent, token = make_agent("cursor-bot")
    return AgentClient(token)


def cursor_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["cursor"][0]


def test_garbage_cursor_is_invalid(bot):
    # The answer every bad cursor below must get.
    response = bot.get("contacts", {"cursor": "garbage"})
    assert response.status_code == 400 and response.json() == INVALID


@pytest.mark.parametrize("path", ["contacts", "conversations"])
@pytest.mark.parametrize("cursor", BAD_POSITIONS)
def test_cursor_with_a_position_that_is_no_date_time_is_invalid(bot, path, cursor):
    response = bot.get(path, {"cursor": cursor})
    assert response.status_code == 400, response.content
    assert response.json() == INVALID


@pytest.fixture
def contacts(staff_user):
    return [make_contact(staff_user, name=f"Person {i}", phone=f"+1561555{i:04d}") for i in range(5)]


def pages(bot, path: str, cursors: list | None = None, **params) -> list[list[int]]:
    """Follow ``next`` from the first page; return each page's ids (and the decoded cursors in ``cursors``)."""
    seen, response = [], bot.get(path, params)
    while True:
        assert response.status_code == 200, response.content
        seen.append([row["id"] for row in response.json()["results"]])
        link = response.json()["next"]
        if link is None:
            return seen
        if cursors is not None:
            cursors.append(parse_qs(base64.b64decode(cursor_of(link).split(".")[0]).decode()))
        response = bot.get(path, {**params, "cursor": cursor_of(link)})


def test_the_cursor_in_the_openapi_example_has_the_shape_of_a_real_one(bot, contacts):
    # Real cursors are signed with the server's key, so the example's signature is no real one.
    schema = json.dumps(bot.client.get("/api/v1/schema/", {"format": "json"}).json())
    example = schema.split("contacts?cursor=", 1)[1].split('"', 1)[0]
    real = cursor_of(bot.get("contacts", {"page_size": 2}).json()["next"])
    for cursor in (example, real):
        body, signature = cursor.split(".")
        assert set(parse_qs(base64.b64decode(body).decode())) == {"o", "k", "i"} and len(signature) == 16
    assert bot.get("contacts", {"cursor": example}).json() == INVALID


def test_an_edited_cursor_that_still_parses_is_refused(bot, contacts):
    real = cursor_of(bot.get("contacts", {"page_size": 2}).json()["next"])
    body, signature = real.split(".")
    query = parse_qs(base64.b64decode(body).decode())
    query["i"] = ["1"]
    from urllib.parse import urlencode

    forged = base64.b64encode(urlencode({k: v[0] for k, v in query.items()}).encode()).decode() + "." + signature
    assert bot.get("contacts", {"page_size": 2, "cursor": forged}).json() == INVALID


def test_real_next_cursor_cut_short_is_invalid(bot, contacts):
    link = bot.get("contacts", {"page_size": 2}).json()["next"]
    cursor = cursor_of(link)
    assert bot.get("contacts", {"page_size": 2, "cursor": cursor}).status_code == 200
    for cut in (cursor[:12], cursor[:16], cursor[:-4]):
        response = bot.get("contacts", {"page_size": 2, "cursor": cut})
        assert response.status_code == 400, (cut, response.content)
        assert response.json() == INVALID


def test_real_cursors_page_through_every_contact_both_ways(bot, contacts):
    forward = pages(bot, "contacts", page_size=2)
    assert [len(page) for page in forward] == [2, 2, 1]
    ids = [pk for page in forward for pk in page]
    assert sorted(ids) == sorted(c.pk for c in contacts) and len(set(ids)) == 5
    response = bot.get("contacts", {"page_size": 2})
    for _page in range(2):
        response = bot.get("contacts", {"page_size": 2, "cursor": cursor_of(response.json()["next"])})
    back = bot.get("contacts", {"page_size": 2, "cursor": cursor_of(response.json()["previous"])})
    assert back.status_code == 200 and [row["id"] for row in back.json()["results"]] == forward[1]


def test_ties_on_the_sort_key_page_through_by_id(bot, contacts):
    # A cursor holds the sort key and the id of the row it follows; rows sharing the key are ordered by id.
    base = timezone.now().replace(microsecond=0)
    for index, contact in enumerate(contacts):
        Contact.objects.filter(pk=contact.pk).update(updated_at=base + dt.timedelta(seconds=index // 3))
    cursors: list = []
    forward = pages(bot, "contacts", cursors, page_size=2)
    expected = [c.pk for c in sorted(contacts, key=lambda c: (contacts.index(c) // 3, c.pk), reverse=True)]
    assert [pk for page in forward for pk in page] == expected
    assert all({"o", "k", "i"} <= set(c) for c in cursors), cursors


@pytest.mark.parametrize("page_size", [1, 7, 50, 200])
def test_thousands_of_rows_sharing_one_updated_at_page_through_once_each(bot, page_size):
    """An import writes a batch with one updated_at: DRF's offset cursor looped past ~1,000 ties."""
    when = timezone.now()
    Contact.objects.bulk_create([Contact(name=f"Imported {i}", source="import") for i in range(1300)])
    Contact.objects.update(updated_at=when)
    seen = [pk for page in pages(bot, "contacts", page_size=page_size) for pk in page]
    assert len(seen) == 1300 and len(set(seen)) == 1300
    assert seen == sorted(seen, reverse=True)


def test_oldest_first_walk_sees_a_contact_changed_during_the_walk(bot, contacts):
    first = bot.get("contacts", {"page_size": 2, "order": "updated_at"}).json()
    walked = [row["id"] for row in first["results"]]
    Contact.objects.filter(pk=walked[0]).update(updated_at=timezone.now())  # edited by someone mid-walk
    rest = pages(bot, "contacts", page_size=2, order="updated_at", cursor=cursor_of(first["next"]))
    walked += [pk for page in rest for pk in page]
    assert set(walked) == {c.pk for c in contacts}
    assert walked[-1] == walked[0]  # it comes again, at the end
    response = bot.get("contacts", {"order": "name"})
    assert response.status_code == 400 and response.json()["errors"][0]["allowed"] == ["-updated_at", "updated_at"]


def test_a_cursor_of_one_order_is_no_cursor_of_the_other(bot, contacts):
    link = bot.get("contacts", {"page_size": 2}).json()["next"]
    response = bot.get("contacts", {"page_size": 2, "order": "updated_at", "cursor": cursor_of(link)})
    assert response.status_code == 400 and response.json() == INVALID


def test_conversation_cursors_page_through_every_conversation(bot, make_conversations):
    forward = pages(bot, "conversations", page_size=2)
    assert sorted(pk for page in forward for pk in page) == sorted(c.pk for c in make_conversations)


@pytest.fixture
def make_conversations():
    start = timezone.now() - dt.timedelta(days=1)
    return [
        Conversation.objects.create(external_id=f"c{i}", started_at=start + dt.timedelta(minutes=i // 2))
        for i in range(5)
    ]


# --- The web UI's contact list (its own keyset cursors, ?after= / ?before=) ------------------------------


def web_cursor(kind: str, value, pk) -> str:
    return base64.urlsafe_b64encode(json.dumps([kind, value, pk]).encode()).decode().rstrip("=")


@pytest.mark.parametrize(("cursor", "sort"), [
    ("cD0yMDI2", ""), ("garbage", ""), (web_cursor("dt", "2026", 1), ""),
    (web_cursor("dt", "2026-13-45T00:00:00+00:00", 1), ""), (web_cursor("v", 10**30, 1), "name"),
    (web_cursor("dt", "2026-05-01T00:00:00+00:00", "x"), ""), (web_cursor("v", "Person 2", 10**30), "name"),
    (web_cursor("dt", "9999-12-31T23:59:59-05:00", 1), ""),
    (web_cursor("v", "x\x00", 1), "name"),
])
@pytest.mark.parametrize("key", ["after", "before"])
def test_web_list_with_a_hand_edited_cursor_shows_the_first_page(client, staff_user, contacts, cursor, sort, key):
    client.force_login(staff_user)
    response = client.get("/contacts/", {key: cursor, "sort": sort})
    assert response.status_code == 200
