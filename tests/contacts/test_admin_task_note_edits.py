"""Admin edits and deletes of tasks, notes and change requests leave the contact's history straight."""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from contacts import services
from contacts.models import ChangeRequest, HistoryEntry, Note, Source, Task
from crm_hub.actors import Actor
from tests.contacts.factories import UserFactory

pytestmark = pytest.mark.django_db

SYSTEM = Actor.for_system("test")


# admin_client is pytest-django's: signed in as the superuser "admin".


def make_contact(name="Ana", email="ana@example.com"):
    return services.upsert_contact(data={"name": name, "email": email}, actor=SYSTEM, source=Source.API).contact


def make_task(contact, **extra):
    return services.create_task(contact=contact, title="Call back", due_at="2031-03-01T10:00:00Z", actor=SYSTEM,
                                source=Source.API, **extra)


def task_form(task, **overrides):
    due = timezone.localtime(task.due_at)
    data = {"title": task.title, "description": task.description, "due_at_0": due.strftime("%Y-%m-%d"),
            "due_at_1": due.strftime("%H:%M:%S"), "assignee": task.assignee_id or "", "priority": task.priority}
    data.update(overrides)
    return data


def test_editing_a_task_in_admin_records_each_changed_field_in_history(admin_client):
    contact = make_contact()
    ada = UserFactory(username="ada")
    task = make_task(contact)
    url = reverse("admin:contacts_task_change", args=[task.pk])
    response = admin_client.post(url, task_form(task, title="Call back about pricing", assignee=ada.pk, priority="high"))
    assert response.status_code == 302, response.content[:3000]
    task.refresh_from_db()
    assert (task.title, task.assignee, task.priority) == ("Call back about pricing", ada, "high")
    entry = HistoryEntry.objects.get(contact=contact, action=HistoryEntry.Action.TASK_UPDATED)
    assert entry.changes == {"task.title": ["Call back", "Call back about pricing"], "task.assignee": [None, "ada"],
                             "task.priority": ["normal", "high"]}
    assert entry.actor_label == "admin" and entry.source == Source.MANUAL
    # Saving without a change writes nothing.
    assert admin_client.post(url, task_form(task)).status_code == 302
    assert HistoryEntry.objects.filter(action=HistoryEntry.Action.TASK_UPDATED).count() == 1
    page = admin_client.get(f"/contacts/{contact.pk}/").content.decode()
    assert "Task edited" in page and "Task title:" in page and "Task assignee:" in page


def test_a_task_edit_in_admin_is_checked_like_a_new_task(admin_client):
    contact = make_contact()
    task = make_task(contact)
    gone = UserFactory(username="gone", is_active=False)
    url = reverse("admin:contacts_task_change", args=[task.pk])
    response = admin_client.post(url, task_form(task, title="   ", assignee=gone.pk))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "title" in errors and "gone is inactive" in errors["assignee"][0]
    task.refresh_from_db()
    assert task.title == "Call back" and task.assignee is None
    assert not HistoryEntry.objects.filter(action=HistoryEntry.Action.TASK_UPDATED).exists()


def test_deleting_tasks_in_admin_one_or_in_bulk_leaves_a_history_line_each(admin_client):
    contact = make_contact()
    first, second, third = (make_task(contact) for _ in range(3))
    response = admin_client.post(reverse("admin:contacts_task_delete", args=[first.pk]), {"post": "yes"})
    assert response.status_code == 302
    response = admin_client.post(reverse("admin:contacts_task_changelist"),
                                 {"action": "delete_selected", "_selected_action": [second.pk, third.pk], "post": "yes"})
    assert response.status_code == 302
    assert not Task.objects.exists()
    entries = HistoryEntry.objects.filter(contact=contact, action=HistoryEntry.Action.TASK_DELETED)
    assert entries.count() == 3
    entry = entries.first()
    assert entry.changes == {"task": ["Call back", None]} and entry.actor_label == "admin"
    assert entry.summary.startswith("Task deleted: Call back (due 2031-03-01")


def test_deleting_a_note_in_admin_keeps_its_start_in_history(admin_client):
    contact = make_contact()
    note = services.add_note(contact=contact, body="<p>Wants the <b>Pro</b> plan " + "x" * 200 + "</p>", actor=SYSTEM,
                             source=Source.API)
    response = admin_client.post(reverse("admin:contacts_note_delete", args=[note.pk]), {"post": "yes"})
    assert response.status_code == 302 and not Note.objects.exists()
    entry = HistoryEntry.objects.get(contact=contact, action=HistoryEntry.Action.NOTE_DELETED)
    excerpt = entry.changes["note"][0]
    assert excerpt.startswith("Wants the Pro plan xxx") and excerpt.endswith("…") and len(excerpt) == 120
    assert entry.actor_label == "admin"
    # The contact page shows the removal on the timeline.
    page = admin_client.get(f"/contacts/{contact.pk}/").content.decode()
    assert "Note deleted" in page


def test_pending_change_requests_are_decided_not_deleted(admin_client):
    make_contact(email="ana@example.com")
    form = Actor.for_system("form")
    services.upsert_contact(data={"email": "ana@example.com", "identity": "1"}, actor=form, source=Source.FORM)
    pending = services.upsert_contact(data={"email": "ana@example.com", "identity": "2"}, actor=form,
                                      source=Source.FORM).pending_changes[0]
    assert admin_client.post(reverse("admin:contacts_changerequest_delete", args=[pending.pk]),
                             {"post": "yes"}).status_code == 403
    admin_client.post(reverse("admin:contacts_changerequest_changelist"),
                      {"action": "delete_selected", "_selected_action": [pending.pk], "post": "yes"})
    assert ChangeRequest.objects.filter(pk=pending.pk, status="pending").exists()
    admin_client.post(reverse("admin:contacts_changerequest_changelist"),
                      {"action": "reject", "_selected_action": [pending.pk]})
    response = admin_client.post(reverse("admin:contacts_changerequest_delete", args=[pending.pk]), {"post": "yes"})
    assert response.status_code == 302 and not ChangeRequest.objects.exists()


def test_update_task_service_refuses_unknown_fields_and_keeps_the_due_date_rules():
    contact = make_contact()
    task = make_task(contact)
    with pytest.raises(services.InputRejected) as refused:
        services.update_task(task=task, changes={"status": "done", "due_at": "soon"}, actor=SYSTEM, source=Source.API)
    fields = {e.field for e in refused.value.errors}
    assert fields == {"status"}
    with pytest.raises(services.InputRejected) as refused:
        services.update_task(task=task, changes={"due_at": "soon"}, actor=SYSTEM, source=Source.API)
    assert [e.field for e in refused.value.errors] == ["due_at"]
    moved = services.update_task(task=task, changes={"due_at": "2031-04-02"}, actor=SYSTEM, source=Source.API)
    assert timezone.localtime(moved.due_at).time() == dt.time(9, 0)
