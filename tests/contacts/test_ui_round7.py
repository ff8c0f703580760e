"""Web UI, seventh outside-in round: filters that name no one, My tasks past 500, restricted sales users,
selections that went stale, messages that say what was expected, and note text shown as written."""

import datetime as dt

import pytest
from django.utils import timezone

from contacts import services
from contacts.models import Contact, SavedView, Source, Task
from crm_hub.actors import Actor
from tests.contacts.ui_helpers import make_contact, names_in, sales_pipeline, team

pytestmark = pytest.mark.django_db


def flashed(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_an_owner_filter_that_names_no_one_is_refused_not_ignored(client):
    admin, alice, _bob = team()
    make_contact(admin, name="Ana", owner=alice)
    make_contact(admin, name="Bo")
    client.force_login(admin)
    listed = client.get("/contacts/", {"owner": "bogus"})
    assert names_in(listed) == [] and "The owner filter must be me, none or a user" in listed.content.decode()
    assert names_in(client.get("/contacts/", {"owner": str(alice.pk)})) == ["Ana"]
    assert client.get("/contacts/", {"owner": "99999"}).content.decode().count("The owner filter must be") == 1
    export = client.get("/contacts/export/", {"owner": "bogus", "format": "csv"})
    assert export.status_code == 302  # refused, never the whole CRM


@pytest.mark.parametrize("params", [{"owner": "bogus"}, {"tag": "abc"}, {"tag": "999"}])
def test_the_board_refuses_a_filter_that_names_nothing(client, params):
    admin, _alice, _bob = team()
    pipeline, stages = sales_pipeline()
    contact = make_contact(admin, name="On board")
    services.move_to_stage(contact=contact, pipeline=pipeline, stage=stages[0], actor=Actor.for_user(admin), source=Source.MANUAL)
    client.force_login(admin)
    page = client.get("/pipeline/", params).content.decode()
    assert 'data-testid="board-filter-problem"' in page and "On board" not in page
    assert "On board" in client.get("/pipeline/").content.decode()


def test_my_tasks_counts_every_task_and_pages_past_the_first_ones(client, settings):
    admin, _alice, _bob = team()
    contact = make_contact(admin, name="Busy")
    due = timezone.now() + dt.timedelta(days=30)
    Task.objects.bulk_create([
        Task(contact=contact, title=f"Task {n:03}", due_at=due + dt.timedelta(minutes=n), assignee=admin, source=Source.MANUAL)
        for n in range(230)
    ])
    client.force_login(admin)
    page = client.get("/tasks/").content.decode()
    assert "230 open tasks" in page and "Task 199" in page and "Task 200" not in page
    assert "Showing 200 of 230" in page
    more = client.get("/tasks/", {"upcoming_pages": "2"}).content.decode()
    assert "Task 229" in more and 'data-testid="more-upcoming"' not in more


def test_a_task_on_a_contact_the_assignee_cannot_see_does_not_show_or_link_it(client, settings):
    settings.CRM_SALES_SEE_OWN_ONLY = True
    admin, alice, _bob = team()
    hidden = make_contact(admin, name="Priya Hidden", owner=admin)
    services.create_task(contact=hidden, title="Call Priya", due_at=timezone.now() + dt.timedelta(days=1),
                         assignee=alice.pk, actor=Actor.for_user(admin), source=Source.MANUAL)
    client.force_login(alice)
    page = client.get("/tasks/").content.decode()
    assert "Call Priya" in page and "Priya Hidden" not in page and f"/contacts/{hidden.pk}/" not in page
    assert 'data-testid="hidden-contact"' in page


def test_a_restricted_sales_user_keeps_the_contacts_they_create(client, settings):
    settings.CRM_SALES_SEE_OWN_ONLY = True
    _admin, alice, bob = team()
    client.force_login(alice)
    page = client.get("/contacts/new/").content.decode()
    assert ">Nobody<" not in page and "Bob" not in page
    response = client.post("/contacts/new/", {"name": "Orphan Lead", "phone": "+1 305 555 7777", "owner": str(bob.pk)})
    assert response.status_code == 200 and not Contact.objects.exists()  # another owner is not a choice
    created = client.post("/contacts/new/", {"name": "Kept Lead", "phone": "+1 305 555 7778", "owner": str(alice.pk)})
    assert created.status_code == 302 and client.get(created["Location"]).status_code == 200


def test_a_bulk_action_on_a_contact_gone_since_the_list_loaded_says_so(client):
    admin, _alice, _bob = team()
    here = make_contact(admin, name="Here")
    client.force_login(admin)
    response = client.post("/contacts/bulk/", {"action": "add_tag", "tag": "x", "scope": "selected",
                                               "ids": [str(here.pk), "999999"]}, follow=True)
    assert response.status_code == 200
    assert any("#999999" in m and "nothing was changed" in m for m in flashed(response))


def test_a_bulk_move_to_a_stage_that_does_not_exist_names_it(client):
    admin, _alice, _bob = team()
    sales_pipeline()
    here = make_contact(admin, name="Here")
    client.force_login(admin)
    response = client.post("/contacts/bulk/", {"action": "move_stage", "stage": "999", "scope": "selected",
                                               "ids": [str(here.pk)]}, follow=True)
    assert any("There is no stage '999'" in m for m in flashed(response))


@pytest.mark.parametrize(("data", "said"), [
    ({"name": "x" * 5000, "query": "q=a"}, "at most 80 characters"),
    ({"name": "Mine", "query": "q=" + "a" * 10000}, "too long to save"),
])
def test_saving_a_view_says_what_is_wrong(client, data, said):
    admin, _alice, _bob = team()
    client.force_login(admin)
    response = client.post("/contacts/views/", data, follow=True)
    assert any(said in m for m in flashed(response)) and not SavedView.objects.exists()


@pytest.mark.parametrize("due", ["0001-01-01T00:00", "9999-12-31T23:59"])
def test_a_task_due_in_a_mistyped_year_is_refused(client, due):
    admin, _alice, _bob = team()
    contact = make_contact(admin, name="Ana")
    client.force_login(admin)
    response = client.post(f"/contacts/{contact.pk}/tasks/", {"title": "Call", "due_at": due, "priority": "normal"})
    assert "looks mistyped" in response.content.decode()
    assert not Task.objects.exists()


def test_a_note_whose_markup_was_removed_shows_the_text_once_escaped(client):
    admin, _alice, _bob = team()
    contact = make_contact(admin, name="Ana")
    services.add_note(contact=contact, body="<<script>script>alert(8)<</script>/script>", actor=Actor.for_user(admin),
                      source=Source.MANUAL)
    client.force_login(admin)
    text = client.get(f"/contacts/{contact.pk}/").content.decode()
    assert "&amp;lt;" not in text and "<script>" not in text


def test_marking_a_task_on_a_hidden_contact_done_does_not_reveal_the_contact(client, settings):
    settings.CRM_SALES_SEE_OWN_ONLY = True
    admin, alice, _bob = team()
    hidden = make_contact(admin, name="Chloe Hidden", owner=admin)
    task = services.create_task(contact=hidden, title="Call Chloe", due_at=timezone.now() + dt.timedelta(days=1),
                                assignee=alice.pk, actor=Actor.for_user(admin), source=Source.MANUAL)
    client.force_login(alice)
    for done in ("1", "0"):
        row = client.post(f"/tasks/{task.pk}/toggle/", {"done": done, "show_contact": "1", "next": "/tasks/"},
                          HTTP_HX_REQUEST="true").content.decode()
        assert "Call Chloe" in row and "Chloe Hidden" not in row and f"/contacts/{hidden.pk}/" not in row


def test_moving_to_a_stage_deleted_meanwhile_says_so(client):
    admin, _alice, _bob = team()
    sales_pipeline()
    contact = make_contact(admin, name="Mover")
    client.force_login(admin)
    page = client.post(f"/contacts/{contact.pk}/stage/", {"stage": "999"}, follow=True)
    assert any("no longer exists" in m for m in flashed(page))
    moved = client.post("/pipeline/move/", {"contact": str(contact.pk), "stage": "999"})
    assert moved.status_code == 404 and "no longer exists" in moved.content.decode()


@pytest.mark.parametrize(("data", "said"), [
    ({"name": "Bad stage", "query": "stage=999"}, "Not saved"),
    ({"name": "Bad owner", "query": "owner=bogus"}, "Not saved"),
    ({"name": "Ctl\u0007bell", "query": "q=a"}, "U+0007"),
])
def test_a_view_that_could_never_apply_is_not_saved(client, data, said):
    admin, _alice, _bob = team()
    client.force_login(admin)
    response = client.post("/contacts/views/", data, follow=True)
    assert any(said in m for m in flashed(response)) and not SavedView.objects.exists()


def test_an_export_of_a_saved_view_exports_that_view(client):
    import csv
    import io

    admin, alice, _bob = team()
    make_contact(admin, name="Ana", owner=alice)
    make_contact(admin, name="Bo")
    client.force_login(admin)
    view = services.save_view(owner=admin, name="Alice's", query=f"owner={alice.pk}")
    export = client.get("/contacts/export/", {"view": str(view.pk), "format": "csv", "cols": ["name"]})
    rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode("utf-8-sig"))))
    assert [r[0] for r in rows[1:]] == ["Ana"]
    assert client.get("/contacts/export/", {"view": "99999", "format": "csv"}).status_code == 404


def test_a_pipeline_or_assignee_that_names_nothing_is_not_shown_as_something_else(client):
    admin, _alice, _bob = team()
    pipeline, _stages = sales_pipeline()
    client.force_login(admin)
    board = client.get("/pipeline/", {"pipeline": "999"})
    assert any("There is no pipeline '999'" in m for m in flashed(board)) and pipeline.name in board.content.decode()
    assert client.get("/tasks/", {"assignee": "bogus"}).status_code == 404
