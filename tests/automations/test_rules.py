"""Automation rules through the contact services (and run_rules for the triggers other apps call)."""

import datetime as dt

import pytest
from django.utils import timezone

from automations.models import Rule, RuleRun, Team, Trigger
from automations.services import dry_run, run_rules
from contacts import services
from contacts.models import ContactStage, HistoryEntry, Source, Task
from crm_hub.actors import Actor
from tests.automations.factories import RuleFactory, TeamFactory, TeamMemberFactory
from tests.contacts.factories import CustomFieldFactory, StageFactory, TagFactory, UserFactory

pytestmark = pytest.mark.django_db

SYSTEM = Actor.for_system("test")


def create(phone="+14155550100", source=Source.API, **extra):
    data = {"name": "Ada", "phone": phone, **extra.pop("data", {})}
    return services.upsert_contact(data=data, actor=SYSTEM, source=source, **extra).contact


def team_of(*usernames):
    team = TeamFactory()
    users = [UserFactory(username=name) for name in usernames]
    for position, user in enumerate(users):
        TeamMemberFactory(team=team, user=user, position=position)
    return team, users


# --- Actions -------------------------------------------------------------------------------


def test_contact_created_assigns_fixed_owner_and_history_names_the_rule():
    bob = UserFactory(username="bob")
    rule = RuleFactory(name="Inbound to Bob", assign_mode=Rule.AssignMode.FIXED, assign_user=bob)

    contact = create()

    contact.refresh_from_db()
    assert contact.owner == bob
    entry = HistoryEntry.objects.get(contact=contact, action=HistoryEntry.Action.AUTOMATION)
    assert "Inbound to Bob" in entry.summary and "owner set to bob" in entry.summary
    assert entry.actor_label == f"automation rule {rule.pk}: Inbound to Bob"
    assert entry.changes["triggered_by"] == [None, "test"] and entry.changes["actions"] == [None, ["owner set to bob"]]
    owner_entry = HistoryEntry.objects.get(contact=contact, action=HistoryEntry.Action.UPDATED)
    assert owner_entry.changes == {"owner": ["", "bob"]}
    assert RuleRun.objects.get(rule=rule).status == RuleRun.Status.APPLIED


def test_round_robin_takes_turns_over_the_team_in_order():
    team, users = team_of("ann", "ben", "cat")
    RuleFactory(assign_mode=Rule.AssignMode.ROUND_ROBIN, assign_team=team)

    owners = [create(phone=f"+1415555010{i}").owner.username for i in range(7)]

    assert owners == ["ann", "ben", "cat", "ann", "ben", "cat", "ann"]
    assert Team.objects.get(pk=team.pk).turn == 7


def test_fewest_open_tasks_picks_the_least_loaded_member():
    team, (ann, ben, cat) = team_of("ann", "ben", "cat")
    other = create(phone="+14155550199")
    due = timezone.now() + dt.timedelta(days=1)
    for user, open_tasks in ((ann, 2), (ben, 1), (cat, 3)):
        for n in range(open_tasks):
            services.create_task(contact=other, title=f"t{n}", due_at=due, assignee=user, actor=SYSTEM, source=Source.API)
    done = services.create_task(contact=other, title="done", due_at=due, assignee=ben, actor=SYSTEM, source=Source.API)
    services.complete_task(task=done, actor=SYSTEM, source=Source.API)
    RuleFactory(assign_mode=Rule.AssignMode.FEWEST_OPEN_TASKS, assign_team=team)

    assert create().owner == ben


def test_assign_leaves_an_owned_contact_alone_unless_the_rule_says_otherwise():
    ann, bob = UserFactory(username="ann"), UserFactory(username="bob")
    tag = TagFactory(name="vip")
    contact = create(data={"owner": ann.username})
    keep = RuleFactory(trigger=Trigger.TAG_ADDED, tag=tag, assign_mode=Rule.AssignMode.FIXED, assign_user=bob)

    services.add_tags(contact=contact, tags=["vip"], actor=SYSTEM, source=Source.MANUAL)
    contact.refresh_from_db()
    assert contact.owner == ann

    keep.assign_only_if_unowned = False
    keep.save()
    services.remove_tag(contact=contact, tag="vip", actor=SYSTEM, source=Source.MANUAL)
    services.add_tags(contact=contact, tags=["vip"], actor=SYSTEM, source=Source.MANUAL)
    contact.refresh_from_db()
    assert contact.owner == bob


def test_starting_stage_only_when_not_already_in_the_pipeline():
    new = StageFactory(name="New")
    qualified = StageFactory(pipeline=new.pipeline, name="Qualified")
    tag = TagFactory(name="hot")
    RuleFactory(trigger=Trigger.CONTACT_CREATED, set_stage=new)
    RuleFactory(trigger=Trigger.TAG_ADDED, tag=tag, set_stage=new)

    contact = create()
    assert ContactStage.objects.get(contact=contact).stage == new

    services.move_to_stage(contact=contact, pipeline=new.pipeline, stage=qualified, actor=SYSTEM, source=Source.MANUAL)
    services.add_tags(contact=contact, tags=["hot"], actor=SYSTEM, source=Source.MANUAL)
    assert ContactStage.objects.get(contact=contact).stage == qualified


def test_stage_rule_can_move_contacts_already_in_the_pipeline():
    new = StageFactory(name="New")
    hot_stage = StageFactory(pipeline=new.pipeline, name="Hot")
    tag = TagFactory(name="hot")
    RuleFactory(trigger=Trigger.TAG_ADDED, tag=tag, set_stage=hot_stage, stage_only_if_not_in_pipeline=False)
    contact = create()
    services.move_to_stage(contact=contact, pipeline=new.pipeline, stage=new, actor=SYSTEM, source=Source.MANUAL)

    services.add_tags(contact=contact, tags=["hot"], actor=SYSTEM, source=Source.MANUAL)

    assert ContactStage.objects.get(contact=contact).stage == hot_stage


def test_add_tags_and_follow_up_task_due_later_for_the_owner():
    bob = UserFactory(username="bob")
    welcome = TagFactory(name="welcome")
    RuleFactory(
        position=1, task_title="Call back", task_due_amount=2, task_due_unit=Rule.DueUnit.HOURS,
        tags_to_add=[welcome],
    )
    RuleFactory(position=0, assign_mode=Rule.AssignMode.FIXED, assign_user=bob)
    before = timezone.now()

    contact = create()

    assert list(contact.tags.values_list("name", flat=True)) == ["welcome"]
    task = Task.objects.get(contact=contact)
    assert task.title == "Call back" and task.assignee == bob
    assert before + dt.timedelta(hours=2) <= task.due_at <= timezone.now() + dt.timedelta(hours=2)


@pytest.mark.parametrize(("unit", "delta"), [("minutes", dt.timedelta(minutes=30)), ("days", dt.timedelta(days=30))])
def test_task_due_units(unit, delta):
    RuleFactory(task_title="Follow up", task_due_amount=30, task_due_unit=unit)
    before = timezone.now()
    task = Task.objects.get(contact=create())
    assert before + delta <= task.due_at <= timezone.now() + delta


def test_webhook_action_writes_an_event_to_the_outbox(django_capture_on_commit_callbacks):
    from automations.models import WebhookDelivery
    from automations.webhooks import create_endpoint

    endpoint, _ = create_endpoint(url="http://127.0.0.1:9/hook", events=["contact.updated"])
    rule = RuleFactory(webhook_event="contact.updated", webhook_endpoint=endpoint)

    contact = create()

    delivery = WebhookDelivery.objects.get(event="contact.updated")
    assert delivery.payload["rule"] == {"id": rule.pk, "name": rule.name, "trigger": "contact_created"}
    assert delivery.payload["contact"]["id"] == contact.pk


# --- Triggers ---------------------------------------------------------------------------------


def test_tag_added_fires_from_upsert_and_add_tags_paths():
    vip, lead = TagFactory(name="vip"), TagFactory(name="lead")
    marker = TagFactory(name="vip-seen")
    RuleFactory(trigger=Trigger.TAG_ADDED, tag=vip, tags_to_add=[marker])

    on_create = create(tags=["vip"])
    assert set(on_create.tags.values_list("name", flat=True)) == {"vip", "vip-seen"}

    updated = create(phone="+14155550101")
    services.upsert_contact(data={"phone": "+14155550101"}, tags=["vip"], actor=SYSTEM, source=Source.API)
    assert set(updated.tags.values_list("name", flat=True)) == {"vip", "vip-seen"}

    other = create(phone="+14155550102")
    services.add_tags(contact=other, tags=["lead"], actor=SYSTEM, source=Source.MANUAL)
    assert not other.tags.filter(name="vip-seen").exists()
    services.add_tags(contact=other, tags=["vip"], actor=SYSTEM, source=Source.MANUAL)
    assert other.tags.filter(name="vip-seen").exists()
    assert lead.pk


def test_stage_changed_fires_for_the_named_stage_only():
    new = StageFactory(name="New")
    won = StageFactory(pipeline=new.pipeline, name="Won")
    bob = UserFactory(username="bob")
    RuleFactory(trigger=Trigger.STAGE_CHANGED, stage=won, task_title="Send contract", task_due_amount=1,
                assign_mode=Rule.AssignMode.FIXED, assign_user=bob)
    contact = create()

    services.move_to_stage(contact=contact, pipeline=new.pipeline, stage=new, actor=SYSTEM, source=Source.MANUAL)
    assert not Task.objects.filter(contact=contact).exists()
    services.move_to_stage(contact=contact, pipeline=new.pipeline, stage=won, actor=SYSTEM, source=Source.MANUAL)
    assert Task.objects.get(contact=contact).title == "Send contract"


def test_form_submitted_rule_matches_its_form_only():
    tag = TagFactory(name="from-demo-form")
    RuleFactory(trigger=Trigger.FORM_SUBMITTED, form_id=7, tags_to_add=[tag])
    contact = create(source=Source.FORM)

    run_rules(trigger="form_submitted", contact=contact, actor=SYSTEM, source=Source.FORM, context={"form_id": 8})
    assert not contact.tags.exists()
    run_rules(trigger="form_submitted", contact=contact, actor=SYSTEM, source=Source.FORM, context={"form_id": 7})
    assert list(contact.tags.values_list("name", flat=True)) == ["from-demo-form"]


def test_conversation_ended_rule_creates_follow_up():
    RuleFactory(trigger=Trigger.CONVERSATION_ENDED, task_title="Read the transcript", task_due_amount=10,
                task_due_unit=Rule.DueUnit.MINUTES)
    contact = create(source=Source.CHAT)
    assert not Task.objects.exists()

    run_rules(trigger="conversation_ended", contact=contact, actor=SYSTEM, source=Source.CHAT,
              context={"conversation_id": 1})

    assert Task.objects.get(contact=contact).title == "Read the transcript"


# --- Conditions -----------------------------------------------------------------------------


def test_source_condition():
    bob = UserFactory(username="bob")
    RuleFactory(sources=["form", "chat"], assign_mode=Rule.AssignMode.FIXED, assign_user=bob)
    assert create(source=Source.IMPORT).owner is None
    assert create(phone="+14155550101", source=Source.CHAT).owner == bob


def test_tag_and_stage_conditions_on_other_triggers():
    stage = StageFactory(name="New")
    vip = TagFactory(name="vip")
    done = TagFactory(name="handled")
    RuleFactory(trigger=Trigger.CONVERSATION_ENDED, tag=vip, stage=stage, tags_to_add=[done])
    contact = create(tags=["vip"])

    run_rules(trigger="conversation_ended", contact=contact, actor=SYSTEM, source=Source.CHAT)
    assert not contact.tags.filter(name="handled").exists()

    services.move_to_stage(contact=contact, pipeline=stage.pipeline, stage=stage, actor=SYSTEM, source=Source.MANUAL)
    run_rules(trigger="conversation_ended", contact=contact, actor=SYSTEM, source=Source.CHAT)
    assert contact.tags.filter(name="handled").exists()


def test_custom_field_condition():
    CustomFieldFactory(key="budget_band")
    CustomFieldFactory(key="interests", type="multiple_choice", choices=["crm", "erp"])
    bob = UserFactory(username="bob")
    RuleFactory(custom_field_key="budget_band", custom_field_value="High", assign_mode=Rule.AssignMode.FIXED,
                assign_user=bob)
    ann = UserFactory(username="ann")
    RuleFactory(custom_field_key="interests", custom_field_value="erp", assign_mode=Rule.AssignMode.FIXED,
                assign_user=ann)

    assert create(custom={"budget_band": "low"}).owner is None
    assert create(phone="+14155550101", custom={"budget_band": "high"}).owner == bob
    assert create(phone="+14155550102", custom={"interests": ["crm", "erp"]}).owner == ann


def test_a_decimal_condition_matches_the_number_in_any_spelling():
    CustomFieldFactory(key="budget", type="decimal")
    bob = UserFactory(username="bob")
    RuleFactory(custom_field_key="budget", custom_field_value="1250", assign_mode=Rule.AssignMode.FIXED, assign_user=bob)
    assert create(custom={"budget": "1250.00"}).owner == bob
    assert create(phone="+14155550103", custom={"budget": "1250.5"}).owner is None


def test_inactive_rules_do_not_run_and_rules_run_in_position_order():
    ann, bob = UserFactory(username="ann"), UserFactory(username="bob")
    RuleFactory(position=5, assign_mode=Rule.AssignMode.FIXED, assign_user=bob)
    RuleFactory(position=1, assign_mode=Rule.AssignMode.FIXED, assign_user=ann, active=False)
    assert create().owner == bob


# --- Failure, recursion, dry run ---------------------------------------------------------


def test_failing_rule_leaves_the_contact_written_and_records_the_failure():
    empty = TeamFactory(name="Nobody home")
    tag = TagFactory(name="kept")
    failing = RuleFactory(position=0, name="Broken", assign_mode=Rule.AssignMode.ROUND_ROBIN, assign_team=empty,
                          tags_to_add=[tag])
    later = RuleFactory(position=1, task_title="Still runs", task_due_amount=1)

    contact = create()

    contact.refresh_from_db()
    assert contact.pk and contact.name == "Ada"
    run = RuleRun.objects.get(rule=failing)
    assert run.status == RuleRun.Status.FAILED and "Nobody home has no active members" in run.error
    assert not contact.tags.exists()  # the failed rule's savepoint was rolled back
    assert RuleRun.objects.get(rule=later).status == RuleRun.Status.APPLIED
    assert HistoryEntry.objects.filter(contact=contact, summary__startswith="Rule 'Broken' failed").exists()


def test_rules_feeding_each_other_stop_at_the_depth_limit(settings):
    settings.CRM_AUTOMATION_MAX_DEPTH = 3
    a, b = StageFactory(name="A"), None
    b = StageFactory(pipeline=a.pipeline, name="B")
    RuleFactory(trigger=Trigger.STAGE_CHANGED, stage=a, set_stage=b, stage_only_if_not_in_pipeline=False)
    RuleFactory(trigger=Trigger.STAGE_CHANGED, stage=b, set_stage=a, stage_only_if_not_in_pipeline=False)
    contact = create()

    services.move_to_stage(contact=contact, pipeline=a.pipeline, stage=a, actor=SYSTEM, source=Source.MANUAL)

    # The manual move plus three rule moves, then the fourth level is skipped and recorded.
    assert contact.stage_changes.count() == 4
    assert RuleRun.objects.filter(status=RuleRun.Status.SKIPPED).count() == 1


def test_dry_run_reports_actions_without_writing_anything(django_capture_on_commit_callbacks):
    from automations.models import WebhookDelivery
    from automations.webhooks import create_endpoint

    team, _ = team_of("ann", "ben")
    stage = StageFactory(name="New")
    tag = TagFactory(name="vip")
    create_endpoint(url="http://127.0.0.1:9/hook", events=["contact.updated"])
    rule = RuleFactory(trigger=Trigger.TAG_ADDED, tag=tag, assign_mode=Rule.AssignMode.ROUND_ROBIN, assign_team=team,
                       set_stage=stage, tags_to_add=[tag], task_title="Call", task_due_amount=1,
                       webhook_event="contact.updated")
    contact = create()
    counts = (HistoryEntry.objects.count(), Task.objects.count(), RuleRun.objects.count(),
              WebhookDelivery.objects.count(), ContactStage.objects.count())

    with django_capture_on_commit_callbacks() as callbacks:
        outcome = dry_run(rule=rule, contact=contact)

    assert outcome.matched and not outcome.error
    assert outcome.actions[0] == "owner set to ann"
    assert any(a.startswith("moved to") for a in outcome.actions)
    assert "tags added: vip" in outcome.actions
    assert any(a.startswith("task 'Call'") for a in outcome.actions)
    assert counts == (HistoryEntry.objects.count(), Task.objects.count(), RuleRun.objects.count(),
                      WebhookDelivery.objects.count(), ContactStage.objects.count())
    assert callbacks == []
    contact.refresh_from_db()
    assert contact.owner is None and not contact.tags.exists()
    assert Team.objects.get(pk=team.pk).turn == 0


def test_dry_run_shows_unmet_conditions_and_failures():
    empty = TeamFactory(name="Empty")
    rule = RuleFactory(sources=["form"], assign_mode=Rule.AssignMode.ROUND_ROBIN, assign_team=empty)
    contact = create(source=Source.API)

    outcome = dry_run(rule=rule, contact=contact)

    assert not outcome.matched
    assert outcome.reasons == ["Source api is not one of form."]
    assert "no active members" in outcome.error


def test_failing_rule_inside_an_intake_leaves_no_trace_of_its_own_writes():
    """A rule's writes roll back with its savepoint even when an intake batches the caller's writes."""
    stage = StageFactory(name="Rule stage")
    RuleFactory(position=0, name="Half done", set_stage=stage, task_title="Rule task", task_due_amount=1,
                webhook_event="no.such.event")

    result = services.record_intake(
        contact={"name": "Ada", "phone": "+14155550123"}, actor=Actor.for_system("test"), source=Source.CHAT,
        note="Asked about pricing", task={"title": "Call back", "due_at": "2026-06-01T10:00:00Z"},
    )

    contact = result.upsert.contact
    assert RuleRun.objects.get().status == RuleRun.Status.FAILED
    assert not ContactStage.objects.filter(contact=contact).exists()
    assert list(Task.objects.filter(contact=contact).values_list("title", flat=True)) == ["Call back"]
    actions = set(HistoryEntry.objects.filter(contact=contact).values_list("action", flat=True))
    assert HistoryEntry.Action.STAGE_CHANGED not in actions
    assert not HistoryEntry.objects.filter(contact=contact, summary__contains="Rule task").exists()
    assert {HistoryEntry.Action.CREATED, HistoryEntry.Action.NOTE_ADDED, HistoryEntry.Action.TASK_CREATED} <= actions
