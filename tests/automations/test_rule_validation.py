"""A rule whose custom-field condition no contact can meet is refused when it is saved."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from automations.models import Rule
from contacts import services
from contacts.models import Source
from crm_hub.actors import Actor
from tests.automations.factories import RuleFactory
from tests.contacts.factories import CustomFieldFactory, UserFactory

pytestmark = pytest.mark.django_db

SYSTEM = Actor.for_system("test")


@pytest.fixture
def custom_fields(db):
    return {
        "plan": CustomFieldFactory(key="plan", label="Plan", type="single_choice", choices=["Basic", "Pro"]),
        "vip": CustomFieldFactory(key="vip", label="VIP", type="boolean"),
        "seats": CustomFieldFactory(key="seats", label="Seats", type="number"),
        "interests": CustomFieldFactory(key="interests", label="Interests", type="multiple_choice", choices=["crm", "erp"]),
    }


def rule_form_data(**conditions):
    return {
        "name": "VIP to Ada", "position": 0, "active": "on", "trigger": "contact_created",
        "assign_only_if_unowned": "on", "stage_only_if_not_in_pipeline": "on", "task_due_unit": "days",
        **conditions,
    }


def test_admin_refuses_an_unknown_custom_field_key_and_lists_the_existing_ones(admin_client, custom_fields):
    response = admin_client.post(
        reverse("admin:automations_rule_add"),
        rule_form_data(custom_field_key="no_such_field", custom_field_value="x"),
    )

    assert response.status_code == 200 and not Rule.objects.exists()
    errors = response.context["adminform"].form.errors
    assert errors["custom_field_key"] == [
        "There is no custom field 'no_such_field'. Existing keys: interests, plan, seats, vip."
    ]


def test_admin_refuses_a_value_the_field_can_never_hold(admin_client, custom_fields):
    response = admin_client.post(
        reverse("admin:automations_rule_add"), rule_form_data(custom_field_key="plan", custom_field_value="Gold"),
    )

    assert response.status_code == 200 and not Rule.objects.exists()
    (message,) = response.context["adminform"].form.errors["custom_field_value"]
    assert "'Gold' is not one of the allowed choices" in message and "Allowed: Basic, Pro." in message


@pytest.mark.parametrize(
    ("key", "value"),
    [("vip", "maybe"), ("seats", "a dozen"), ("interests", "hr")],
)
def test_model_validation_refuses_values_of_the_wrong_type_or_choice(custom_fields, key, value):
    rule = Rule(name="r", trigger="contact_created", custom_field_key=key, custom_field_value=value)
    with pytest.raises(ValidationError) as caught:
        rule.full_clean()
    assert set(caught.value.message_dict) == {"custom_field_value"}


def test_a_value_written_another_way_is_saved_as_contacts_store_it_and_the_rule_fires(admin_client, custom_fields):
    ada = UserFactory(username="ada")
    response = admin_client.post(
        reverse("admin:automations_rule_add"),
        rule_form_data(custom_field_key="vip", custom_field_value="Yes", assign_mode="fixed", assign_user=ada.pk),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Rule.objects.get().custom_field_value == "true"

    contact = services.upsert_contact(data={"name": "Bea"}, custom={"vip": True}, actor=SYSTEM, source=Source.API).contact
    assert contact.owner == ada


def test_a_multiple_choice_condition_is_saved_with_the_option_spelling(custom_fields):
    rule = RuleFactory(custom_field_key="interests", custom_field_value="ERP")
    rule.full_clean()
    assert rule.custom_field_value == "erp"


@pytest.mark.parametrize(("amount", "unit", "field"), [(999_999_999, "days", "task_due_amount"), (3651, "days", "task_due_amount")])
def test_a_due_offset_past_ten_years_is_refused(amount, unit, field):
    rule = RuleFactory.build(task_title="Call", task_due_amount=amount, task_due_unit=unit)
    with pytest.raises(ValidationError) as caught:
        rule.clean()
    assert field in caught.value.message_dict


def test_a_form_trigger_on_a_form_that_does_not_exist_is_refused():
    rule = RuleFactory.build(trigger="form_submitted", form_id=424242)
    with pytest.raises(ValidationError) as caught:
        rule.clean()
    assert "form_id" in caught.value.message_dict


def test_a_due_offset_of_ten_years_is_fine():
    RuleFactory.build(task_title="Call", task_due_amount=3650, task_due_unit="days").clean()


def test_admin_refuses_actions_that_could_only_fail_or_drop_their_event(admin_client):
    from automations.models import WebhookEndpoint
    from tests.automations.factories import TeamFactory, TeamMemberFactory

    empty = TeamFactory(name="Night shift")
    TeamMemberFactory(team=empty, user=UserFactory(username="left", is_active=False))
    gone = UserFactory(username="gone", is_active=False)
    endpoint = WebhookEndpoint.objects.create(url="https://hooks.example.com/a", events=["contact.created"], secret="s")
    off = WebhookEndpoint.objects.create(url="https://hooks.example.com/off", events=["contact.updated"], secret="s",
                                         active=False)
    cases = {
        "assign_team": dict(assign_mode="round_robin", assign_team=empty.pk),
        "assign_user": dict(assign_mode="fixed", assign_user=gone.pk),
        "webhook_event": dict(webhook_endpoint=endpoint.pk),
    }
    expected = {
        "assign_team": "Team Night shift has no active members",
        "assign_user": "gone is inactive",
        "webhook_event": "Choose the event to send",
    }
    for field, data in cases.items():
        response = admin_client.post(reverse("admin:automations_rule_add"), rule_form_data(**data))
        assert response.status_code == 200, field
        assert expected[field] in response.context["adminform"].form.errors[field][0]
    response = admin_client.post(reverse("admin:automations_rule_add"),
                                 rule_form_data(webhook_event="contact.updated", webhook_endpoint=endpoint.pk))
    (message,) = response.context["adminform"].form.errors["webhook_endpoint"]
    assert "is not subscribed to contact.updated (it receives: contact.created)" in message
    response = admin_client.post(reverse("admin:automations_rule_add"),
                                 rule_form_data(webhook_event="contact.updated", webhook_endpoint=off.pk))
    assert "is disabled" in response.context["adminform"].form.errors["webhook_endpoint"][0]
    assert not Rule.objects.exists()
    # The same rules save once they can work, and an inactive rule may wait for its team.
    TeamMemberFactory(team=empty, user=UserFactory(username="ada"))
    for data in (dict(assign_mode="round_robin", assign_team=empty.pk),
                 dict(webhook_event="contact.updated")):
        assert admin_client.post(reverse("admin:automations_rule_add"), rule_form_data(**data)).status_code == 302
    waiting = rule_form_data(assign_mode="round_robin", assign_team=TeamFactory(name="New team").pk)
    waiting.pop("active")
    assert admin_client.post(reverse("admin:automations_rule_add"), waiting).status_code == 302
    assert Rule.objects.count() == 3


def test_admin_refuses_a_task_due_at_once_and_a_fixed_owner_who_cannot_sign_in(admin_client):
    outsider = UserFactory(username="outsider", is_staff=False)
    response = admin_client.post(reverse("admin:automations_rule_add"), rule_form_data(task_title="Call", task_due_amount=0))
    assert "At least 1" in response.context["adminform"].form.errors["task_due_amount"][0]
    response = admin_client.post(reverse("admin:automations_rule_add"),
                                 rule_form_data(assign_mode="fixed", assign_user=outsider.pk))
    assert "cannot sign in" in response.context["adminform"].form.errors["assign_user"][0]
    assert not Rule.objects.exists()


def test_a_rule_task_due_in_days_keeps_the_local_time_across_a_dst_change(settings):
    import datetime as dt
    import zoneinfo

    from freezegun import freeze_time

    from contacts.models import Task
    from tests.contacts.factories import TagFactory

    settings.TIME_ZONE = "Europe/Berlin"
    vip = TagFactory(name="vip")
    RuleFactory(trigger="tag_added", tag=vip, task_title="VIP call", task_due_amount=1, task_due_unit="days")
    contact = services.upsert_contact(data={"name": "Ana"}, actor=SYSTEM, source=Source.API).contact
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    with freeze_time(dt.datetime(2026, 3, 28, 10, 0, tzinfo=berlin)):  # the clocks go forward that night
        services.add_tags(contact=contact, tags=["vip"], actor=SYSTEM, source=Source.API)
    due = Task.objects.get().due_at.astimezone(berlin)
    assert (due.date(), due.hour, due.minute) == (dt.date(2026, 3, 29), 10, 0)


def test_a_task_never_goes_to_a_deactivated_owner():
    from contacts.models import Task

    gone = UserFactory(username="gone-owner")
    contact = services.upsert_contact(data={"name": "Ana", "owner": gone.pk}, actor=SYSTEM, source=Source.API).contact
    type(gone).objects.filter(pk=gone.pk).update(is_active=False)
    contact.refresh_from_db()
    task = services.create_task(contact=contact, title="Call", due_at="2031-01-01", actor=SYSTEM, source=Source.API)
    assert Task.objects.get(pk=task.pk).assignee is None


def test_a_rule_sends_only_events_whose_payload_is_the_contact(admin_client):
    response = admin_client.post(reverse("admin:automations_rule_add"), rule_form_data(trigger="tag_added",
                                                                                      webhook_event="note.created"))
    assert "note.created receivers expect something else" in response.context["adminform"].form.errors["webhook_event"][0]
    response = admin_client.post(reverse("admin:automations_rule_add"), rule_form_data(trigger="tag_added",
                                                                                      webhook_event="contact.created"))
    assert "webhook_event" in response.context["adminform"].form.errors
    # Every new contact is sent as contact.created already: a rule sending it again doubled it.
    response = admin_client.post(reverse("admin:automations_rule_add"), rule_form_data(webhook_event="contact.created"))
    assert "deliver it twice" in response.context["adminform"].form.errors["webhook_event"][0]
    assert admin_client.post(reverse("admin:automations_rule_add"),
                             rule_form_data(webhook_event="contact.updated")).status_code == 302


def test_admin_refuses_a_rule_with_no_action_or_a_task_without_a_title(admin_client):
    response = admin_client.post(reverse("admin:automations_rule_add"), rule_form_data())
    assert response.status_code == 200 and not Rule.objects.exists()
    assert "The rule does nothing" in str(response.context["adminform"].form.non_field_errors())
    response = admin_client.post(reverse("admin:automations_rule_add"),
                                 rule_form_data(task_due_amount=5, task_due_unit="days", webhook_event=""))
    assert response.status_code == 200 and not Rule.objects.exists()
    assert response.context["adminform"].form.errors["task_title"] == [
        "Give the task a title, or leave when it is due empty (no task)."]
