"""Number and decimal custom values written with separators: read by one rule, never 1000x off.

The rule (contacts.normalize.number_from_text): a comma groups thousands by three ("5,000",
"1,234,567.89"); a lone comma is a decimal comma only where it cannot be a thousands separator
("12,5", "0,125"); anything else with a comma is refused, naming the shapes that are read.
"""

import pytest
from django.test import Client

from contacts import services
from contacts.models import Contact, CustomField, Source
from crm_hub.errors import InputRejected
from tests.api.factories import AgentClient, make_agent
from tests.contacts.factories import CustomFieldFactory
from tests.contacts.test_import import do_import
from tests.contacts.ui_helpers import make_contact

pytestmark = pytest.mark.django_db
T = CustomField.Type


@pytest.fixture
def bot():
    _agent, token = make_agent("number-bot", scopes=["contacts:read", "contacts:write"])
    return AgentClient(token)


def upsert_custom(actor, raw, kind):
    CustomFieldFactory(key="f", type=kind)
    return services.upsert_contact(
        data={"name": "Ana"}, custom={"f": raw}, actor=actor, source=Source.MANUAL
    ).contact


def test_agent_upsert_reads_thousands_separators_as_thousands(bot):
    CustomFieldFactory(key="budget", type=T.DECIMAL)
    CustomFieldFactory(key="intent_score", type=T.NUMBER)
    response = bot.post(
        "contacts/upsert",
        {"phone": "+15615557100", "custom": {"budget": "5,000", "intent_score": "1,000"}},
    )
    assert response.status_code == 201, response.content
    assert response.json()["contact"]["custom"] == {"budget": "5000", "intent_score": 1000}
    assert Contact.objects.get().custom == {"budget": "5000", "intent_score": 1000}


@pytest.mark.parametrize(
    ("kind", "raw", "stored"),
    [
        (T.NUMBER, "5,000", 5000),
        (T.NUMBER, "1,000", 1000),
        (T.NUMBER, "-1,000", -1000),
        (T.NUMBER, "1,234,567.89", 1234567.89),
        (T.NUMBER, "12,5", 12.5),
        (T.NUMBER, "0,125", 0.125),
        (T.NUMBER, "５,０００", 5000),
        (T.NUMBER, "1250.5", 1250.5),
        (T.DECIMAL, "5,000", "5000"),
        (T.DECIMAL, "1,000", "1000"),
        (T.DECIMAL, "1,234,567.89", "1234567.89"),
        (T.DECIMAL, "-1,000.50", "-1000.50"),
        (T.DECIMAL, "3,75", "3.75"),
        (T.DECIMAL, "12,50", "12.50"),
        (T.DECIMAL, "1250.00", "1250.00"),
    ],
)
def test_number_and_decimal_values_with_separators_store_what_was_meant(
    staff_actor, kind, raw, stored
):
    contact = upsert_custom(staff_actor, raw, kind)
    assert Contact.objects.get(pk=contact.pk).custom == {"f": stored}


@pytest.mark.parametrize("kind", [T.NUMBER, T.DECIMAL])
@pytest.mark.parametrize(
    "raw", ["1,00,0", "1.000,5", "1234,567", "05,000", "1,000,5", "5,", ",5", "1,2,3", "1_000", "0.5_0"]
)
def test_ambiguous_or_malformed_separators_are_refused_saying_what_is_read(staff_actor, kind, raw):
    with pytest.raises(InputRejected) as caught:
        upsert_custom(staff_actor, raw, kind)
    error = caught.value.errors[0]
    assert (error.field, error.code) == ("custom.f", "invalid_value")
    assert "5,000.50" in error.message and "12,5" in error.message
    assert not Contact.objects.exists()


def test_agent_gets_a_400_naming_the_field_for_an_ambiguous_number(bot):
    CustomFieldFactory(key="budget", type=T.DECIMAL)
    response = bot.post(
        "contacts/upsert", {"phone": "+15615557101", "custom": {"budget": "1.000,50"}}
    )
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert (error["field"], error["code"]) == ("custom.budget", "invalid_value")
    assert error["message"].startswith("Expected a decimal number, e.g. 5000, 5,000.50")
    assert not Contact.objects.exists()


def test_import_reads_thousands_separators_like_the_api(staff_actor):
    CustomFieldFactory(key="budget", label="Budget", type=T.NUMBER)
    job = do_import(
        staff_actor,
        [
            ["Ann", "a@example.com", "5,000"],
            ["Bob", "b@example.com", "1,00,0"],
            ["Cy", "c@example.com", "12,5"],
        ],
        headers=["Name", "Email", "Budget"],
    )
    assert (job.created_count, job.failed_count) == (2, 1)
    assert dict(Contact.objects.values_list("name", "custom")) == {
        "Ann": {"budget": 5000},
        "Cy": {"budget": 12.5},
    }


def test_web_edit_reads_thousands_separators_like_the_api(staff_user):
    CustomFieldFactory(key="budget", type=T.DECIMAL)
    contact = make_contact(staff_user, name="Ana", phone="+15615557102")
    page = Client()
    page.force_login(staff_user)
    response = page.post(
        f"/contacts/{contact.pk}/edit/",
        {"name": "Ana", "phone": "+15615557102", "cf_budget": "5,000"},
    )
    assert response.status_code == 302
    contact.refresh_from_db()
    assert contact.custom == {"budget": "5000"}


@pytest.mark.parametrize(("raw", "stored"), [("1e3", "1000"), ("2.5E-3", "0.0025"), ("5000.00", "5000.00")])
def test_a_decimal_is_stored_in_positional_notation(raw, stored):
    from contacts.custom_fields import clean_value
    from contacts.models import CustomField

    assert clean_value(CustomField(key="budget", label="Budget", type=CustomField.Type.DECIMAL), raw) == stored
