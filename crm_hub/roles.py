"""The "Admins" group: membership makes a CRM admin, in Django admin as in the web UI.

``contacts.selectors.user_is_crm_admin`` treats superusers and members of the group
as admins; Django admin and its permission checks read model permissions instead.
So the group carries every model permission of the project's apps except the ones
their admins refuse anyway (adding history entries by hand, editing submissions,
...), and a member is made staff, without which nobody can sign in at all.

Kept in step by two receivers (Django's ``post_migrate`` and ``m2m_changed``: code
we do not own): after every ``migrate`` the group exists and has any permission a
new model brought, and adding someone to the group makes them staff.
"""

from __future__ import annotations

import logging

from django.contrib import admin
from django.contrib.auth import get_permission_codename, get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db.models.signals import m2m_changed, post_migrate
from django.dispatch import receiver
from django.http import HttpRequest

ADMINS_GROUP = "Admins"  # the name contacts.selectors.user_is_crm_admin looks for
PROJECT_APPS = ("crm_hub", "contacts", "conversations", "forms_app", "automations")
ACTIONS = ("add", "change", "delete", "view")

logger = logging.getLogger(__name__)


class _Superuser(AnonymousUser):
    """A stand-in superuser: what an admin refuses even to a superuser is refused on purpose."""

    is_active = True
    is_staff = True
    is_superuser = True
    is_anonymous = False
    is_authenticated = True
    pk = id = None

    def has_perm(self, perm, obj=None) -> bool:
        return True

    def has_perms(self, perm_list, obj=None) -> bool:
        return True

    def has_module_perms(self, module) -> bool:
        return True


def denied_codenames(app_label: str) -> set[str]:
    """Return the permission codenames of ``app_label`` that its ModelAdmins refuse even to a superuser."""
    request = HttpRequest()
    request.method = "GET"
    request.user = _Superuser()
    denied: set[str] = set()
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label != app_label:
            continue
        for action in ACTIONS:
            check = getattr(model_admin, f"has_{action}_permission")
            try:
                allowed = check(request)
            except Exception:  # a check that needs more than a request decides per object: leave it granted
                logger.debug("could not ask %s.has_%s_permission", type(model_admin).__name__, action, exc_info=True)
                continue
            if not allowed:
                denied.add(get_permission_codename(action, model._meta))
    return denied


def sync_admins_group(*, apps=None, using: str = "default", app_labels=PROJECT_APPS):
    """Create the group and give it each permission of ``app_labels`` it lacks, but the denied ones.

    Never takes a permission away: one an operator added by hand stays.
    """
    from django.apps import apps as global_apps

    apps = apps or global_apps
    try:
        Group = apps.get_model("auth", "Group")
        Permission = apps.get_model("auth", "Permission")
    except LookupError:  # auth not migrated in this run
        return None
    group, _ = Group.objects.using(using).get_or_create(name=ADMINS_GROUP)
    wanted = []
    for label in app_labels:
        denied = denied_codenames(label)
        wanted += [
            pk for pk, codename in Permission.objects.using(using)
            .filter(content_type__app_label=label).values_list("pk", "codename")
            if codename not in denied
        ]
    group.permissions.add(*wanted)
    return group


@receiver(post_migrate, dispatch_uid="crm_hub.roles.admins_group")
def _admins_group_after_migrate(sender, app_config=None, using="default", apps=None, **kwargs) -> None:
    app_config = app_config or sender
    if getattr(app_config, "label", None) not in PROJECT_APPS:
        return
    from django.contrib.auth.management import create_permissions

    # This receiver may run before django.contrib.auth's own (admin is listed first in
    # INSTALLED_APPS): create this app's permissions now, as auth would a moment later.
    create_permissions(app_config, verbosity=0, using=using, apps=apps or app_config.apps)
    sync_admins_group(apps=apps, using=using, app_labels=(app_config.label,))
    _make_members_staff(using=using)  # members added before this rule existed


def _make_members_staff(*, using: str = "default", user_ids=None) -> int:
    queryset = get_user_model().objects.using(using).filter(groups__name=ADMINS_GROUP, is_staff=False)
    if user_ids is not None:
        queryset = queryset.filter(pk__in=user_ids)
    return get_user_model().objects.using(using).filter(pk__in=list(queryset.values_list("pk", flat=True))).update(
        is_staff=True
    )


@receiver(m2m_changed, sender=get_user_model().groups.through, dispatch_uid="crm_hub.roles.admins_are_staff")
def _admins_are_staff(sender, instance, action, reverse, model, pk_set, using="default", **kwargs) -> None:
    """Make whoever joins the Admins group staff (user.groups.add(...) and group.user_set.add(...) alike)."""
    if action != "post_add" or not pk_set:
        return
    if reverse:  # instance is the group, pk_set holds users
        if getattr(instance, "name", None) == ADMINS_GROUP:
            _make_members_staff(using=using, user_ids=pk_set)
        return
    if model.objects.using(using).filter(pk__in=pk_set, name=ADMINS_GROUP).exists():
        _make_members_staff(using=using, user_ids=[instance.pk])
        instance.is_staff = True
