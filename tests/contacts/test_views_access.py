"""Sales users restricted to their own contacts (CRM_SALES_SEE_OWN_ONLY) get 404 on everyone else's."""

import csv
import io

import pytest
from django.contrib.auth.models import Group

from contacts import services
from contacts.models import Source
from crm_hub.actors import Actor
from tests.contacts.ui_helpers import make_contact, sales_pipeline, team

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(settings):
    settings.CRM_SALES_SEE_OWN_ONLY = True
    admin, alice, bob = team()
    pipeline, stages = sales_pipeline()
    mine = make_contact(admin, name="Alice Customer", owner=alice)
    theirs = make_contact(admin, name="Bob Customer", owner=bob)
    for contact in (mine, theirs):
        services.move_to_stage(contact=contact, pipeline=pipeline, stage=stages[0], actor=Actor.for_user(admin), source=Source.MANUAL)
    return {"admin": admin, "alice": alice, "bob": bob, "mine": mine, "theirs": theirs, "pipeline": pipeline, "stages": stages}


def export_names(response) -> list[str]:
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    return [row[0] for row in rows[1:]]


def test_contact_page_edit_and_writes_of_another_users_contact_are_404(client, world):
    client.force_login(world["alice"])
    theirs = world["theirs"].pk
    assert client.get(f"/contacts/{world['mine'].pk}/").status_code == 200
    for url in (f"/contacts/{theirs}/", f"/contacts/{theirs}/edit/", f"/contacts/{theirs}/timeline/?before=2030-01-01T00:00:00Z"):
        assert client.get(url).status_code == 404, url
    for url, data in (
        (f"/contacts/{theirs}/notes/", {"body": "x"}),
        (f"/contacts/{theirs}/tags/", {"tag": "x"}),
        (f"/contacts/{theirs}/stage/", {"stage": world["stages"][1].pk}),
    ):
        assert client.post(url, data).status_code == 404, url
    assert not world["theirs"].notes.exists()


def test_list_shows_only_own_contacts_and_another_owners_list_is_404(client, world):
    client.force_login(world["alice"])
    html = client.get("/contacts/").content.decode()
    assert "Alice Customer" in html and "Bob Customer" not in html
    assert client.get("/contacts/", {"owner": world["bob"].pk}).status_code == 404
    assert client.get("/contacts/", {"q": "Bob Customer"}).content.decode().count("Bob Customer") == 1  # only in the search box


def test_export_excludes_others_and_exporting_their_ids_is_404(client, world):
    client.force_login(world["alice"])
    assert export_names(client.get("/contacts/export/", {"format": "csv"})) == ["Alice Customer"]
    assert client.get("/contacts/export/", {"format": "csv", "owner": world["bob"].pk}).status_code == 404
    response = client.post("/contacts/bulk/", {"scope": "selected", "ids": [world["theirs"].pk], "action": "export_csv", "query": ""})
    # Refused as a contact that is gone would be (the same words: hidden and deleted are not told apart).
    assert response.status_code == 302 and "text/csv" not in response.get("Content-Type", "")


def test_board_hides_others_cards_and_their_card_and_move_are_404(client, world):
    client.force_login(world["alice"])
    html = client.get("/pipeline/").content.decode()
    assert "Alice Customer" in html and "Bob Customer" not in html
    pipeline = world["pipeline"].pk
    assert client.get(f"/pipeline/cards/{world['mine'].pk}/", {"pipeline": pipeline}).status_code == 200
    assert client.get(f"/pipeline/cards/{world['theirs'].pk}/", {"pipeline": pipeline}).status_code == 404
    move = client.post("/pipeline/move/", {"contact": world["theirs"].pk, "stage": world["stages"][1].pk})
    assert move.status_code == 404
    assert world["theirs"].stage_memberships.get().stage == world["stages"][0]


def test_admins_and_unrestricted_sales_users_see_everyone(client, world, settings):
    member = world["bob"]
    member.groups.add(Group.objects.get_or_create(name="Admins")[0])
    client.force_login(member)
    assert client.get(f"/contacts/{world['mine'].pk}/").status_code == 200
    client.force_login(world["admin"])
    assert client.get(f"/contacts/{world['theirs'].pk}/").status_code == 200
    settings.CRM_SALES_SEE_OWN_ONLY = False
    client.force_login(world["alice"])
    assert client.get(f"/contacts/{world['theirs'].pk}/").status_code == 200
    assert sorted(export_names(client.get("/contacts/export/", {"format": "csv"}))) == ["Alice Customer", "Bob Customer"]


def test_404_page_for_a_hidden_contact_uses_the_app_layout(client, world, settings):
    settings.DEBUG = False
    client.force_login(world["alice"])
    response = client.get(f"/contacts/{world['theirs'].pk}/")
    assert response.status_code == 404 and b"Not found" in response.content and b"Bob Customer" not in response.content


def test_a_possible_duplicate_line_does_not_name_a_contact_the_user_cannot_see(client, settings):
    from contacts import services as contact_services
    from contacts.models import Source
    from crm_hub.actors import Actor
    from tests.contacts.factories import UserFactory

    settings.CRM_SALES_SEE_OWN_ONLY = True
    seller, boss = UserFactory(username="seller2"), UserFactory(username="boss2", is_superuser=True)
    bot = Actor.for_system("bot")
    mine = contact_services.upsert_contact(data={"name": "Mine", "phone": "+13125550119", "owner": seller.pk},
                                           actor=bot, source=Source.API).contact
    hidden = contact_services.upsert_contact(data={"name": "Hidden", "email": "hidden@example.com", "owner": boss.pk},
                                             actor=bot, source=Source.API).contact
    contact_services.upsert_contact(data={"phone": "+13125550119", "email": "hidden@example.com"}, actor=bot,
                                    source=Source.API)
    client.force_login(seller)
    page = client.get(f"/contacts/{mine.pk}/").content.decode()
    assert "possible duplicate of another contact" in page
    assert "hidden@example.com" not in page and f"#{hidden.pk}" not in page
    client.force_login(boss)
    assert "hidden@example.com" in client.get(f"/contacts/{mine.pk}/").content.decode()
