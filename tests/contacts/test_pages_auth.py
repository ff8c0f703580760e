"""Login, logout, the home redirect, staff-only access and error pages in the app's look."""

import pytest
from django.contrib.auth.models import Group
from django.test import override_settings

from tests.contacts.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_anonymous_user_is_sent_to_login(client):
    response = client.get("/contacts/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/contacts/")


def test_home_redirects_signed_in_user_to_contact_list(client, staff_user):
    client.force_login(staff_user)
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/contacts/"


def test_login_page_signs_in_staff_and_renders_layout(client):
    UserFactory(username="sam", is_staff=True, password="pw-secret-123")
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert b'name="username"' in page.content
    response = client.post("/accounts/login/", {"username": "sam", "password": "pw-secret-123"}, follow=True)
    assert response.redirect_chain[-1][0] == "/contacts/"
    html = response.content.decode()
    for label in ("Contacts", "Pipeline", "My tasks", 'href="/forms/"', "Log out"):
        assert label in html
    assert "/admin/" not in html  # a sales user gets no admin link


def test_login_refuses_non_staff_account(client):
    UserFactory(username="customer", is_staff=False, password="pw-secret-123")
    response = client.post("/accounts/login/", {"username": "customer", "password": "pw-secret-123"})
    assert response.status_code == 200
    assert b"no access to the CRM" in response.content
    assert "_auth_user_id" not in client.session


def test_non_staff_session_gets_403_page(client):
    client.force_login(UserFactory(username="outsider", is_staff=False))
    response = client.get("/contacts/")
    assert response.status_code == 403
    assert b"No access" in response.content and b"app.css" in response.content


def test_admin_link_shown_to_superuser_and_admins_group(client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    assert b'href="/admin/"' in client.get("/contacts/").content
    member = UserFactory(username="boss", is_staff=True)
    member.groups.add(Group.objects.get_or_create(name="Admins")[0])
    client.force_login(member)
    assert b'href="/admin/"' in client.get("/contacts/").content


def test_logout_by_post_ends_session(client, staff_user):
    client.force_login(staff_user)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert client.get("/contacts/").status_code == 302


@override_settings(DEBUG=False)
def test_404_page_uses_app_layout(client, staff_user):
    client.force_login(staff_user)
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert b"Not found" in response.content and b"app.css" in response.content


def test_500_handler_renders_without_database(rf):
    from contacts.views import error_500

    response = error_500(rf.get("/"))
    assert response.status_code == 500
    assert b"Something went wrong" in response.content


def test_ui_pages_answer_head_like_get(client, staff_user):
    client.force_login(staff_user)
    for path in ("/", "/contacts/", "/pipeline/", "/tasks/", "/forms/"):
        head, get = client.head(path), client.get(path)
        assert head.status_code == get.status_code, path
        assert head.status_code in (200, 302), path


def test_a_failed_csrf_check_is_the_apps_own_page(staff_user):
    from django.test import Client

    from tests.contacts.ui_helpers import make_contact

    contact = make_contact(staff_user, name="Ana")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff_user)
    response = browser.post(f"/contacts/{contact.pk}/notes/", {"body": "x"})
    assert response.status_code == 403
    html = response.content.decode()
    assert "This form has expired" in html and "Go to contacts" in html
