"""Agent API, eighth outside-in round."""

import pytest

from contacts.models import Contact, Pipeline, Stage, Task
from tests.api.factories import AgentClient, make_agent
from tests.contacts.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_owner_and_assignee_must_be_staff_users_who_can_sign_in(full_bot):
    UserFactory(username="exrep", is_staff=False, is_active=True)
    upsert = full_bot.post("contacts/upsert", {"name": "Owner NS", "phone": "+1 628 555 8201", "owner": "exrep"})
    assert upsert.status_code == 400
    assert [(e["field"], e["code"]) for e in upsert.json()["errors"]] == [("owner", "invalid_value")]
    assert "cannot sign in" in upsert.json()["errors"][0]["message"]
    intake = full_bot.post("intake", {"contact": {"name": "Task NS", "phone": "+1 628 555 8202"},
                                      "task": {"title": "Call", "due_at": "2030-12-01T10:00:00Z", "assignee": "exrep"}})
    assert intake.status_code == 400 and intake.json()["errors"][0]["field"] == "task.assignee"
    assert not Contact.objects.exists() and not Task.objects.exists()


def test_missing_scope_names_every_scope_the_intake_lacks():
    _agent, token = make_agent("write-only", scopes=["contacts:write"])
    response = AgentClient(token).post("intake", {
        "contact": {"name": "Ana", "phone": "+1 561 555 0190"}, "note": "n",
        "task": {"title": "Call", "due_at": "2030-12-01T10:00:00Z"}, "conversation": {"external_id": "c1"},
    })
    assert response.status_code == 403
    error = response.json()["errors"][0]
    assert error["scope"] == "notes:write"
    assert error["scopes"] == ["notes:write", "tasks:write", "conversations:write"]
    assert "'tasks:write'" in error["message"] and "'conversations:write'" in error["message"]


def test_a_pipeline_given_as_a_json_number_is_that_id_even_if_another_is_named_so(full_bot, taxonomy):
    onboarding = Pipeline.objects.create(name="Onboarding", position=5)
    Stage.objects.create(pipeline=onboarding, name="Only here", position=0)
    named_like_the_id = Pipeline.objects.create(name=str(onboarding.pk), position=6)
    Stage.objects.create(pipeline=named_like_the_id, name="Only here", position=0)
    contact = full_bot.post("contacts/upsert", {"name": "Ana", "phone": "+1 561 555 0191"}).json()["contact"]
    moved = full_bot.put(f"contacts/{contact['id']}/stage", {"pipeline": onboarding.pk, "stage": "Only here"})
    assert moved.status_code == 200 and moved.json()["pipeline_id"] == onboarding.pk
    by_name = full_bot.put(f"contacts/{contact['id']}/stage", {"pipeline": str(onboarding.pk), "stage": "Only here"})
    assert by_name.json()["pipeline_id"] == named_like_the_id.pk  # text is a name first


def test_a_missing_stage_is_refused_with_the_pipelines_stages(full_bot, taxonomy):
    contact = full_bot.post("contacts/upsert", {"name": "Ana", "phone": "+1 561 555 0192"}).json()["contact"]
    response = full_bot.put(f"contacts/{contact['id']}/stage", {"pipeline": "Sales"})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert (error["field"], error["code"], error["allowed"]) == ("stage", "required", ["New", "Qualified"])


def test_an_intake_naming_an_ended_conversation_says_which_field(full_bot):
    conversation = full_bot.post("conversations", {"external_id": "done-1"}).json()["conversation"]
    full_bot.post(f"conversations/{conversation['id']}/end", {"summary": "bye"})
    response = full_bot.post("intake", {"contact": {"name": "Ana", "phone": "+1 561 555 0193"},
                                        "conversation": {"external_id": "done-1"}})
    assert response.status_code == 409
    assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [("conversation.external_id", "conversation_ended")]


def test_create_agent_help_lists_every_scope(capsys):
    from django.core.management import call_command

    from crm_hub.models import Agent

    with pytest.raises(SystemExit):
        call_command("create_agent", "--help")
    shown = " ".join(capsys.readouterr().out.split())
    assert all(scope in shown for scope in Agent.Scope.values)


def test_the_record_says_how_many_open_tasks_there_are_beyond_the_ones_it_lists(full_bot):
    contact = full_bot.post("contacts/upsert", {"name": "Busy", "phone": "+1 561 555 0194"}).json()["contact"]
    for n in range(23):
        full_bot.post(f"contacts/{contact['id']}/tasks", {"title": f"Call {n}", "due_at": "2030-12-01T10:00:00Z"})
    record = full_bot.get(f"contacts/{contact['id']}").json()
    assert len(record["open_tasks"]) == 20 and record["open_task_count"] == 23


def test_an_invisible_character_inside_a_name_is_dropped_by_the_api_and_the_import_alike(full_bot, staff_actor):
    from tests.contacts.test_import import do_import

    created = full_bot.post("contacts/upsert", {"name": "Ann\u200bLee \u00adCo", "phone": "+1 561 555 0195"})
    assert created.json()["contact"]["name"] == "AnnLee Co"
    job = do_import(staff_actor, [["Ann\u200bLee \u00adCo", "+1 561 555 0195", "", "", ""]])
    job.refresh_from_db()
    assert (job.updated_count, job.skipped_count) == (0, 1)  # the same name: nothing to change
    joined = full_bot.post("contacts/upsert", {"name": "Ana\u200dBeta", "phone": "+1 561 555 0196"})
    assert joined.json()["contact"]["name"] == "Ana\u200dBeta"  # a joiner shapes some scripts: kept
