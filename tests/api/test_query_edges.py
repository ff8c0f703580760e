"""Query parameters and paths agents get wrong: blank filters, far time offsets, slashes in tag names, mistyped paths."""

import datetime as dt

import pytest

from contacts import services
from contacts.models import Contact, Source, Tag, Task
from crm_hub.actors import Actor

pytestmark = pytest.mark.django_db


def codes(response):
    return [(e["field"], e["code"]) for e in response.json()["errors"]]


def test_a_blank_filter_is_refused_not_ignored(bot):
    Contact.objects.create(name="Someone", source="api")
    for params, field in (({"phone": ""}, "phone"), ({"email": "  "}, "email"), ({"tag": ""}, "tag"),
                          ({"owner": " "}, "owner"), ({"stage": ""}, "stage")):
        response = bot.get("contacts", params)
        assert response.status_code == 400, (params, response.content)
        assert codes(response) == [(field, "required")]
    assert codes(bot.get("conversations", {"since": ""})) == [("since", "required")]
    assert bot.get("contacts").status_code == 200  # left out, the parameter means "any"


@pytest.mark.parametrize("offset", ["+17:38", "-16:00", "+23:59"])
def test_times_with_offsets_postgresql_cannot_hold_are_taken_in_utc(bot, offset):
    contact = Contact.objects.create(name="T", source="api")
    assert bot.get("contacts", {"updated_since": f"2026-01-01T00:00:00{offset}"}).status_code == 200
    assert bot.get("conversations", {"since": f"2026-01-01T00:00:00{offset}"}).status_code == 200
    response = bot.post(f"contacts/{contact.pk}/tasks", {"title": "t", "due_at": f"2030-01-01T10:00:00{offset}"})
    assert response.status_code == 201, response.content
    sent = dt.datetime.fromisoformat(f"2030-01-01T10:00:00{offset}")
    assert Task.objects.get().due_at == sent  # the same instant, kept in UTC


def test_a_tag_holding_a_slash_can_be_removed(bot):
    Tag.objects.create(name="B2B/Enterprise")
    contact = services.upsert_contact(data={"name": "Slash"}, tags=["B2B/Enterprise"], actor=Actor.for_system("t"),
                                      source=Source.API).contact
    response = bot.delete(f"contacts/{contact.pk}/tags/B2B%2FEnterprise")
    assert response.status_code == 200, response.content
    assert not contact.tags.exists()


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_a_write_to_a_mistyped_path_is_the_json_404(bot, method):
    response = getattr(bot.client, method)("/api/v1/contacts/upsert/", data="{}", content_type="application/json",
                                           **bot.headers)
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert "no trailing slash" in response.json()["errors"][0]["message"]


@pytest.mark.django_db(transaction=True)
def test_a_nul_in_a_tag_or_owner_is_a_400_not_a_500(bot):
    contact = Contact.objects.create(name="N", source="api")
    assert bot.delete(f"contacts/{contact.pk}/tags/%00").status_code == 400
    assert bot.get("contacts", {"owner": "a\x00b"}).status_code == 400
    assert bot.post(f"contacts/{contact.pk}/tags", {"tags": ["x\x00"]}).status_code == 400


def test_intake_refuses_two_different_values_for_one_custom_field(bot):
    from contacts.models import CustomField

    CustomField.objects.create(key="budget", label="Budget", type="number", allow_for_ai=True)
    response = bot.post("intake", {"contact": {"name": "CC", "phone": "+1 404 620 0001", "custom": {"budget": "1"}},
                                   "custom": {"budget": "2"}})
    assert response.status_code == 400
    assert codes(response) == [("contact.custom.budget", "conflict")]
    assert not Contact.objects.exists()
    same = bot.post("intake", {"contact": {"name": "CC", "phone": "+1 404 620 0001", "custom": {"budget": "2"}},
                               "custom": {"budget": "2"}})
    assert same.status_code == 201 and Contact.objects.get().custom == {"budget": 2}


def test_a_method_the_endpoint_lacks_is_405_even_with_an_idempotency_key(bot):
    for key in ("", "k1"):
        response = bot.put("access/check", {}, key=key)
        assert response.status_code == 405, (key, response.content)
        assert "POST" in response["Allow"]


@pytest.mark.parametrize("many", [1100])
def test_djangos_own_400s_under_the_api_are_the_json_envelope(bot, settings, many):
    from django.test import override_settings

    with override_settings(DEBUG=False):
        response = bot.client.get("/api/v1/contacts?" + "&".join(f"a{i}=1" for i in range(many)), **bot.headers)
        assert response.status_code == 400 and response["Content-Type"] == "application/json"
        assert response.json()["errors"][0]["code"] == "bad_request"


def test_a_birthday_in_the_future_is_refused(bot):
    future = (dt.date.today() + dt.timedelta(days=400)).isoformat()
    response = bot.post("contacts/upsert", {"name": "Time traveller", "email": "tt@example.com", "birthday": future})
    assert response.status_code == 400
    assert codes(response) == [("birthday", "invalid_value")]
    assert "future" in response.json()["errors"][0]["message"]
    assert not Contact.objects.exists()
    response = bot.post("contacts/upsert", {"name": "Placeholder", "email": "ph@example.com", "birthday": "0001-01-01"})
    assert codes(response) == [("birthday", "invalid_value")] and "placeholder" in response.json()["errors"][0]["message"]
    today = dt.date.today().isoformat()  # born today: a real, if young, contact
    assert bot.post("contacts/upsert", {"name": "Newborn", "email": "nb@example.com", "birthday": today}).status_code == 201


@pytest.mark.parametrize("path", ["contacts", "conversations"])
def test_a_mistyped_parameter_is_refused_not_ignored(bot, path):
    Contact.objects.create(name="Someone", source="api")
    response = bot.get(path, {"emial": "someone@example.com"})
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert (error["field"], error["code"]) == ("emial", "unknown_field")
    assert {"cursor", "page_size"} <= set(error["allowed"])
    assert bot.get(path, {"page_size": "5", "format": "json"}).status_code == 200


@pytest.mark.parametrize("size", ["0", "-1", "abc", "1.5", "201", "99999999999999999999", ""])
def test_page_size_out_of_range_is_refused_not_replaced(bot, size):
    response = bot.get("contacts", {"page_size": size})
    assert response.status_code == 400, (size, response.content)
    assert codes(response) == [("page_size", "invalid_value")]
    assert "1 to 200" in response.json()["errors"][0]["message"]
    assert bot.get("contacts", {"page_size": "200"}).status_code == 200


def test_a_format_other_than_json_is_406_naming_the_formats(bot):
    response = bot.get("contacts", {"format": "xml"})
    assert response.status_code == 406
    assert response.json() == {"errors": [{
        "field": "format", "code": "not_acceptable", "allowed": ["json"],
        "message": "Format 'xml' is not available; this API answers in json.",
    }]}


@pytest.mark.parametrize("invisible", ["\u200b", "\u200b \u2060", "\ufeff\u00ad"])
def test_a_name_that_shows_nothing_is_no_name(bot, invisible):
    response = bot.post("contacts/upsert", {"name": invisible})
    assert response.status_code == 400
    assert not Contact.objects.exists()
    response = bot.post("contacts/upsert", {"name": invisible, "email": "seen@example.com"})
    assert response.status_code == 201
    assert Contact.objects.get().name == ""


def test_an_edit_cannot_leave_a_contact_with_no_name_phone_or_email(bot):
    contact_id = bot.post("contacts/upsert", {"name": "Only Name"}).json()["contact_id"]
    response = bot.patch(f"contacts/{contact_id}", {"name": ""})
    assert response.status_code == 400
    assert codes(response) == [("name", "required")]
    assert Contact.objects.get(pk=contact_id).name == "Only Name"
    # Replacing the name with an email in the same edit is fine.
    assert bot.patch(f"contacts/{contact_id}", {"name": "", "email": "only@example.com"}).status_code == 200


def test_a_parameter_given_twice_is_refused_not_the_last_one_taken(bot):
    Tag.objects.create(name="vip")
    Tag.objects.create(name="lead")
    response = bot.get("contacts", {"tag": ["vip", "lead"]})
    assert response.status_code == 400
    assert codes(response) == [("tag", "invalid_value")]
    assert "given 2 times" in response.json()["errors"][0]["message"]


def test_a_blank_search_is_refused_like_any_blank_filter(bot):
    for q in ("", "  "):
        response = bot.get("contacts", {"q": q})
        assert response.status_code == 400 and codes(response) == [("q", "required")]


def test_an_agent_that_knows_less_of_a_name_keeps_the_fuller_one(bot):
    contact_id = bot.post("contacts/upsert", {"name": "Marcus Aurelius Reed", "phone": "+1 561 555 2701"}).json()["contact_id"]
    for partial in ("Marcus", "marcus reed", "REED"):
        response = bot.post("contacts/upsert", {"name": partial, "phone": "(561) 555-2701"})
        assert response.status_code == 200
        assert Contact.objects.get(pk=contact_id).name == "Marcus Aurelius Reed", partial
    # A different name is still a change, and a PATCH (an explicit edit) sets what it says.
    bot.post("contacts/upsert", {"name": "Marcus Reed-Smith", "phone": "(561) 555-2701"})
    assert Contact.objects.get(pk=contact_id).name == "Marcus Reed-Smith"
    bot.patch(f"contacts/{contact_id}", {"name": "Marcus"})
    assert Contact.objects.get(pk=contact_id).name == "Marcus"


def test_a_task_names_every_bad_field_at_once(bot):
    contact = Contact.objects.create(name="T", source="api")
    response = bot.post(f"contacts/{contact.pk}/tasks", {"title": "z", "assignee": "nobody"})
    assert response.status_code == 400
    assert sorted(codes(response)) == [("assignee", "invalid_value"), ("due_at", "required")]


def test_contacts_touched_by_an_intake_page_in_order_with_the_rest(bot):
    """On SQLite the intake's raw touch stored '...+00:00' text beside the ORM's bare UTC: out of order."""
    for i in range(3):
        bot.post("contacts/upsert", {"name": f"Plain {i}", "email": f"plain{i}@example.com"})
    bot.post("intake", {"contact": {"name": "Touched", "phone": "+15615550177"}, "note": "Called about pricing"})
    for i in range(3, 5):
        bot.post("contacts/upsert", {"name": f"Plain {i}", "email": f"plain{i}@example.com"})
    seen, url_params = [], {"order": "updated_at", "page_size": 1}
    for _ in range(10):
        body = bot.get("contacts", url_params).json()
        seen += [row["id"] for row in body["results"]]
        if body["next"] is None:
            break
        from urllib.parse import parse_qs, urlsplit

        url_params = {"order": "updated_at", "page_size": 1, "cursor": parse_qs(urlsplit(body["next"]).query)["cursor"][0]}
    assert len(seen) == 6 and len(set(seen)) == 6
    stamps = list(Contact.objects.order_by("updated_at", "id").values_list("id", flat=True))
    assert seen == stamps



@pytest.mark.parametrize("stored, sent", [
    ("Marcus Aurelius Reed", "M. Reed"), ("Marcus Aurelius Reed", "Marcus R."), ("Marcus Aurelius Reed", "Mr Reed"),
    ("Marcus Aurelius Reed", "Reed, Marcus"), ("Marcus Aurelius Reed", "Marcus A. Reed"),
    ("João Pedro da Silva Santos", "Joao Santos"), ("Jürgen Friedrich Müller", "Jurgen Muller"),
    ("Jürgen Friedrich Müller", "Juergen"), ("Anne-Marie Dubois", "Anne Dubois"), ("Seán O'Brien", "Sean OBrien"),
])
def test_an_initial_a_title_or_a_name_without_accents_keeps_the_fuller_name(bot, stored, sent):
    contact_id = bot.post("contacts/upsert", {"name": stored, "phone": "+1 201 555 1111"}).json()["contact_id"]
    assert bot.post("contacts/upsert", {"name": sent, "phone": "(201) 555-1111"}).status_code == 200
    assert Contact.objects.get(pk=contact_id).name == stored


def test_runs_of_spaces_in_a_name_are_one_space(bot):
    contact_id = bot.post("contacts/upsert", {"name": "  Ana   Beatriz  Costa ", "email": "ana.b@example.com"}).json()["contact_id"]
    assert Contact.objects.get(pk=contact_id).name == "Ana Beatriz Costa"


def test_a_number_is_no_name(bot):
    response = bot.post("contacts/upsert", {"name": 123, "phone": "+1 201 555 9876"})
    assert response.status_code == 400 and codes(response) == [("name", "invalid_value")]
    # Numbers still read where a person writes digits: a phone, a house number, a ZIP code.
    assert bot.post("contacts/upsert", {"phone": 2015559876, "number": 12, "zip_code": 33101}).status_code == 201
