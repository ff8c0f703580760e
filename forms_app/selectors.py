"""Reads shared by the forms pages, the contact timeline, exports and admin."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet
from django.urls import NoReverseMatch, reverse

from contacts.models import Contact, Stage
from contacts.selectors import sees_only_own_contacts, user_is_crm_admin, visible_contacts
from forms_app.models import Form, Submission


def user_can_build_forms(user) -> bool:
    """Return whether ``user`` may create and edit forms: CRM admins, or staff granted the forms permissions."""
    if user is None or not user.is_authenticated or not user.is_active or not user.is_staff:
        return False
    return user_is_crm_admin(user) or user.has_perm("forms_app.change_form")


def forms_with_counts(user=None) -> QuerySet[Form]:
    """Forms with the number of submissions ``user`` may see (all of them for everyone else)."""
    counted = Count("submissions")
    if user is not None and sees_only_own_contacts(user):
        counted = Count("submissions", filter=Q(submissions__contact__in=visible_contacts(user)))
    return Form.objects.select_related("current_version").annotate(submission_count=counted)


@dataclass(frozen=True)
class FormStats:
    views: int
    submissions: int

    @property
    def conversion(self) -> float | None:
        """Submissions per view, or None before anyone has seen the form."""
        return self.submissions / self.views if self.views else None


def form_stats(form: Form, user=None) -> FormStats:
    submissions = form.submissions.all() if user is None else _visible_to(form.submissions.all(), user)
    return FormStats(views=form.views_count, submissions=submissions.count())


def _visible_to(queryset: QuerySet[Submission], user) -> QuerySet[Submission]:
    """Limit to submissions whose contact ``user`` may see (sales users with CRM_SALES_SEE_OWN_ONLY)."""
    if sees_only_own_contacts(user):
        return queryset.filter(contact__in=visible_contacts(user))
    return queryset


def submissions_for_form(form: Form, user) -> QuerySet[Submission]:
    return _visible_to(form.submissions.select_related("contact", "version"), user).order_by("-created_at", "-id")


def submission_detail(pk: int, user) -> Submission:
    return _visible_to(Submission.objects.select_related("form", "version", "contact"), user).get(pk=pk)


def submissions_for_contact(contact: Contact) -> list[Submission]:
    """Return the contact's submissions, newest first, with their form and version, in one query."""
    return list(
        Submission.objects.filter(contact=contact)
        .select_related("form", "version")
        .order_by("-created_at", "-id")
    )


def export_columns(form: Form) -> list[dict]:
    """Return every field any version of the form had, newest label first, in the newest order."""
    columns: dict[str, dict] = {}
    for version in form.versions.order_by("-number"):
        for definition in version.fields:
            columns.setdefault(definition["id"], definition)
    return list(columns.values())


def contact_url(contact: Contact | None) -> str:
    """Return the contact's page in the web UI, or its admin page where the web UI has none."""
    if contact is None:
        return ""
    try:
        return contact.get_absolute_url()
    except NoReverseMatch:
        return reverse("admin:contacts_contact_change", args=[contact.pk])


def stage_choices() -> QuerySet[Stage]:
    return Stage.objects.select_related("pipeline").order_by("pipeline__position", "pipeline_id", "position", "id")


def staff_users():
    return get_user_model().objects.filter(is_active=True, is_staff=True).order_by("username")


def contact_summary(contact: Contact) -> dict:
    """Return what the submission page shows about its contact: source, tags and stages (two queries)."""
    return {
        "tags": list(contact.tags.order_by("name")),
        "stages": list(contact.stage_memberships.select_related("stage", "pipeline").order_by("pipeline__position")),
    }


def submissions_timeline_source(contact: Contact, limit: int, before=None):
    """Timeline source: the contact's newest ``limit`` submissions (one query)."""
    from contacts.selectors import TimelineItem

    submissions = Submission.objects.filter(contact=contact)
    if before is not None:
        submissions = submissions.filter(created_at__lt=before)
    submissions = submissions.select_related("form", "version").order_by("-created_at", "-id")[:limit]
    return [TimelineItem("form_submission", s.created_at, s) for s in submissions]


def automations_for_form(form: Form) -> list:
    """The active rules a submission of ``form`` sets off: those for this form and those for every form."""
    from automations.models import Rule, Trigger

    return list(
        Rule.objects.filter(active=True, trigger=Trigger.FORM_SUBMITTED)
        .filter(Q(form_id=form.pk) | Q(form_id__isnull=True))
        .order_by("position", "id")
    )
