"""The public page: frameable, cookie-free POST, spam protection, accessible errors, no existence leaks."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from contacts.models import Contact
from crm_hub.actors import Actor
from forms_app import services
from forms_app.models import Form, Submission
from forms_app.spam import hash_ip
from tests.forms_app.factories import CONTACT_FIELDS, make_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def visitor():
    # Django's CSRF check on: the public POST must work without any cookie, as inside a cross-site iframe.
    return Client(enforce_csrf_checks=True, REMOTE_ADDR="203.0.113.7")


def token_of(response) -> str:
    return re.search(r'name="form_token" value="([^"]+)"', response.content.decode()).group(1)


def post(visitor, form, data, *, embed=False, files=None):
    page = visitor.get(f"/f/{form.slug}/" + ("?embed=1" if embed else ""))
    payload = {"form_token": token_of(page), **data, **(files or {})}
    return visitor.post(f"/f/{form.slug}/" + ("?embed=1" if embed else ""), payload)


def test_public_page_is_frameable_and_staff_pages_are_not(visitor, client, staff_user):
    form = make_form()
    page = visitor.get(f"/f/{form.slug}/?embed=1")
    assert page.status_code == 200 and "X-Frame-Options" not in page
    assert 'name="csrfmiddlewaretoken"' not in page.content.decode()
    client.force_login(staff_user)
    assert client.get(f"/forms/{form.pk}/")["X-Frame-Options"] == "DENY"


def test_valid_post_without_csrf_cookie_creates_contact_and_redirects_to_thanks(visitor):
    form = make_form(success_message="Thanks, talk soon!")
    response = post(visitor, form, {"fname": "Ana", "femail": "ana@example.com"}, embed=True)
    assert response.status_code == 302 and response["Location"] == f"/f/{form.slug}/thanks/?embed=1"
    thanks = visitor.get(response["Location"])
    assert "Thanks, talk soon!" in thanks.content.decode() and "X-Frame-Options" not in thanks
    submission = Submission.objects.get()
    assert submission.contact.source == "form"
    assert submission.ip_hash == hash_ip("203.0.113.7") and "203.0.113.7" not in str(submission.__dict__)


def test_post_without_a_valid_form_token_writes_nothing(visitor):
    form = make_form()
    for token in ("", "forged:token", services_token_for_other_form()):
        response = visitor.post(f"/f/{form.slug}/", {"form_token": token, "fname": "Ana", "femail": "ana@example.com"})
        assert response.status_code == 400
        assert "send the form again" in response.content.decode()
    assert not Contact.objects.exists()


def services_token_for_other_form():
    from forms_app.spam import make_token

    return make_token(999999)


def test_honeypot_stops_bots_without_creating_contacts(visitor):
    form = make_form()
    response = post(visitor, form, {"fname": "Bot", "femail": "bot@example.com", "website": "http://spam.example"})
    assert response.status_code == 302  # looks like success to the bot
    assert not Contact.objects.exists() and not Submission.objects.exists()


def test_rate_limit_stops_floods_from_one_ip_without_creating_contacts(visitor, settings):
    settings.FORMS_RATE_LIMIT = 3
    form = make_form()
    for n in range(3):
        assert post(visitor, form, {"fname": f"P{n}", "femail": f"p{n}@example.com"}).status_code == 302
    blocked = post(visitor, form, {"fname": "P4", "femail": "p4@example.com"})
    assert blocked.status_code == 429 and "try again" in blocked.content.decode()
    assert Contact.objects.count() == 3
    other_ip = Client(REMOTE_ADDR="198.51.100.2")
    assert post(other_ip, form, {"fname": "Q", "femail": "q@example.com"}).status_code == 302


def test_behind_a_proxy_a_forged_forwarded_for_does_not_dodge_the_rate_limit(settings):
    # Our proxy (REMOTE_ADDR 10.0.0.2) appends the address it saw; whatever is left of it came from the bot.
    settings.FORMS_TRUST_X_FORWARDED_FOR = True
    settings.CRM_LOGIN_TRUSTED_PROXIES = 1
    settings.FORMS_RATE_LIMIT = 2
    form = make_form()
    for n in range(3):
        bot = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}, 203.0.113.9")
        status = post(bot, form, {"fname": f"B{n}", "femail": f"b{n}@example.com"}).status_code
        assert status == (302 if n < 2 else 429)
    submission = Submission.objects.first()
    assert submission.ip_hash == hash_ip("203.0.113.9")
    # Another visitor, seen by the same proxy, has a budget of its own.
    other = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.10")
    assert post(other, form, {"fname": "Q", "femail": "q@example.com"}).status_code == 302


def test_ipv6_visitors_are_counted_by_their_64_block_and_told_when_to_retry(settings):
    settings.FORMS_RATE_LIMIT = 2
    settings.FORMS_RATE_LIMIT_WINDOW = 600
    form = make_form()
    statuses = []
    for n in range(1, 4):  # one host rotating through the addresses of its own /64
        rotating = Client(REMOTE_ADDR=f"2001:db8:abcd:12::{n:x}")
        response = post(rotating, form, {"fname": f"V{n}", "femail": f"v{n}@example.com"})
        statuses.append(response.status_code)
    assert statuses == [302, 302, 429]
    assert response["Retry-After"] == "600"
    assert Contact.objects.count() == 2
    # Each submission still records its own address's hash.
    assert set(Submission.objects.values_list("ip_hash", flat=True)) == {
        hash_ip("2001:db8:abcd:12::1"), hash_ip("2001:db8:abcd:12::2")}
    other_block = Client(REMOTE_ADDR="2001:db8:abcd:13::1")
    assert post(other_block, form, {"fname": "W", "femail": "w@example.com"}).status_code == 302


def test_without_a_trusted_proxy_forwarded_for_is_ignored(settings):
    settings.FORMS_TRUST_X_FORWARDED_FOR = False
    form = make_form()
    spoofer = Client(REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert post(spoofer, form, {"fname": "S", "femail": "s@example.com"}).status_code == 302
    assert Submission.objects.get().ip_hash == hash_ip("203.0.113.7")


def test_validation_errors_sit_next_to_their_fields_with_aria_links(visitor):
    form = make_form()
    response = post(visitor, form, {"fname": "Ana", "femail": "nope", "fphone": "(561) 555-0192"})
    html = response.content.decode()
    assert response.status_code == 400
    assert re.search(r'id="f-femail"[^>]*aria-describedby="f-femail-error"[^>]*aria-invalid="true"', html)
    assert '<div class="pf-error" id="f-femail-error"><p>Enter a valid email address' in html
    assert 'value="(561) 555-0192"' in html  # answers are kept
    assert 'href="#f-femail"' in html  # the error summary links to the field
    assert not Contact.objects.exists()


def test_same_page_whether_or_not_the_person_exists(visitor):
    form = make_form()
    first = post(visitor, form, {"fname": "Ana", "femail": "ana@example.com"})
    again = post(visitor, form, {"fname": "Ana", "femail": "ana@example.com"})
    assert (first.status_code, first["Location"]) == (again.status_code, again["Location"])
    assert visitor.get(first["Location"]).content == visitor.get(again["Location"]).content
    assert Contact.objects.count() == 1 and Submission.objects.count() == 2


def test_oversize_file_is_refused_with_a_message(visitor, settings):
    settings.FORMS_MAX_FILE_BYTES = 2048
    fields = [dict(CONTACT_FIELDS[0]), {"id": "fcv", "type": "file", "label": "CV", "maps_to": "contact.files"}]
    form = make_form(fields=fields)
    big = SimpleUploadedFile("cv.pdf", b"%PDF" + b"x" * 4096, content_type="application/pdf")
    response = post(visitor, form, {"fname": "Ana"}, files={"fcv": big})
    html = response.content.decode()
    assert response.status_code == 400
    assert 'id="f-fcv-error"' in html and "This file is too large (4 KB); the limit is 2 KB." in html
    assert not Contact.objects.exists()


def test_closed_form_says_so_politely_and_accepts_nothing(visitor):
    form = make_form()
    page = visitor.get(f"/f/{form.slug}/")
    token = token_of(page)
    services.set_form_status(form=form, status=Form.Status.CLOSED, actor=Actor.for_system("t"))
    closed_page = visitor.get(f"/f/{form.slug}/")
    assert closed_page.status_code == 200 and "no longer accepts responses" in closed_page.content.decode()
    assert 'name="form_token"' not in closed_page.content.decode()
    response = visitor.post(f"/f/{form.slug}/", {"form_token": token, "fname": "Ana", "femail": "ana@example.com"})
    assert response.status_code == 410 and "no longer accepts responses" in response.content.decode()
    assert not Contact.objects.exists() and not Submission.objects.exists()


def test_draft_form_is_not_public(visitor):
    form = make_form(publish=False)
    assert visitor.get(f"/f/{form.slug}/").status_code == 404


def test_views_are_counted_and_redirect_url_is_followed(visitor):
    form = make_form(redirect_url="https://example.com/thanks")
    post(visitor, form, {"fname": "Ana", "femail": "ana@example.com"})
    response = post(visitor, form, {"fname": "Bo", "femail": "bo@example.com"})
    assert response["Location"] == "https://example.com/thanks"
    assert Form.objects.get(pk=form.pk).views_count == 2


def test_choice_and_checkbox_fields_round_trip(visitor):
    fields = [
        dict(CONTACT_FIELDS[0]),
        {"id": "fplan", "type": "single_choice", "label": "Plan", "choices": ["Basic", "Pro"], "required": True, "maps_to": ""},
        {"id": "ftopics", "type": "multiple_choice", "label": "Topics", "choices": ["A", "B", "C"], "maps_to": ""},
        {"id": "fok", "type": "checkbox", "label": "I agree", "required": True, "maps_to": ""},
        {"id": "fday", "type": "date", "label": "Best day", "maps_to": ""},
    ]
    form = make_form(fields=fields)
    bad = post(visitor, form, {"fname": "Ana", "fplan": "Gold", "ftopics": ["A", "C"]})
    html = bad.content.decode()
    assert 'id="f-fplan-error"' in html and 'id="f-fok-error"' in html
    assert re.search(r'value="C" checked', html)
    post(visitor, form, {"fname": "Ana", "fplan": "Pro", "ftopics": ["C", "A"], "fok": "yes", "fday": "2026-12-01"})
    assert Submission.objects.get().answers == {
        "fname": "Ana", "fplan": "Pro", "ftopics": ["A", "C"], "fok": True, "fday": "2026-12-01",
    }


@pytest.mark.parametrize("sent", ["no", "", "off", "false", "0"])
def test_a_required_checkbox_sent_as_no_is_not_ticked(visitor, sent):
    fields = [dict(CONTACT_FIELDS[0]), {"id": "fok", "type": "checkbox", "label": "I agree", "required": True, "maps_to": ""}]
    form = make_form(fields=fields)
    response = post(visitor, form, {"fname": "Ana", "fok": sent})
    assert response.status_code == 400 and 'id="f-fok-error"' in response.content.decode()
    assert not Submission.objects.exists()
    post(visitor, form, {"fname": "Ana", "fok": "on"})
    assert Submission.objects.get().answers["fok"] is True


def test_body_larger_than_any_valid_submission_is_refused_unread(visitor, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    form = make_form()
    page = visitor.get(f"/f/{form.slug}/")
    response = visitor.post(
        f"/f/{form.slug}/", {"form_token": token_of(page), "fname": "Ana", "femail": "ana@example.com", "fmsg": "z" * 90_000}
    )
    assert response.status_code == 413 and "too large" in response.content.decode()
    assert not Contact.objects.exists()


def test_one_page_sent_twice_is_one_submission(visitor):
    # A double click, or the browser resending the POST: one person, one submission, one run of the rules.
    form = make_form()
    page = visitor.get(f"/f/{form.slug}/")
    payload = {"form_token": token_of(page), "fname": "Ana", "femail": "ana@example.com"}
    first = visitor.post(f"/f/{form.slug}/", payload)
    again = visitor.post(f"/f/{form.slug}/", payload)
    assert first.status_code == again.status_code == 302 and first["Location"] == again["Location"]
    assert Submission.objects.count() == 1


def test_a_refused_answer_does_not_spend_the_page(visitor):
    form = make_form()
    page = visitor.get(f"/f/{form.slug}/")
    token = token_of(page)
    assert visitor.post(f"/f/{form.slug}/", {"form_token": token, "fname": "Ana", "femail": "nope"}).status_code == 400
    fixed = visitor.post(f"/f/{form.slug}/", {"form_token": token, "fname": "Ana", "femail": "ana@example.com"})
    assert fixed.status_code == 302 and Submission.objects.count() == 1
