"""Staff pages: who builds, who reviews, filters, CSV export, counts, the contact link and the timeline partial."""

import csv
import datetime as dt
import io
import json

import pytest
from django.contrib.auth.models import Permission
from django.template.loader import render_to_string
from django.utils import timezone

from contacts.models import Contact
from crm_hub.actors import Actor
from forms_app import services
from forms_app.exporting import neutralize
from forms_app.models import Form, Submission
from forms_app.selectors import submissions_for_contact
from tests.contacts.factories import UserFactory
from tests.forms_app.factories import CONTACT_FIELDS, make_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user():
    return UserFactory(username="boss", is_staff=True, is_superuser=True)


@pytest.fixture
def sales_user():
    return UserFactory(username="seller", is_staff=True)


def submit(form, **data):
    return services.submit_form(form=form, data=data).submission


def test_sales_users_review_but_do_not_build(client, sales_user):
    form = make_form()
    client.force_login(sales_user)
    assert client.get("/forms/").status_code == 200
    assert client.get(f"/forms/{form.pk}/").status_code == 200
    assert client.get(f"/forms/{form.pk}/submissions/").status_code == 200
    assert client.get("/forms/new/").status_code == 403
    assert client.get(f"/forms/{form.pk}/edit/").status_code == 403
    assert client.post(f"/forms/{form.pk}/status/", {"status": "closed"}).status_code == 403
    assert b"New form" not in client.get("/forms/").content


def test_staff_with_forms_permission_may_build(client, sales_user):
    sales_user.user_permissions.add(Permission.objects.get(codename="change_form"))
    client.force_login(sales_user)
    assert client.get("/forms/new/").status_code == 200


def test_anonymous_and_non_staff_are_kept_out(client):
    form = make_form()
    assert client.get(f"/forms/{form.pk}/").status_code == 302
    client.force_login(UserFactory(username="visitor", is_staff=False))
    assert client.get(f"/forms/{form.pk}/submissions/").status_code == 403


def test_builder_creates_and_publishes_a_form_over_http(client, admin_user, lead_setup):
    client.force_login(admin_user)
    page = client.get("/forms/new/")
    assert b"fb-palette" in page.content and b"Sortable.min.js" in page.content
    fields = [dict(f) for f in CONTACT_FIELDS]
    response = client.post(
        "/forms/new/",
        {
            "title": "Demo request", "fields_json": json.dumps(fields), "tags": [t.pk for t in lead_setup["tags"]],
            "stage": lead_setup["stage"].pk, "action": "publish",
        },
    )
    form = Form.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/forms/{form.pk}/"
    assert form.is_open and form.stage == lead_setup["stage"] and form.tags.count() == 2
    assert [f["id"] for f in form.current_version.fields] == ["fname", "femail", "fphone", "fmsg"]


def test_builder_shows_field_errors_and_keeps_the_unsaved_fields(client, admin_user):
    client.force_login(admin_user)
    fields = [{"id": "fa", "type": "text", "label": "", "maps_to": "contact.name"}]
    response = client.post("/forms/new/", {"title": "", "fields_json": json.dumps(fields), "action": "save"})
    assert response.status_code == 400
    assert response.context["field_errors"] == {"fields.fa.label": "Give the field a label."}
    assert response.context["settings_form"].errors["title"]
    assert b'"id": "fa"' in response.content  # the unsaved list is handed back to the builder
    assert not Form.objects.exists()


def test_live_preview_renders_the_public_fields(client, admin_user):
    client.force_login(admin_user)
    fields = [{"id": "fa", "type": "email", "label": "Work email", "help_text": "We never share it", "required": True}]
    response = client.post("/forms/preview/", {"title": "Hello", "fields_json": json.dumps(fields)})
    html = response.content.decode()
    assert "Work email" in html and 'type="email"' in html and 'aria-describedby="f-fa-help"' in html


def test_form_page_shows_counts_share_link_and_embed_snippet(client, sales_user):
    form = make_form()
    Form.objects.filter(pk=form.pk).update(views_count=8)
    submit(form, fname="Ana", femail="ana@example.com")
    submit(form, fname="Bo", femail="bo@example.com")
    client.force_login(sales_user)
    html = client.get(f"/forms/{form.pk}/").content.decode()
    assert 'data-stat="views">8<' in html and 'data-stat="submissions">2<' in html
    assert 'data-stat="conversion">25%<' in html
    assert f"http://testserver/f/{form.slug}/" in html
    assert f"&lt;iframe src=&quot;http://testserver/f/{form.slug}/?embed=1&quot;" in html or \
        f'&lt;iframe src="http://testserver/f/{form.slug}/?embed=1"' in html


def test_submissions_list_filters_by_date_and_status(client, sales_user):
    form = make_form()
    old = submit(form, fname="Old", femail="old@example.com")
    Submission.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=10))
    new = submit(form, fname="New", femail="new@example.com")
    services.mark_submission(submission=new, status="reviewed", actor=Actor.for_user(sales_user))
    client.force_login(sales_user)
    base = f"/forms/{form.pk}/submissions/"
    since = (timezone.localdate() - dt.timedelta(days=2)).isoformat()
    assert [s.pk for s in client.get(base).context["submissions"]] == [new.pk, old.pk]
    assert [s.pk for s in client.get(base, {"submitted_from": since}).context["submissions"]] == [new.pk]
    assert [s.pk for s in client.get(base, {"status": "new"}).context["submissions"]] == [old.pk]


def test_every_submission_can_be_reached_a_page_at_a_time(client, sales_user, monkeypatch):
    monkeypatch.setattr("forms_app.views.SUBMISSIONS_PER_PAGE", 3)
    form = make_form()
    made = [submit(form, fname=f"P{i}", femail=f"p{i}@example.com") for i in range(7)]
    Submission.objects.filter(pk=made[0].pk).update(status="reviewed")
    client.force_login(sales_user)
    base = f"/forms/{form.pk}/submissions/"
    seen = []
    for number in (1, 2, 3):
        response = client.get(base, {"page": number})
        seen += [s.pk for s in response.context["submissions"]]
    assert sorted(seen) == sorted(s.pk for s in made)
    page = client.get(base, {"status": "new", "page": 2}).content.decode()
    assert "4–6 of 6 submissions" in page and "status=new&amp;page=1" in page and 'rel="next"' not in page
    assert client.get(base, {"page": "99"}).status_code == 200  # past the end: the last page


def test_csv_export_neutralizes_formulas(client, sales_user):
    form = make_form()
    submit(form, fname="=HYPERLINK(\"http://evil\")", femail="eve@example.com", fmsg="+1 call me\n@once")
    client.force_login(sales_user)
    response = client.get(f"/forms/{form.pk}/submissions/export.csv")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert rows[0] == ["submitted_at", "status", "contact_id", "contact", "version", "Full name", "Email", "Phone", "Message"]
    assert rows[1][3] == "'=HYPERLINK(\"http://evil\")" and rows[1][5] == "'=HYPERLINK(\"http://evil\")"
    assert rows[1][8] == "'+1 call me\n@once"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("=1+1", "'=1+1"), ("-2", "'-2"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
     ("+33 1", "'+33 1"), ("plain", "plain"), (None, ""), (True, "yes"), (["=a", "b"], "'=a, b"), (42, "42")],
)
def test_neutralize(value, expected):
    assert neutralize(value) == expected


def test_submission_page_links_to_its_contact_and_shows_source_tags_stage(client, sales_user, lead_setup):
    form = make_form(tags=lead_setup["tags"], stage=lead_setup["stage"])
    submission = submit(form, fname="Ana", femail="ana@example.com", fmsg="Hello there")
    client.force_login(sales_user)
    html = client.get(f"/forms/submissions/{submission.pk}/").content.decode()
    contact = Contact.objects.get()
    assert f"/{contact.pk}/" in html and ">Ana</a>" in html
    assert 'data-contact="source">Form<' in html and "Web lead" in html and "Sales → New lead" in html
    assert "Hello there" in html
    client.post(f"/forms/submissions/{submission.pk}/", {"status": "reviewed"})
    assert Submission.objects.get().status == "reviewed"


def test_timeline_selector_is_one_query_and_partial_renders_answers(django_assert_num_queries):
    form = make_form()
    first = submit(form, fname="Ana", femail="ana@example.com", fmsg="First")
    submit(form, fname="Ana", femail="ana@example.com", fmsg="Second")
    contact = Contact.objects.get()
    with django_assert_num_queries(1):
        items = submissions_for_contact(contact)
        html = "".join(render_to_string("forms_app/_timeline_submission.html", {"submission": s}) for s in items)
    assert len(items) == 2 and items[1].pk == first.pk
    assert html.count('data-kind="form_submission"') == 2 and "Second" in html and "Contact us" in html


def test_sales_users_limited_to_own_contacts_see_only_their_submissions(client, sales_user, settings):
    settings.CRM_SALES_SEE_OWN_ONLY = True
    form = make_form(owner=sales_user)
    mine = submit(form, fname="Mine", femail="mine@example.com")
    other_form = make_form(title="Other", owner=UserFactory(username="colleague"))
    theirs = submit(other_form, fname="Theirs", femail="theirs@example.com")
    client.force_login(sales_user)
    assert [s.pk for s in client.get(f"/forms/{form.pk}/submissions/").context["submissions"]] == [mine.pk]
    assert list(client.get(f"/forms/{other_form.pk}/submissions/").context["submissions"]) == []
    assert client.get(f"/forms/submissions/{theirs.pk}/").status_code == 404
    export = b"".join(client.get(f"/forms/{other_form.pk}/submissions/export.csv").streaming_content)
    assert b"Theirs" not in export


def test_sales_users_limited_to_own_contacts_see_counts_of_their_submissions_only(client, sales_user, settings):
    settings.CRM_SALES_SEE_OWN_ONLY = True
    colleague = UserFactory(username="colleague")
    form = make_form(owner=colleague)
    for n in range(3):
        submit(form, fname=f"Theirs {n}", femail=f"theirs{n}@example.com")
    client.force_login(sales_user)
    listed = {f.pk: f.submission_count for f in client.get("/forms/").context["forms"]}
    assert listed[form.pk] == 0
    assert client.get(f"/forms/{form.pk}/").context["stats"].submissions == 0
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    assert client.get(f"/forms/{form.pk}/").context["stats"].submissions == 3
