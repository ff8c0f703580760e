"""Custom field fixes: definition shapes refused in the admin, robust band readers, huge numbers,
kept no-longer-allowed choices in the edit form, and XLSX cells with control characters."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.test import Client
from django.urls import reverse
from openpyxl import load_workbook

from contacts.models import Contact, CustomField
from tests.api.factories import AgentClient, make_agent
from tests.contacts.factories import CustomFieldFactory
from tests.contacts.ui_helpers import make_contact

pytestmark = pytest.mark.django_db


@pytest.fixture
def page(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def bot():
    _agent, token = make_agent("fix-bot", scopes=["contacts:read", "contacts:write"])
    return AgentClient(token)


def add_field(admin_client, **values):
    data = {"key": "f", "label": "F", "type": "text", "choices": "[]", "bands": "[]", "help_text": "", "position": 0,
            "allow_for_ai": "on", **values}
    return admin_client.post(reverse("admin:contacts_customfield_add"), data)


def band_of(detail: dict, key: str) -> tuple:
    item = next(f for f in detail["custom_fields"] if f["key"] == key)
    return item["value"], item["band"]


def form_errors(response) -> dict:
    assert response.status_code == 200, response.status_code  # the form again, not a redirect
    return response.context["adminform"].form.errors


# --- 1. Shapes of choices and bands ---------------------------------------------------------

@pytest.mark.parametrize("bands", [
    [{"min": 0, "max": "high", "label": "Low intent"}],
    {"a": 1},
    [[0, 1, "Low"]],
    [{"min": 0, "max": 1}],
    [{"min": 0, "max": 1, "label": "  "}],
    [{"min": 1, "max": 0, "label": "Backwards"}],
    [{"min": 0, "max": 1, "label": "Same"}, {"min": 0, "max": 1, "label": "Again"}],
    [{"min": 0, "max": 0.5, "label": "Low"}, {"min": 0.4, "max": 1, "label": "High"}],
    [{"min": True, "max": 1, "label": "Bool"}],
    [{"min": 0, "maximum": 1, "label": "Typo"}],
    "0-1 Low",
])
def test_admin_refuses_malformed_bands_with_the_expected_shape(admin_client, bands):
    response = add_field(admin_client, key="intent_score", type="number", bands=json.dumps(bands))
    errors = form_errors(response)
    assert list(errors) == ["bands"]
    assert '"min": number, "max": number, "label": "text"' in errors["bands"][0]
    assert not CustomField.objects.filter(key="intent_score").exists()


def test_admin_refuses_bands_on_a_field_that_is_not_numeric(admin_client):
    bands = [{"min": 0, "max": 1, "label": "Low"}]
    errors = form_errors(add_field(admin_client, key="nickname", type="text", bands=json.dumps(bands)))
    assert "Only number and decimal fields have bands" in errors["bands"][0]


@pytest.mark.parametrize("choices", [
    "Basic, Pro, Enterprise",
    {"Basic": 1},
    ["Basic", ""],
    ["Basic", 3],
    ["Basic", "Pro", "pro"],
    [],
])
def test_admin_refuses_malformed_choices_with_the_expected_shape(admin_client, choices):
    response = add_field(admin_client, key="plan", type="single_choice", choices=json.dumps(choices))
    errors = form_errors(response)
    assert list(errors) == ["choices"]
    assert "a list of distinct, non-empty texts" in errors["choices"][0]
    assert not CustomField.objects.filter(key="plan").exists()


def test_admin_refuses_choices_on_a_field_that_is_not_a_choice(admin_client):
    errors = form_errors(add_field(admin_client, key="nickname", type="text", choices='["A", "B"]'))
    assert "Only single and multiple choice fields have choices" in errors["choices"][0]


def test_admin_saves_well_formed_choices_and_bands_and_the_api_uses_them(admin_client, bot):
    assert add_field(admin_client, key="plan", type="single_choice", choices='[" Basic ", "Pro"]').status_code == 302
    bands = [{"min": 0.4, "max": 1, "label": "High"}, {"min": 0, "max": 0.4, "label": "Low"}]
    assert add_field(admin_client, key="intent_score", type="number", bands=json.dumps(bands)).status_code == 302
    assert CustomField.objects.get(key="plan").choices == ["Basic", "Pro"]
    ok = bot.post("contacts/upsert", {"phone": "+15615557001", "custom": {"plan": "pro", "intent_score": 1}})
    assert ok.status_code in (200, 201), ok.content
    refused = bot.post("contacts/upsert", {"phone": "+15615557001", "custom": {"plan": ","}})
    assert refused.status_code == 400
    assert Contact.objects.get().custom == {"plan": "Pro", "intent_score": 1}
    detail = bot.get(f"contacts/{Contact.objects.get().pk}").json()
    assert band_of(detail, "intent_score") == (1, "High")


def test_malformed_bands_already_saved_are_skipped_by_the_api_and_the_contact_page(bot, page, staff_user):
    CustomFieldFactory(key="intent_score", type="number", bands=[
        {"min": 0, "max": "high", "label": "Broken"}, "junk", {"min": 0.5, "max": 1, "label": "High"},
    ])
    contact = make_contact(staff_user, name="Ana", phone="+15615557003")
    assert bot.post("contacts/upsert", {"phone": "+15615557003", "custom": {"intent_score": 0.8}}).status_code == 200
    response = bot.get(f"contacts/{contact.pk}")
    assert response.status_code == 200
    assert band_of(response.json(), "intent_score") == (0.8, "High")
    assert page.get(f"/contacts/{contact.pk}/").status_code == 200
    CustomField.objects.filter(key="intent_score").update(bands={"a": 1})
    assert bot.get(f"contacts/{contact.pk}").status_code == 200
    assert page.get(f"/contacts/{contact.pk}/").status_code == 200


def test_choices_saved_as_a_string_are_not_read_as_one_choice_per_character(bot):
    CustomFieldFactory(key="plan", type="single_choice", choices="Basic, Pro, Enterprise")
    response = bot.post("contacts/upsert", {"phone": "+15615557004", "custom": {"plan": ","}})
    assert response.status_code == 400
    assert not Contact.objects.filter(phone_e164="+15615557004").exists()


# --- 2. Huge numbers ----------------------------------------------------------------------------

def raw_upsert(bot: AgentClient, body: str):
    return bot.client.post("/api/v1/contacts/upsert", data=body, content_type="application/json", **bot.headers)


@pytest.mark.parametrize(("kind", "raw"), [
    ("number", "1" + "0" * 400),
    ("number", "-1" + "0" * 400),
    ("decimal", "1" + "0" * 400),
    ("decimal", '"1e400"'),
    ("decimal", '"1e-400"'),
])
def test_a_number_too_large_for_a_float_is_refused_as_invalid_value(bot, kind, raw):
    CustomFieldFactory(key="intent_score", type=kind)
    response = raw_upsert(bot, '{"phone":"+15615557002","custom":{"intent_score":' + raw + "}}")
    assert response.status_code == 400, response.content
    error = next(e for e in response.json()["errors"] if e["field"] == "custom.intent_score")
    assert error["code"] == "invalid_value"
    assert not Contact.objects.exists()


def test_a_huge_integer_is_refused_but_a_large_finite_one_still_stores(bot):
    CustomFieldFactory(key="big", type="number")
    CustomFieldFactory(key="money", type="decimal")
    huge = raw_upsert(bot, '{"phone":"+15615557005","custom":{"big":1' + "0" * 400 + "}}")
    assert huge.status_code == 400 and huge.json()["errors"][0]["message"] == "Expected a finite number."
    big = "9" * 300
    response = raw_upsert(bot, '{"phone":"+15615557005","custom":{"big":' + big + ',"money":"12345678901234567890.50"}}')
    assert response.status_code == 201, response.content
    assert Contact.objects.get().custom == {"big": int(big), "money": "12345678901234567890.50"}


def test_a_nul_character_in_a_custom_value_is_refused_like_in_a_standard_field(bot):
    CustomFieldFactory(key="note", type="text")
    CustomFieldFactory(key="channels", type="multiple_choice", choices=["Email"])
    response = bot.post("contacts/upsert", {"phone": "+15615557009", "custom": {"note": "a\x00b", "channels": ["\x00"]}})
    assert response.status_code == 400
    errors = {e["field"]: e["code"] for e in response.json()["errors"]}
    assert errors == {"custom.note": "invalid_value", "custom.channels": "invalid_value"}
    assert not Contact.objects.exists()


# --- 3. A choice removed in the admin stays on the contact when the web form is saved -----------

def test_editing_another_field_keeps_a_single_choice_that_is_no_longer_allowed(page, staff_user):
    plan = CustomFieldFactory(key="plan", type="single_choice", choices=["Basic", "Legacy"])
    contact = make_contact(staff_user, name="Ana", phone="+15615557006")
    Contact.objects.filter(pk=contact.pk).update(custom={"plan": "Legacy"})
    plan.choices = ["Basic"]
    plan.save()
    form = page.get(f"/contacts/{contact.pk}/edit/").content.decode()
    assert '<option value="Legacy" selected>Legacy (current value, no longer a choice)</option>' in form
    response = page.post(f"/contacts/{contact.pk}/edit/",
                         {"name": "Ana", "phone": "+15615557006", "company": "New Co", "cf_plan": "Legacy"})
    assert response.status_code == 302
    contact.refresh_from_db()
    assert contact.company == "New Co" and contact.custom == {"plan": "Legacy"}
    page.post(f"/contacts/{contact.pk}/edit/", {"name": "Ana", "phone": "+15615557006", "cf_plan": "Basic"})
    contact.refresh_from_db()
    assert contact.custom == {"plan": "Basic"}


def test_editing_another_field_keeps_multiple_choices_that_are_no_longer_allowed(page, staff_user):
    CustomFieldFactory(key="channels", type="multiple_choice", choices=["Email", "Phone"])
    contact = make_contact(staff_user, name="Ana", phone="+15615557007")
    Contact.objects.filter(pk=contact.pk).update(custom={"channels": ["Email", "Fax"]})
    response = page.post(f"/contacts/{contact.pk}/edit/", {
        "name": "Ana", "phone": "+15615557007", "company": "New Co", "cf_channels": ["Email", "Fax"],
    })
    assert response.status_code == 302
    contact.refresh_from_db()
    assert contact.company == "New Co" and contact.custom == {"channels": ["Email", "Fax"]}


# --- 4. XLSX cells with control characters ------------------------------------------------------

def test_xlsx_export_removes_characters_a_workbook_cannot_hold(page, staff_user, bot):
    CustomFieldFactory(key="note", type="text")
    # Written before control characters were refused at the door: the export still copes with them.
    assert bot.post("contacts/upsert", {"phone": "+15615557008", "name": "Ctl Name"}).status_code == 201
    Contact.objects.update(owner=staff_user, name="Ctl\x08Name", custom={"note": "\x1f=HYPERLINK(1)"})
    response = page.get("/contacts/export/", {"format": "xlsx", "cols": ["name", "cf.note"]})
    assert response.status_code == 200
    sheet = load_workbook(io.BytesIO(b"".join(response.streaming_content))).active
    assert [c.value for c in sheet[2]] == ["CtlName", "'=HYPERLINK(1)"]
    as_csv = page.get("/contacts/export/", {"format": "csv", "cols": ["name"]})
    rows = list(csv.reader(io.StringIO(b"".join(as_csv.streaming_content).decode("utf-8-sig"))))
    assert rows[1] == ["Ctl\x08Name"]


def test_admin_xlsx_export_drops_characters_a_cell_cannot_hold(admin_client):
    import io

    import openpyxl
    from django.urls import reverse

    from contacts.models import Contact
    from tests.contacts.test_export import export_via_admin

    Contact.objects.create(name="Ctl\x0b=SUM(1)", source="manual")
    assert admin_client.get(reverse("admin:contacts_contact_export")).status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(export_via_admin(admin_client, "xlsx"))).active
    header = [c.value for c in sheet[1]]
    assert dict(zip(header, [c.value for c in sheet[2]], strict=False))["name"] == "Ctl=SUM(1)"
