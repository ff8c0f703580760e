"""Forms in Django admin: browse forms, versions and submissions; open and close forms through the service."""

import pytest

from forms_app import services
from forms_app.models import Form
from tests.contacts.factories import UserFactory
from tests.forms_app.factories import make_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def test_admin_lists_forms_and_submissions(admin_client):
    form = make_form()
    submission = services.submit_form(form=form, data={"fname": "Ana", "femail": "ana@example.com"}).submission
    assert b"Contact us" in admin_client.get("/admin/forms_app/form/").content
    page = admin_client.get(f"/admin/forms_app/form/{form.pk}/change/").content.decode()
    assert f"/forms/{form.pk}/edit/" in page
    assert admin_client.get("/admin/forms_app/submission/").status_code == 200
    detail = admin_client.get(f"/admin/forms_app/submission/{submission.pk}/change/").content.decode()
    assert "Ana" in detail


def test_admin_action_closes_forms(admin_client):
    form = make_form()
    response = admin_client.post(
        "/admin/forms_app/form/", {"action": "close_forms", "_selected_action": [form.pk]}, follow=True
    )
    assert response.status_code == 200
    assert Form.objects.get(pk=form.pk).status == Form.Status.CLOSED
