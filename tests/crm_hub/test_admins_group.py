"""Members of the "Admins" group administer the CRM in Django admin too, as README's Roles say."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from contacts.selectors import user_is_crm_admin
from crm_hub.roles import ADMINS_GROUP, sync_admins_group
from tests.contacts.factories import CustomFieldFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(client):
    user = UserFactory(username="ada", is_staff=False)
    user.groups.add(Group.objects.get(name=ADMINS_GROUP))
    user.refresh_from_db()
    client.force_login(user)
    return user


def test_migrate_creates_the_group_with_the_projects_permissions():
    group = Group.objects.get(name=ADMINS_GROUP)
    granted = set(group.permissions.values_list("content_type__app_label", "codename"))
    for wanted in [
        ("contacts", "add_customfield"), ("contacts", "delete_contact"), ("contacts", "change_changerequest"),
        ("contacts", "add_contact"), ("forms_app", "change_form"), ("automations", "add_rule"),
        ("crm_hub", "add_agent"), ("conversations", "view_conversation"), ("contacts", "view_historyentry"),
    ]:
        assert wanted in granted, wanted
    # What the admins refuse to everyone stays out, and nothing outside the project's apps comes in.
    assert ("contacts", "delete_historyentry") not in granted
    assert ("contacts", "change_historyentry") not in granted
    assert {app for app, _ in granted} <= {"crm_hub", "contacts", "conversations", "forms_app", "automations"}


def test_joining_the_group_makes_a_user_staff_whichever_side_adds_them():
    one, two = UserFactory(username="one", is_staff=False), UserFactory(username="two", is_staff=False)
    group = Group.objects.get(name=ADMINS_GROUP)
    one.groups.add(group)
    group.user_set.add(two)
    one.refresh_from_db()
    two.refresh_from_db()
    assert one.is_staff and two.is_staff
    other = UserFactory(username="three", is_staff=False)
    other.groups.add(Group.objects.create(name="Sales"))
    other.refresh_from_db()
    assert not other.is_staff


def test_a_member_uses_django_admin_for_configuration(client, member):
    assert member.is_staff and not member.is_superuser and user_is_crm_admin(member)
    CustomFieldFactory(key="budget")
    for name in [
        "admin:index", "admin:contacts_customfield_changelist", "admin:contacts_customfield_add",
        "admin:contacts_changerequest_changelist", "admin:contacts_contact_import_upload",
        "admin:contacts_tag_add", "admin:contacts_pipeline_add", "admin:automations_rule_changelist",
        "admin:crm_hub_agent_changelist",
    ]:
        assert client.get(reverse(name)).status_code == 200, name
    response = client.post(reverse("admin:contacts_tag_add"), {"name": "vip", "color": "#d97706", "description": ""})
    assert response.status_code == 302


def test_a_member_still_cannot_do_what_admin_refuses_everyone(client, member):
    assert client.get(reverse("admin:contacts_historyentry_add")).status_code == 403


def test_sync_is_idempotent_and_keeps_permissions_added_by_hand():
    group = Group.objects.get(name=ADMINS_GROUP)
    extra = Permission.objects.get(content_type__app_label="auth", codename="view_user")
    group.permissions.add(extra)
    before = group.permissions.count()
    sync_admins_group()
    sync_admins_group()
    assert group.permissions.count() == before
    assert group.permissions.filter(pk=extra.pk).exists()


def test_sync_restores_a_deleted_group():
    Group.objects.filter(name=ADMINS_GROUP).delete()
    group = sync_admins_group()
    assert group.permissions.filter(content_type__app_label="contacts", codename="add_customfield").exists()
