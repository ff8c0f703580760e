"""Pipeline board (columns, counts, filters, load more, drag to move) and the My tasks page."""

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from contacts import services
from contacts.models import HistoryEntry, Source, StageChange
from contacts.selectors import BOARD_COLUMN_SIZE
from crm_hub.actors import Actor
from tests.contacts.factories import TagFactory
from tests.contacts.ui_helpers import make_contact, sales_pipeline, team

pytestmark = pytest.mark.django_db


def column_counts(html: str) -> dict[str, str]:
    return dict(re.findall(r'<h2 id="col-\d+">([^<]+)</h2><span class="badge" data-count-for="\d+">(\d+)</span>', html))


def card_names(html: str) -> list[str]:
    return re.findall(r'<a class="name" href="/contacts/\d+/">([^<]+)</a>', html)


@pytest.fixture
def board(staff_user):
    pipeline, stages = sales_pipeline()
    actor = Actor.for_user(staff_user)

    def place(name, stage, **kwargs):
        contact = make_contact(staff_user, name=name, **kwargs)
        services.move_to_stage(contact=contact, pipeline=pipeline, stage=stage, actor=actor, source=Source.MANUAL)
        return contact

    return pipeline, stages, place


def test_board_has_a_column_per_stage_with_counts_and_filters(client, staff_user, board):
    pipeline, (lead, qualified, won), place = board
    TagFactory(name="vip")
    other = team()[1]
    place("Ana", lead, tags=["vip"], owner=staff_user)
    place("Bo", lead, owner=other)
    place("Cy", qualified, company="Globex")
    client.force_login(staff_user)
    html = client.get("/pipeline/").content.decode()
    assert column_counts(html) == {"Lead": "2", "Qualified": "1", "Won": "0"}
    assert "Globex" in html
    vip = TagFactory(name="vip")
    assert card_names(client.get("/pipeline/", {"tag": vip.pk}).content.decode()) == ["Ana"]
    assert card_names(client.get("/pipeline/", {"owner": other.pk}).content.decode()) == ["Bo"]
    assert card_names(client.get("/pipeline/", {"owner": "me"}).content.decode()) == ["Ana"]


def test_board_shows_days_in_stage(client, staff_user, board):
    _pipeline, (lead, _q, _w), place = board
    contact = place("Ana", lead)
    contact.stage_memberships.update(entered_at=timezone.now() - dt.timedelta(days=3, hours=1))
    client.force_login(staff_user)
    assert "3 days" in client.get("/pipeline/").content.decode()


def test_large_columns_load_more_cards_on_scroll(client, staff_user, board):
    _pipeline, (lead, _q, _w), place = board
    for i in range(BOARD_COLUMN_SIZE + 3):
        place(f"P{i:02d}", lead)
    client.force_login(staff_user)
    html = client.get("/pipeline/").content.decode()
    assert len(card_names(html)) == BOARD_COLUMN_SIZE
    more_url = re.search(r'hx-get="([^"]+)" hx-trigger="intersect once"', html).group(1).replace("&amp;", "&")
    rest = client.get(more_url).content.decode()
    assert len(card_names(rest)) == 3
    assert set(card_names(html)) | set(card_names(rest)) == {f"P{i:02d}" for i in range(BOARD_COLUMN_SIZE + 3)}
    assert "hx-trigger" not in rest


def test_board_renders_with_fixed_number_of_queries(client, staff_user, board, django_assert_num_queries):
    _pipeline, stages, place = board
    place("First", stages[0])
    client.force_login(staff_user)
    with CaptureQueriesContext(connection) as one:
        client.get("/pipeline/")
    for i in range(40):
        place(f"P{i}", stages[i % 3], owner=staff_user)
    with django_assert_num_queries(len(one.captured_queries)):
        html = client.get("/pipeline/").content.decode()
    assert len(card_names(html)) == 41


def test_drag_to_another_stage_moves_through_the_service_and_shows_in_history(client, staff_user, board):
    _pipeline, (lead, qualified, _won), place = board
    contact = place("Ana", lead)
    client.force_login(staff_user)
    response = client.post("/pipeline/move/", {"contact": contact.pk, "stage": qualified.pk})
    assert response.status_code == 200 and f'data-testid="card-{contact.pk}"' in response.content.decode()
    assert contact.stage_memberships.get().stage == qualified
    assert StageChange.objects.filter(contact=contact, from_stage=lead, to_stage=qualified).exists()
    entry = HistoryEntry.objects.filter(contact=contact, action="stage_changed").latest("id")
    assert entry.actor_user == staff_user and entry.source == "manual"
    assert "Sales: Lead → Qualified" in client.get(f"/contacts/{contact.pk}/").content.decode()


def test_board_empty_state_without_pipelines(client, staff_user):
    client.force_login(staff_user)
    assert "No pipelines yet" in client.get("/pipeline/").content.decode()


def _task(contact, user, title, due, assignee=None):
    return services.create_task(contact=contact, title=title, due_at=due, assignee=(assignee or user).pk,
                                actor=Actor.for_user(user), source=Source.MANUAL)


def test_my_tasks_groups_overdue_today_and_upcoming(client, staff_user):
    contact = make_contact(staff_user, name="Ana")
    now = timezone.localtime()
    _task(contact, staff_user, "Late", now - dt.timedelta(days=2))
    _task(contact, staff_user, "Soon", now.replace(hour=23, minute=59))
    _task(contact, staff_user, "Later", now + dt.timedelta(days=5))
    done = _task(contact, staff_user, "Finished", now + dt.timedelta(days=1))
    services.complete_task(task=done, actor=Actor.for_user(staff_user), source=Source.MANUAL)
    _task(contact, staff_user, "Someone else's", now, assignee=team()[1])
    client.force_login(staff_user)
    html = client.get("/tasks/").content.decode()
    groups = {key: re.findall(r'class="task-title">([^<]+)<', body) for key, body in re.findall(
        r'data-group="(\w+)">(.*?)</section>', html, re.S)}
    assert groups == {"overdue": ["Late"], "today": ["Soon"], "upcoming": ["Later"]}


def test_admin_filters_tasks_by_assignee_sales_users_cannot(client, staff_user):
    admin, alice, _bob = team()
    contact = make_contact(admin, name="Ana")
    _task(contact, admin, "Alice's call", timezone.now() + dt.timedelta(days=1), assignee=alice)
    _task(contact, admin, "Admin's call", timezone.now() + dt.timedelta(days=1), assignee=admin)
    client.force_login(admin)
    assert "Alice&#x27;s call" in client.get("/tasks/", {"assignee": alice.pk}).content.decode()
    everyone = client.get("/tasks/", {"assignee": "all"}).content.decode()
    assert "Alice&#x27;s call" in everyone and "Admin&#x27;s call" in everyone
    client.force_login(alice)
    own = client.get("/tasks/", {"assignee": admin.pk}).content.decode()
    assert "Alice&#x27;s call" in own and "Admin&#x27;s call" not in own


def test_tasks_page_has_fixed_number_of_queries_and_empty_state(client, staff_user, django_assert_num_queries):
    client.force_login(staff_user)
    assert "All clear" in client.get("/tasks/").content.decode()
    contact = make_contact(staff_user, name="Ana")
    _task(contact, staff_user, "One", timezone.now() + dt.timedelta(days=1))
    with CaptureQueriesContext(connection) as one:
        client.get("/tasks/")
    for i in range(15):
        _task(make_contact(staff_user, name=f"C{i}"), staff_user, f"T{i}", timezone.now() + dt.timedelta(days=i - 5))
    with django_assert_num_queries(len(one.captured_queries)):
        client.get("/tasks/")


def test_a_task_for_the_owner_of_an_ownerless_contact_goes_to_whoever_wrote_it(client, staff_user):
    from contacts.models import Contact, Task

    contact = Contact.objects.create(name="Nobody's", email="nobodys@example.com", source=Source.MANUAL)
    client.force_login(staff_user)
    response = client.post(f"/contacts/{contact.pk}/tasks/", {"title": "Follow up", "due_at": "2030-01-02T10:00",
                                                             "priority": "normal", "assignee": ""})
    assert response.status_code == 302
    assert Task.objects.get().assignee == staff_user
    assert "Follow up" in client.get("/tasks/").content.decode()


def test_toggling_a_task_on_a_contact_one_may_not_see_goes_back_to_my_tasks(client, settings, staff_user):
    from tests.contacts.factories import UserFactory

    settings.CRM_SALES_SEE_OWN_ONLY = True
    seller = UserFactory(username="seller2", is_staff=True)
    contact = make_contact(staff_user, name="Admin's")  # owned by staff_user: hidden from the seller
    task = _task(contact, staff_user, "For the seller", timezone.now() + dt.timedelta(days=1), assignee=seller)
    client.force_login(seller)
    assert client.get(f"/contacts/{contact.pk}/").status_code == 404
    response = client.post(f"/tasks/{task.pk}/toggle/", {"done": "1"})
    assert response.status_code == 302 and response["Location"] == "/tasks/"
