"""Odd input on form pages (NUL characters, malformed headers, unknown values) is an answer, never a 500."""

import json
import re

import pytest
from django.test import Client

from contacts.models import Contact
from forms_app import services
from forms_app.models import Form, Submission
from tests.contacts.factories import UserFactory
from tests.forms_app.factories import CONTACT_FIELDS, make_form

pytestmark = pytest.mark.django_db(transaction=True)  # as in production: PostgreSQL sees each write


def token_of(response) -> str:
    return re.search(r'name="form_token" value="([^"]+)"', response.content.decode()).group(1)


def test_a_nul_in_a_public_answer_is_a_field_error():
    form = make_form()
    visitor = Client(REMOTE_ADDR="203.0.113.7")
    page = visitor.get(f"/f/{form.slug}/")
    response = visitor.post(f"/f/{form.slug}/", {"form_token": token_of(page), "fname": "Ana", "femail": "a@example.com",
                                                 "fmsg": "hi\x00there"})
    assert response.status_code == 400
    assert "cannot be stored" in response.content.decode()
    assert not Contact.objects.exists() and not Submission.objects.exists()


def test_a_malformed_content_length_is_a_400():
    form = make_form()
    response = Client(REMOTE_ADDR="203.0.113.8").post(f"/f/{form.slug}/", {"fname": "x"}, CONTENT_LENGTH="abc")
    assert response.status_code == 400


def test_an_unknown_submission_status_is_a_message(client):
    form = make_form()
    submission = services.submit_form(form=form, data={"fname": "Ana", "femail": "a@example.com"}).submission
    client.force_login(UserFactory(username="boss", is_superuser=True))
    response = client.post(f"/forms/submissions/{submission.pk}/", {"status": "bogus"}, follow=True)
    assert response.status_code == 200
    submission.refresh_from_db()
    assert submission.status != "bogus"


def test_the_builder_takes_nul_in_labels_and_a_preview_takes_odd_choices(client):
    client.force_login(UserFactory(username="boss", is_superuser=True))
    fields = [dict(f) for f in CONTACT_FIELDS]
    fields[0]["label"] = "Full\x00 name"
    response = client.post("/forms/new/", {"title": "T", "fields_json": json.dumps(fields), "action": "publish"})
    assert response.status_code in (200, 302)
    assert Form.objects.get().current_version.fields[0]["label"] == "Full name"
    odd = [*fields, {"type": "single_choice", "id": "a", "label": "x", "choices": 5}]
    assert client.post("/forms/preview/", {"title": "T", "fields_json": json.dumps(odd)}).status_code == 200


def test_board_card_with_a_non_numeric_pipeline_is_404(client):
    contact = Contact.objects.create(name="A", source="api")
    client.force_login(UserFactory(username="boss", is_superuser=True))
    for value in ("abc", "1.5", "99999999999999999999"):
        assert client.get(f"/pipeline/cards/{contact.pk}/", {"pipeline": value}).status_code == 404
