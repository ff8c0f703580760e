"""Contact list: search, filters, sort, keyset pages, columns, totals, saved views and bulk actions."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contacts import services
from contacts.models import Contact, ContactTag, HistoryEntry, SavedView, Source, Tag
from crm_hub.actors import Actor
from tests.contacts.factories import CustomFieldFactory, TagFactory
from tests.contacts.ui_helpers import make_contact, names_in, sales_pipeline, team

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(staff_user):
    TagFactory(name="vip")
    TagFactory(name="lead")
    pipeline, (lead, qualified, won) = sales_pipeline()
    actor = Actor.for_user(staff_user)
    ana = make_contact(staff_user, name="Ana Lima", phone="+1 202 555 0101", email="ana@acme.com", company="Acme", tags=["vip"])
    bo = make_contact(staff_user, name="Bo Chen", phone="+1 202 555 0102", tags=["vip", "lead"], source=Source.API)
    cy = make_contact(staff_user, name="Cy Diaz", email="cy@globex.com", company="Globex", tags=["lead"])
    nobody = make_contact(staff_user, name="No Way", company="Hidden Co")
    services.move_to_stage(contact=ana, pipeline=pipeline, stage=qualified, actor=actor, source=Source.MANUAL)
    services.move_to_stage(contact=bo, pipeline=pipeline, stage=lead, actor=actor, source=Source.MANUAL)
    services.move_to_stage(contact=cy, pipeline=pipeline, stage=qualified, actor=actor, source=Source.MANUAL)
    return {"ana": ana, "bo": bo, "cy": cy, "nobody": nobody, "stages": (lead, qualified, won)}


def test_search_finds_contact_by_phone_typed_in_another_format(signed_in, people):
    for typed in ("(202) 555-0101", "+12025550101", "202.555.0101"):
        assert names_in(signed_in.get("/contacts/", {"q": typed})) == ["Ana Lima"]


def test_search_by_name_company_and_email(signed_in, people):
    assert names_in(signed_in.get("/contacts/", {"q": "chen"})) == ["Bo Chen"]
    assert names_in(signed_in.get("/contacts/", {"q": "globex"})) == ["Cy Diaz"]
    assert names_in(signed_in.get("/contacts/", {"q": "ANA@acme.com"})) == ["Ana Lima"]


def test_search_reads_an_international_number_without_its_plus_and_either_apostrophe(signed_in, staff_user):
    make_contact(staff_user, name="Tim O'Reilly", phone="+44 20 7946 0958")
    make_contact(staff_user, name="Siobhán O’Brien")
    for typed in ("442079460958", "00442079460958", "+44 20 7946 0958"):
        assert names_in(signed_in.get("/contacts/", {"q": typed})) == ["Tim O&#x27;Reilly"], typed
    assert names_in(signed_in.get("/contacts/", {"q": "O’Reilly"})) == ["Tim O&#x27;Reilly"]
    assert names_in(signed_in.get("/contacts/", {"q": "o'brien"})) == ["Siobhán O’Brien"]


def test_filter_by_tag_and_stage(signed_in, people):
    vip = TagFactory(name="vip")
    lead_stage, qualified, _won = people["stages"]
    assert sorted(names_in(signed_in.get("/contacts/", {"tag": vip.pk}))) == ["Ana Lima", "Bo Chen"]
    assert names_in(signed_in.get("/contacts/", {"tag": vip.pk, "stage": qualified.pk})) == ["Ana Lima"]
    assert names_in(signed_in.get("/contacts/", {"stage": lead_stage.pk})) == ["Bo Chen"]


def test_filter_by_source_owner_and_unreachable(signed_in, people, staff_user):
    assert names_in(signed_in.get("/contacts/", {"source": "api"})) == ["Bo Chen"]
    assert names_in(signed_in.get("/contacts/", {"no_phone_or_email": "true"})) == ["No Way"]
    services.assign_owner(contact=people["cy"], owner=staff_user, actor=Actor.for_user(staff_user), source=Source.MANUAL)
    assert names_in(signed_in.get("/contacts/", {"owner": "me"})) == ["Cy Diaz"]
    assert "Cy Diaz" not in names_in(signed_in.get("/contacts/", {"owner": "none"}))


def test_filter_by_created_range(signed_in, people):
    Contact.objects.filter(pk=people["ana"].pk).update(created_at="2020-01-05T10:00:00Z")
    assert names_in(signed_in.get("/contacts/", {"created_before": "2020-01-31"})) == ["Ana Lima"]
    assert "Ana Lima" not in names_in(signed_in.get("/contacts/", {"created_after": "2021-01-01"}))


def test_filter_by_custom_choice_and_boolean_fields(signed_in, staff_user):
    CustomFieldFactory(key="plan", label="Plan", type="single_choice", choices=["Starter", "Pro"])
    CustomFieldFactory(key="consent", label="Consent", type="boolean")
    CustomFieldFactory(key="channels", label="Channels", type="multiple_choice", choices=["Phone", "Email"])
    actor = Actor.for_user(staff_user)
    for name, custom in [
        ("Pro Yes", {"plan": "Pro", "consent": True, "channels": ["Email"]}),
        ("Starter No", {"plan": "Starter", "consent": False, "channels": ["Phone", "Email"]}),
        ("Blank", {}),
    ]:
        services.upsert_contact(data={"name": name}, custom=custom, actor=actor, source=Source.MANUAL)
    assert names_in(signed_in.get("/contacts/", {"cf_plan": "Pro"})) == ["Pro Yes"]
    assert names_in(signed_in.get("/contacts/", {"cf_consent": "false"})) == ["Starter No"]
    assert names_in(signed_in.get("/contacts/", {"cf_channels": "Phone"})) == ["Starter No"]
    assert sorted(names_in(signed_in.get("/contacts/", {"cf_channels": "Email"}))) == ["Pro Yes", "Starter No"]


def test_sort_by_name_both_ways_and_by_custom_column(signed_in, people, staff_user):
    assert names_in(signed_in.get("/contacts/", {"sort": "name"})) == ["Ana Lima", "Bo Chen", "Cy Diaz", "No Way"]
    assert names_in(signed_in.get("/contacts/", {"sort": "-name"})) == ["No Way", "Cy Diaz", "Bo Chen", "Ana Lima"]
    CustomFieldFactory(key="score", label="Score", type="number")
    actor = Actor.for_user(staff_user)
    services.update_contact(contact=people["cy"], data={}, custom={"score": 9}, actor=actor, source=Source.MANUAL)
    services.update_contact(contact=people["bo"], data={}, custom={"score": 10}, actor=actor, source=Source.MANUAL)
    # Numbers sort as numbers (10 after 9), contacts without a value last.
    assert names_in(signed_in.get("/contacts/", {"sort": "cf.score"}))[:2] == ["Cy Diaz", "Bo Chen"]
    assert names_in(signed_in.get("/contacts/", {"sort": "-cf.score"}))[:2] == ["Bo Chen", "Cy Diaz"]


def test_chosen_columns_include_custom_fields(signed_in, people):
    CustomFieldFactory(key="plan", label="Plan of choice", type="text")
    html = signed_in.get("/contacts/", {"cols": ["cf.plan", "company"]}).content.decode()
    assert "Plan of choice" in html and ">Company<" in html.replace("</a>", "<")
    assert ">Email<" not in html.replace("</a>", "<")


def _follow_pages(client, params, rel="next"):
    seen, response = [], client.get("/contacts/", params)
    while True:
        assert response.status_code == 200 and len(seen) < 20, "paging does not end"
        seen.append(names_in(response))
        match = re.search(rf'rel="{rel}" href="\?([^"]+)"', response.content.decode())
        if not match:
            return seen, response
        response = client.get("/contacts/?" + match.group(1).replace("&amp;", "&"))


def _walk_back(client, last) -> list[list[str]]:
    """The pages from the first to ``last``, reached by following "previous" links back from ``last``."""
    back, response = [names_in(last)], last
    while match := re.search(r'rel="prev" href="\?([^"]+)"', response.content.decode()):
        response = client.get("/contacts/?" + match.group(1).replace("&amp;", "&"))
        back.append(names_in(response))
    return back[::-1]


@pytest.mark.parametrize("sort", ["-created", "name", "-name", "last_activity", "-tags", "stage"])
def test_keyset_pages_cover_every_row_once_forwards_and_back(signed_in, staff_user, monkeypatch, sort):
    monkeypatch.setattr("contacts.views.PAGE_SIZE", 3)
    TagFactory(name="vip")
    for i in range(8):
        make_contact(staff_user, name=f"Person {i % 4}", tags=["vip"] if i % 3 else [])
    Contact.objects.filter(name="Person 1").update(last_activity_at=None)
    pages, last = _follow_pages(signed_in, {"sort": sort})
    flat = [n for page in pages for n in page]
    assert len(pages) == 3 and len(flat) == 8
    assert sorted(flat) == sorted(Contact.objects.values_list("name", flat=True))
    assert _walk_back(signed_in, last) == pages


def test_list_renders_with_fixed_number_of_queries(signed_in, staff_user, django_assert_num_queries):
    TagFactory(name="vip")
    pipeline, stages = sales_pipeline()
    CustomFieldFactory(key="plan", label="Plan", type="single_choice", choices=["A", "B"])
    actor = Actor.for_user(staff_user)

    def add(i):
        contact = make_contact(staff_user, name=f"P{i}", owner=staff_user, tags=["vip"])
        services.move_to_stage(contact=contact, pipeline=pipeline, stage=stages[i % 3], actor=actor, source=Source.MANUAL)

    add(0)
    url = "/contacts/?cols=name&cols=tags&cols=stage&cols=owner&cols=cf.plan"
    # Cold cache: the vocabulary (tags, stages, custom fields, staff users) costs four queries once.
    with django_assert_num_queries(11):
        assert signed_in.get(url).status_code == 200
    for i in range(1, 30):
        add(i)
    # Session, user, admin group, saved views, the user's recent imports, the page, tag and stage ids of its rows.
    with django_assert_num_queries(7):
        response = signed_in.get(url)
    assert len(names_in(response)) == 30
    html = response.content.decode()
    assert html.count('class="tag"') == 30 and html.count('class="stage-dot"') == 30


def test_list_without_tag_and_stage_columns_skips_their_query(signed_in, staff_user, django_assert_num_queries):
    make_contact(staff_user, name="Solo", tags=[])
    signed_in.get("/contacts/")
    with django_assert_num_queries(6):
        assert names_in(signed_in.get("/contacts/?cols=name&cols=email")) == ["Solo"]


def test_filter_choices_follow_changes_to_tags_stages_fields_and_staff(signed_in, staff_user):
    pipeline, (lead, _qualified, _won) = sales_pipeline()
    signed_in.get("/contacts/")  # fills the cached vocabulary
    TagFactory(name="fresh-tag")
    lead.name = "Brand new lead"
    lead.save()
    CustomFieldFactory(key="tier", label="Tier", type="single_choice", choices=["Gold"])
    team()
    html = signed_in.get("/contacts/").content.decode()
    assert ">fresh-tag</option>" in html and ">Brand new lead</option>" in html
    assert 'name="cf_tier"' in html and ">Gold</option>" in html and ">Alice</option>" in html
    assert names_in(signed_in.get("/contacts/", {"cf_tier": "Gold"})) == []
    assert "The “Tier” filter has a value that is not one of its choices." in signed_in.get("/contacts/", {"cf_tier": "Silver"}).content.decode()
    pipeline.delete()
    assert "Brand new lead" not in signed_in.get("/contacts/").content.decode()


def test_rows_show_tags_the_cached_vocabulary_does_not_know_yet(signed_in, staff_user):
    contact = make_contact(staff_user, name="Ana", tags=[])
    signed_in.get("/contacts/")
    # bulk_create sends no signal, as a write from a process with its own cache would not reach this one.
    (tag,) = Tag.objects.bulk_create([Tag(name="unseen")])
    ContactTag.objects.create(contact=contact, tag=tag)
    assert ">unseen</span>" in signed_in.get("/contacts/").content.decode()


def test_totals_never_count_the_whole_table(signed_in, people, monkeypatch):
    with CaptureQueriesContext(connection) as queries:
        response = signed_in.get("/contacts/")
    assert "4 contacts" in response.content.decode()  # one page without a next one: exact, no count
    monkeypatch.setattr("contacts.views.PAGE_SIZE", 2)
    never_analysed = True
    if connection.vendor == "postgresql":
        # ANALYZE outlives a test's rolled-back transaction: another test may have run one already.
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'contacts_contact'")
            never_analysed = cursor.fetchone()[0] < 0
    if never_analysed:
        # A table never analysed has no statistics to estimate from (a new database): counted, bounded, exact.
        with CaptureQueriesContext(connection) as queries:
            response = signed_in.get("/contacts/", {"q": "o"})
        counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
        assert len(counts) == 1 and all("LIMIT" in sql.upper() for sql in counts)
        assert re.search(r"3 contacts\s+match", response.content.decode())
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE contacts_contact")
        with CaptureQueriesContext(connection) as queries:
            response = signed_in.get("/contacts/", {"q": "o"})
        assert not [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]  # the planner's estimate
        assert "about " in response.content.decode()


def test_save_view_then_reopen_it_applies_its_filters(signed_in, people, staff_user):
    vip = TagFactory(name="vip")
    response = signed_in.post(
        "/contacts/views/", {"name": "VIPs", "query": f"tag={vip.pk}&sort=name&cols=tags", "shared": "on"}
    )
    view = SavedView.objects.get(owner=staff_user, name="VIPs")
    assert response["Location"] == f"/contacts/?view={view.pk}"
    reopened = signed_in.get(response["Location"])
    assert names_in(reopened) == ["Ana Lima", "Bo Chen"]
    assert "<h1>VIPs</h1>" in reopened.content.decode()


def test_shared_views_are_seen_by_the_team_private_ones_are_not(client, staff_user):
    _admin, alice, bob = team()
    shared = services.save_view(owner=alice, name="Team", query="q=a", shared=True)
    private = services.save_view(owner=alice, name="Mine", query="q=b")
    client.force_login(bob)
    assert client.get(f"/contacts/?view={shared.pk}").status_code == 200
    assert client.get(f"/contacts/?view={private.pk}").status_code == 404
    client.post(f"/contacts/views/{shared.pk}/delete/")
    assert SavedView.objects.filter(pk=shared.pk).exists()  # only the owner deletes
    client.force_login(alice)
    client.post(f"/contacts/views/{shared.pk}/delete/")
    assert not SavedView.objects.filter(pk=shared.pk).exists()


def test_saving_a_view_under_an_existing_name_overwrites_it(staff_user):
    first = services.save_view(owner=staff_user, name="Hot", query="q=a")
    second = services.save_view(owner=staff_user, name="hot", query="q=b", shared=True)
    assert first.pk == second.pk and SavedView.objects.get().query == "q=b"


def test_bulk_actions_on_selected_contacts(signed_in, people, staff_user):
    ids = [people["ana"].pk, people["cy"].pk]
    _lead, _qualified, won = people["stages"]
    base = {"scope": "selected", "ids": ids, "query": ""}
    signed_in.post("/contacts/bulk/", {**base, "action": "assign_owner", "owner": staff_user.pk})
    signed_in.post("/contacts/bulk/", {**base, "action": "add_tag", "tag": "lead"})
    signed_in.post("/contacts/bulk/", {**base, "action": "remove_tag", "tag": "vip"})
    signed_in.post("/contacts/bulk/", {**base, "action": "move_stage", "stage": won.pk})
    for contact in Contact.objects.filter(pk__in=ids):
        assert contact.owner == staff_user
        assert [t.name for t in contact.tags.all()] == ["lead"]
        assert contact.stage_memberships.get().stage == won
    assert HistoryEntry.objects.filter(contact_id=people["ana"].pk, action="stage_changed", changes__has_key="stage.Sales").count() == 2
    assert people["bo"].stage_memberships.get().stage.name == "Lead"


def test_bulk_action_on_all_matching_contacts_uses_the_filters(signed_in, people):
    vip = TagFactory(name="vip")
    response = signed_in.post(
        "/contacts/bulk/", {"scope": "all", "query": f"tag={vip.pk}", "action": "add_tag", "tag": "lead"}, follow=True
    )
    assert "1 contact changed" in response.content.decode()  # Bo already had it
    assert set(Contact.objects.filter(tags__name="lead").values_list("name", flat=True)) == {"Ana Lima", "Bo Chen", "Cy Diaz"}


def test_bulk_export_of_selected_contacts_streams_csv(signed_in, people):
    response = signed_in.post(
        "/contacts/bulk/", {"scope": "selected", "ids": [people["bo"].pk], "query": "cols=phone", "action": "export_csv"}
    )
    body = b"".join(response.streaming_content).decode("utf-8-sig").splitlines()
    assert body == ["Name,Phone", "Bo Chen,(202) 555-0102"]


@pytest.mark.parametrize("sort", ["cf.plan", "-cf.plan", "cf.consent", "-cf.score", "cf.since"])
def test_keyset_pages_by_custom_columns_cover_every_row_once_forwards_and_back(signed_in, staff_user, monkeypatch, sort):
    monkeypatch.setattr("contacts.views.PAGE_SIZE", 3)
    CustomFieldFactory(key="plan", label="Plan", type="single_choice", choices=["Starter", "Pro"])
    CustomFieldFactory(key="consent", label="Consent", type="boolean")
    CustomFieldFactory(key="score", label="Score", type="number")
    CustomFieldFactory(key="since", label="Since", type="date")
    actor = Actor.for_user(staff_user)
    for i in range(8):
        custom = {"plan": ["Starter", "Pro"][i % 2], "consent": bool(i % 3), "score": i % 4, "since": f"2026-01-0{1 + i % 3}"}
        if i == 5:
            custom = {}
        services.upsert_contact(data={"name": f"Person {i}"}, custom=custom, actor=actor, source=Source.MANUAL)
    pages, last = _follow_pages(signed_in, {"sort": sort})
    flat = [n for page in pages for n in page]
    assert len(pages) == 3 and sorted(flat) == sorted(Contact.objects.values_list("name", flat=True))
    assert _walk_back(signed_in, last) == pages


@pytest.mark.parametrize("cursor", ["WyJ2IiwiIiwxXQ", "garbage", "WyJkdCIsIm5vIiwxXQ", "WzEsMiwzLDRd"])
@pytest.mark.parametrize("direction", ["after", "before"])
def test_a_hand_edited_cursor_never_fails(signed_in, people, cursor, direction):
    for sort in ("name", "-created", "stage", "tags"):
        response = signed_in.get("/contacts/", {"sort": sort, direction: cursor})
        assert response.status_code in (200, 400), (sort, response.status_code)
