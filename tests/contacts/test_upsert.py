import pytest

from contacts import services
from contacts.models import (
    ChangeRequest,
    Contact,
    ContactTag,
    HistoryEntry,
    PossibleDuplicate,
    Source,
)
from crm_hub.errors import InputRejected
from tests.contacts.factories import PipelineFactory, StageFactory, TagFactory

pytestmark = pytest.mark.django_db


def upsert(actor, **data):
    return services.upsert_contact(data=data, actor=actor, source=Source.API)


@pytest.mark.parametrize(
    "phone", ["(561) 555-0192", "561.555.0192", "+1 561 555 0192", "5615550192", "+1-561-555-0192", "001 561 555 0192"]
)
def test_upsert_with_phone_in_other_format_updates_existing(agent_actor, phone):
    first = upsert(agent_actor, name="Marcus", phone="561-555-0192")
    again = upsert(agent_actor, phone=phone, company="Acme")
    assert first.created and not again.created
    assert again.matched_by == "phone"
    assert again.contact.pk == first.contact.pk
    assert Contact.objects.count() == 1
    assert Contact.objects.get().phone_e164 == "+15615550192"


def test_all_formats_of_one_person_are_one_contact(agent_actor):
    for phone in ["(561) 555-0192", "561.555.0192", "+1 561 555 0192"]:
        upsert(agent_actor, name="Marcus", phone=phone)
    upsert(agent_actor, email="MARCUS@Email.com")
    contact = Contact.objects.get(phone_e164="+15615550192")
    # the email went onto the phone contact? No: email alone creates a lookup by email only.
    assert Contact.objects.filter(email_normalized="marcus@email.com").count() == 1
    upsert(agent_actor, phone="561.555.0192", email="marcus@email.com")
    upsert(agent_actor, email="marcus@EMAIL.com", name="Marcus")
    assert Contact.objects.filter(phone_e164="+15615550192").count() == 1
    assert Contact.objects.filter(email_normalized="marcus@email.com").count() == 1
    assert contact.pk == Contact.objects.get(phone_e164="+15615550192").pk


def test_email_match_is_case_insensitive(agent_actor):
    first = upsert(agent_actor, name="Marcus", email="MARCUS@Email.com")
    again = upsert(agent_actor, email="marcus@email.com", company="Acme")
    assert again.contact.pk == first.contact.pk
    assert again.matched_by == "email"
    assert Contact.objects.get().email_normalized == "marcus@email.com"
    assert Contact.objects.get().email == "MARCUS@Email.com"


def test_unicode_and_punycode_spellings_of_an_email_are_one_contact(agent_actor):
    first = upsert(agent_actor, name="Marcus", email="marcus@émail.com")
    again = upsert(agent_actor, email="MARCUS@xn--mail-9oa.com", company="Acme")
    assert again.contact.pk == first.contact.pk and again.matched_by == "email"
    assert Contact.objects.get().email_normalized == "marcus@émail.com"


def test_migration_moves_punycode_email_keys_to_unicode_and_flags_clashes(db):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("contacts.migrations.0008_email_keys_in_unicode_domain_form")
    alone = Contact.objects.create(name="A", email="a@xn--mail-9oa.com", email_normalized="a@xn--mail-9oa.com", source="api")
    twin = Contact.objects.create(name="B", email="b@xn--mail-9oa.com", email_normalized="b@xn--mail-9oa.com", source="api")
    holder = Contact.objects.create(name="B2", email="b@émail.com", email_normalized="b@émail.com", source="api")
    migration.to_unicode_domains(apps, None)
    migration.to_unicode_domains(apps, None)  # twice: nothing more happens
    alone.refresh_from_db()
    twin.refresh_from_db()
    assert alone.email_normalized == "a@émail.com"
    assert twin.email_normalized == "b@xn--mail-9oa.com"
    flag = PossibleDuplicate.objects.get()
    assert (flag.contact_id, flag.other_id, flag.status) == (twin.pk, holder.pk, "open")


def test_phone_extension_is_kept_and_does_not_split_the_person(agent_actor):
    first = upsert(agent_actor, name="Desk", phone="+1 561 555 0192 ext. 42")
    assert first.contact.phone_e164 == "+15615550192"
    assert first.contact.phone_extension == "42"
    assert upsert(agent_actor, phone="5615550192").contact.pk == first.contact.pk


def test_national_number_uses_default_region_setting(agent_actor, settings):
    settings.CRM_DEFAULT_PHONE_REGION = "BR"
    result = upsert(agent_actor, name="Ana", phone="(11) 98765-4321")
    assert result.contact.phone_e164 == "+5511987654321"


@pytest.mark.parametrize("phone", ["12", "not a phone", "+1 555 0000", "555-0192"])
def test_invalid_phone_is_refused_with_field_named(agent_actor, phone):
    with pytest.raises(InputRejected) as caught:
        upsert(agent_actor, name="X", phone=phone)
    assert [(e.field, e.code) for e in caught.value.errors] == [("phone", "invalid_phone")]
    assert Contact.objects.count() == 0


@pytest.mark.parametrize("email", ["marcus@", "marcus.email.com", "a b@c.com", "x@y"])
def test_invalid_email_is_refused_with_field_named(agent_actor, email):
    with pytest.raises(InputRejected) as caught:
        upsert(agent_actor, name="X", email=email)
    assert [(e.field, e.code) for e in caught.value.errors] == [("email", "invalid_email")]
    assert Contact.objects.count() == 0


def test_every_bad_field_is_named_at_once(agent_actor):
    with pytest.raises(InputRejected) as caught:
        services.upsert_contact(
            data={"phone": "12", "email": "nope", "colour": "red", "birthday": "31/02/2000"},
            tags=["no-such-tag"], actor=agent_actor, source=Source.API,
        )
    assert {e.field for e in caught.value.errors} == {"phone", "email", "colour", "birthday", "tags"}


def test_phone_email_conflict_writes_to_phone_match_and_flags_duplicate(agent_actor):
    by_phone = upsert(agent_actor, name="Phone Person", phone="+1 561 555 0192").contact
    by_email = upsert(agent_actor, name="Email Person", email="marcus@email.com", company="B Corp").contact
    before = Contact.objects.values().get(pk=by_email.pk)

    result = upsert(agent_actor, phone="561-555-0192", email="Marcus@Email.com", company="Acme")

    assert result.contact.pk == by_phone.pk
    assert result.matched_by == "phone"
    assert result.possible_duplicates == [by_email.pk]
    assert Contact.objects.count() == 2
    by_phone.refresh_from_db()
    assert by_phone.company == "Acme"
    assert by_phone.email_normalized == ""  # the email stays with its owner
    after = Contact.objects.values().get(pk=by_email.pk)
    assert after == before
    flag = PossibleDuplicate.objects.get()
    assert (flag.contact_id, flag.other_id, flag.status) == (by_phone.pk, by_email.pk, "open")
    assert by_phone.history.filter(action=HistoryEntry.Action.POSSIBLE_DUPLICATE).exists()


def test_unknown_tag_is_refused_with_allowed_list_and_nothing_written(agent_actor):
    TagFactory(name="VIP")
    TagFactory(name="lead")
    with pytest.raises(InputRejected) as caught:
        services.upsert_contact(data={"name": "Ana", "phone": "+15615550100"}, tags=["vip", "hot"], actor=agent_actor, source=Source.API)
    error = caught.value.errors[0]
    assert (error.field, error.code) == ("tags", "unknown_tag")
    assert error.allowed == ["lead", "VIP"]
    assert Contact.objects.count() == 0
    assert HistoryEntry.objects.count() == 0


def test_unknown_stage_is_refused_with_allowed_list_and_nothing_written(agent_actor):
    stage = StageFactory(name="New", pipeline=PipelineFactory(name="Sales"))
    StageFactory(name="Won", pipeline=stage.pipeline)
    contact = upsert(agent_actor, name="Ana").contact
    with pytest.raises(InputRejected) as caught:
        services.move_to_stage(contact=contact, pipeline="Sales", stage="Closed", actor=agent_actor, source=Source.API)
    error = caught.value.errors[0]
    assert (error.field, error.code, error.allowed) == ("stage", "unknown_stage", ["New", "Won"])
    with pytest.raises(InputRejected) as caught:
        services.move_to_stage(contact=contact, pipeline="Support", stage="New", actor=agent_actor, source=Source.API)
    assert (caught.value.errors[0].code, caught.value.errors[0].allowed) == ("unknown_pipeline", ["Sales"])
    assert not contact.stage_memberships.exists()


def test_intake_with_unknown_stage_writes_nothing(agent_actor):
    StageFactory(name="New", pipeline=PipelineFactory(name="Sales"))
    TagFactory(name="lead")
    with pytest.raises(InputRejected) as caught:
        services.record_intake(
            contact={"name": "Ana", "phone": "+15615550100"}, note="Talked", tags=["lead"],
            pipeline="Sales", stage="Qualified", task={"title": "Call", "due_at": "2026-12-01T10:00:00Z"},
            actor=agent_actor,
        )
    assert [e.code for e in caught.value.errors] == ["unknown_stage"]
    assert Contact.objects.count() == 0 and ContactTag.objects.count() == 0


def test_agent_overwrite_of_phone_becomes_change_request(agent_actor, staff_user):
    contact = upsert(agent_actor, name="Ana", email="ana@example.com", phone="+15615550100").contact
    result = upsert(agent_actor, email="ana@example.com", identity="123", name="Ana Maria")
    # email matched; phone not sent; identity was empty so it is filled directly
    assert result.contact.identity == "123" and not result.pending_changes
    result = upsert(agent_actor, email="ana@example.com", identity="999")
    assert [(c.field, c.old_value, c.new_value) for c in result.pending_changes] == [("identity", "123", "999")]
    contact.refresh_from_db()
    assert contact.identity == "123"
    # a retry asks once
    again = upsert(agent_actor, email="ana@example.com", identity="999")
    assert ChangeRequest.objects.count() == 1 and again.pending_changes[0].pk == result.pending_changes[0].pk
    services.approve_change_request(request=result.pending_changes[0], user=staff_user)
    contact.refresh_from_db()
    assert contact.identity == "999"


def test_staff_overwrite_applies_directly(staff_actor):
    upsert(staff_actor, name="Ana", email="ana@example.com", identity="1")
    result = upsert(staff_actor, email="ana@example.com", identity="2")
    assert result.contact.identity == "2" and not result.pending_changes


def test_source_is_set_at_creation_and_never_changes(agent_actor, staff_actor):
    created = services.upsert_contact(data={"name": "A", "phone": "+15615550100"}, actor=agent_actor, source=Source.CHAT)
    services.upsert_contact(data={"phone": "+15615550100", "company": "X"}, actor=staff_actor, source=Source.MANUAL)
    assert Contact.objects.get(pk=created.contact.pk).source == Source.CHAT


def test_empty_values_in_upsert_never_clear_fields(agent_actor):
    upsert(agent_actor, name="Ana", phone="+15615550100", company="Acme")
    upsert(agent_actor, phone="+15615550100", company="", name=None)
    contact = Contact.objects.get()
    assert (contact.name, contact.company) == ("Ana", "Acme")


def test_two_requests_for_one_field_cannot_both_be_approved(agent_actor):
    from tests.contacts.factories import UserFactory

    upsert(agent_actor, name="Ana", phone="5615550192", email="ana@old.example")
    first = upsert(agent_actor, phone="5615550192", email="ana@one.example").pending_changes[0]
    second = upsert(agent_actor, phone="5615550192", email="ana@two.example").pending_changes[0]
    staff = UserFactory(username="reviewer")
    services.approve_change_request(request=second, user=staff)
    with pytest.raises(InputRejected) as caught:
        services.approve_change_request(request=first, user=staff)
    assert [(e.field, e.code) for e in caught.value.errors] == [("email", "stale")]
    assert Contact.objects.get().email == "ana@two.example"
    assert ChangeRequest.objects.get(pk=first.pk).status == "pending"
