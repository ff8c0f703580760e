"""Dedup keys from messy input: one person, one key, whatever Unicode or dialling habit wrote it."""

import pytest

from contacts import services
from contacts.models import Contact, Source
from contacts.normalize import MAX_EXTENSION, ExtensionTooLong, InvalidPhone, parse_phone
from crm_hub.errors import InputRejected
from tests.api.factories import AgentClient, make_agent
from tests.contacts.factories import ContactFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def bot():
    _agent, token = make_agent("messy-bot", scopes=["contacts:read", "contacts:write"])
    return AgentClient(token)


def upsert(actor, **data):
    return services.upsert_contact(data=data, actor=actor, source=Source.API)


# --- emails -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "key"),
    [
        ("a@\u00e9mail.com", "a@e\u0301mail.com", "a@\u00e9mail.com"),  # composed / decomposed é
        ("a@e\u0301mail.com", "A@xn--mail-9oa.com", "a@\u00e9mail.com"),
        ("x@example.com", "x@example.com\u200b", "x@example.com"),  # trailing zero-width space
        ("x@example.com", "\u200bx@example.com", "x@example.com"),
        ("x@example.com", "x@exa\u00admple.com", "x@example.com"),  # soft hyphen
        ("x@example.com", "x@example.com\u200e", "x@example.com"),  # left-to-right mark
        (
            "x@example.com",
            "x@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",
            "x@example.com",
        ),  # full-width
        ("x@example.com", "x@EXAMPLE\u3002com", "x@example.com"),  # ideographic full stop
        ("x@stra\u00dfe.de", "x@xn--strae-oqa.de", "x@stra\u00dfe.de"),  # IDNA2008 keeps ß
        ("x@xn--strae-oqa.de", "X@STRA\u00dfE.DE", "x@stra\u00dfe.de"),
    ],
)
def test_one_email_written_two_ways_is_one_contact(agent_actor, first, second, key):
    created = upsert(agent_actor, name="Ana", email=first)
    again = upsert(agent_actor, email=second, company="Acme")
    assert created.created and not again.created
    assert again.matched_by == "email" and again.contact.pk == created.contact.pk
    assert Contact.objects.get().email_normalized == key


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("x@stra\u00dfe.de", "x@strasse.de"),  # two domains under IDNA2008 (IDNA2003 read ß as ss)
        ("a+sales@example.com", "a@example.com"),  # plus-addressing is not merged
    ],
)
def test_different_addresses_stay_two_contacts(agent_actor, one, other):
    upsert(agent_actor, name="One", email=one)
    upsert(agent_actor, name="Other", email=other)
    assert Contact.objects.count() == 2


def test_agent_upsert_with_an_invisible_character_in_the_email_finds_the_contact(bot):
    first = bot.post("contacts/upsert", {"name": "Ana", "email": "ana@straße.de"})
    again = bot.post("contacts/upsert", {"email": "ana@xn--strae-oqa.de\u200b", "company": "Acme"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["contact"]["id"] == first.json()["contact"]["id"]
    assert Contact.objects.get().email_normalized == "ana@stra\u00dfe.de"


def test_agent_lookup_by_email_finds_the_contact_in_any_spelling(bot):
    contact = bot.post("contacts/upsert", {"name": "Ana", "email": "a@\u00e9mail.com"}).json()[
        "contact"
    ]
    found = bot.get("contacts", {"email": "a@e\u0301mail.com\u00ad"})
    assert found.status_code == 200
    assert [c["id"] for c in found.json()["results"]] == [contact["id"]]


# --- phone extensions -------------------------------------------------------------------------


def test_the_extension_limit_is_the_columns():
    assert MAX_EXTENSION == Contact._meta.get_field("phone_extension").max_length == 12


def test_an_over_long_extension_is_refused_with_a_message_saying_the_limit():
    assert parse_phone("+1 561 555 0192 ext. " + "1" * 12).extension == "1" * 12
    with pytest.raises(ExtensionTooLong, match="^the extension has at most 12 digits$") as caught:
        parse_phone("+1 561 555 0192 ext. " + "1" * 13)
    # Every caller that catches InvalidPhone refuses it.
    assert isinstance(caught.value, InvalidPhone)


@pytest.mark.parametrize("digits", [13, 16, 20])
def test_upsert_refuses_an_over_long_extension_as_invalid_phone(agent_actor, digits):
    with pytest.raises(InputRejected) as caught:
        upsert(agent_actor, name="Ana", phone="+1 561 555 0192 ext. " + "7" * digits)
    assert [(e.field, e.code) for e in caught.value.errors] == [("phone", "invalid_phone")]
    assert not Contact.objects.exists()


def test_agent_upsert_with_an_over_long_extension_is_a_400_naming_the_phone(bot):
    response = bot.post(
        "contacts/upsert", {"name": "Ana", "phone": "+1 561 555 0192 ext. 1234567890123"}
    )
    assert response.status_code == 400
    assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [
        ("phone", "invalid_phone")
    ]
    assert not Contact.objects.exists()


def test_batch_upsert_refuses_only_the_item_with_an_over_long_extension(bot):
    response = bot.post(
        "contacts/batch-upsert",
        {
            "contacts": [
                {"name": "Kept", "phone": "+15615557201 ext. 123456789012"},
                {"name": "Too long", "phone": "+15615557202 ext. 12345678901234567890"},
                {"name": "Also kept", "phone": "+15615557203"},
            ]
        },
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 400, 201]
    assert (results[1]["errors"][0]["field"], results[1]["errors"][0]["code"]) == (
        "contacts.1.phone",
        "invalid_phone",
    )
    assert sorted(Contact.objects.values_list("name", "phone_extension")) == [
        ("Also kept", ""),
        ("Kept", "123456789012"),
    ]


# --- phone formats ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "\uff10\uff1044 20 7946 0958",  # full-width 00 prefix
        "\uff0b44 20 7946 0958",  # full-width plus
        "\u0660\u066044 20 7946 0958",  # Arabic-Indic 00 prefix
        "0044 20 7946 0958",
    ],
)
def test_the_00_prefix_works_in_any_digits(agent_actor, spelling):
    first = upsert(agent_actor, name="Liam", phone="+44 20 7946 0958")
    again = upsert(agent_actor, phone=spelling, company="Acme")
    assert again.contact.pk == first.contact.pk and again.matched_by == "phone"
    assert Contact.objects.get().phone_e164 == "+442079460958"


@pytest.mark.parametrize(
    "spelling", ["+52 1 55 1234 5678", "+5215512345678", "0052 1 55 1234 5678"]
)
def test_a_mexican_mobile_with_the_old_1_is_the_same_contact(agent_actor, spelling):
    first = upsert(agent_actor, name="Sofía", phone="+52 55 1234 5678")
    again = upsert(agent_actor, phone=spelling, company="Acme")
    assert again.contact.pk == first.contact.pk
    assert Contact.objects.get().phone_e164 == "+525512345678"


def test_agent_upsert_accepts_a_whatsapp_mexican_number(bot):
    response = bot.post("contacts/upsert", {"name": "Sofía", "phone": "+52 1 81 1234 5678"})
    assert response.status_code == 201, response.content
    assert response.json()["contact"]["phone_e164"] == "+528112345678"


def test_a_mexican_number_that_is_invalid_without_the_1_is_still_refused(agent_actor):
    with pytest.raises(InputRejected) as caught:
        upsert(agent_actor, name="Sofía", phone="+52 1 234 567 890")
    assert caught.value.errors[0].code == "invalid_phone"


def test_migration_0011_moves_stored_keys_to_the_new_spelling_and_flags_clashes():
    import importlib

    from django.apps import apps

    from contacts.models import PossibleDuplicate

    migration = importlib.import_module("contacts.migrations.0011_email_keys_uts46")
    # Stored under the old rules: ß decoded by the IDNA2003 codec failed, so the punycode stayed.
    alone = ContactFactory(email="a@xn--strae-oqa.de", email_normalized="a@xn--strae-oqa.de")
    invisible = ContactFactory(email="x@exa\u00admple.com", email_normalized="x@exa\u00admple.com")
    twin = ContactFactory(email="b@xn--strae-oqa.de", email_normalized="b@xn--strae-oqa.de")
    holder = ContactFactory(email="b@straße.de", email_normalized="b@straße.de")
    plain = ContactFactory(email="Plain@Example.com", email_normalized="plain@example.com")
    migration.recompute_keys(apps, None)
    migration.recompute_keys(apps, None)  # twice: nothing more happens
    for contact in (alone, invisible, twin, holder, plain):
        contact.refresh_from_db()
    assert alone.email_normalized == "a@straße.de"
    assert invisible.email_normalized == "x@example.com"
    assert twin.email_normalized == "b@xn--strae-oqa.de"
    assert plain.email_normalized == "plain@example.com"
    flag = PossibleDuplicate.objects.get()
    assert (flag.contact_id, flag.other_id, flag.status) == (twin.pk, holder.pk, "open")


@pytest.mark.parametrize("spelling", ["x", " x ", " X", " ext. ", ";ext="])
@pytest.mark.parametrize("digits", ["1234567890", "123456789012"])
def test_a_long_extension_reads_the_same_whatever_its_marker(spelling, digits):
    from contacts.normalize import parse_phone

    assert parse_phone(f"+1 202 555 0305{spelling}{digits}") == parse_phone(f"+1 202 555 0305 ext. {digits}")
    assert parse_phone(f"+1 202 555 0305{spelling}{digits}").extension == digits


# Addresses whose verdict depends on each part of Django's check: the user part, the domain, the
# length limit, the allow-listed "localhost", an IP literal. The key's domain verdict is remembered
# between calls, so each is asked twice, and after another address on the same domain.
EMAIL_VERDICTS = [
    ("ana@example.com", True),
    ("ana.b+tag@example.com", True),
    ("ana..b@example.com", False),
    (".ana@example.com", False),
    ('"ana"@example.com', True),
    ('"ana b"@example.com', False),
    ("ana@localhost", True),
    ("ana@[192.168.0.1]", True),
    ("ana@[300.1.1.1]", False),
    ("ana@example", False),
    ("ana@-example.com", False),
    ("ana@exa_mple.com", False),
    ("ana@example..com", False),
    ("@example.com", False),
    ("ana@", False),
    ("ana@b@example.com", False),
    ("a" * 64 + "@" + "b" * 63 + ".com", True),
    ("a" * 260 + "@" + "b" * 63 + ".com", False),  # over 320 characters with the domain
    ("ana@" + ".".join(["b" * 60] * 5) + ".com", True),
]


def _accepted(address: str) -> bool:
    from contacts.normalize import InvalidEmail, email_normalize

    try:
        email_normalize(address)
    except InvalidEmail:
        return False
    return True


@pytest.mark.parametrize(("address", "valid"), EMAIL_VERDICTS)
def test_email_normalize_accepts_exactly_what_djangos_validator_accepts(address, valid):
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    try:
        validate_email(address)
        django_valid = True
    except ValidationError:
        django_valid = False
    assert django_valid is valid  # the table itself is right
    assert _accepted(address) is valid and _accepted(address) is valid, address  # the second from memory
    domain = address.rpartition("@")[2]
    if domain:
        _accepted(f"x.y@{domain}")  # the domain's verdict remembered from another address
        assert _accepted(address) is valid, address
