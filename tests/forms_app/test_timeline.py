import pytest
from django.urls import reverse

from contacts.selectors import contact_timeline
from forms_app.services import submit_form
from tests.contacts.factories import UserFactory
from tests.forms_app.factories import make_form

pytestmark = pytest.mark.django_db


def test_submissions_appear_on_the_contact_timeline_once(client):
    form = make_form(title="Demo request")
    result = submit_form(form=form, data={"fname": "Ana", "femail": "ana@example.com", "fmsg": "Call me"})
    kinds = [item.kind for item in contact_timeline(result.contact)]
    assert kinds.count("form_submission") == 1
    assert not any(item.kind == "change" and item.obj.action == "form_submitted" for item in contact_timeline(result.contact))

    client.force_login(UserFactory(username="boss", is_superuser=True))
    page = client.get(reverse("contacts:detail", args=[result.contact.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-kind="form_submission"' in html and "Demo request" in html and "Call me" in html
