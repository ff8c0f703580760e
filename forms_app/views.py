"""Forms pages: the builder and review pages for staff, and the public page visitors fill in.

Views translate HTTP into selector and service calls; the rules live in
forms_app.services and forms_app.spam.
"""

from __future__ import annotations

from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from contacts.views import new_submission_token, once_per_submission, staff_required
from crm_hub import login_throttle
from crm_hub.actors import Actor
from crm_hub.errors import InputRejected
from forms_app import exporting, selectors, services, spam
from forms_app.filters import SubmissionFilter
from forms_app.forms import FormSettingsForm
from forms_app.models import FieldType, Form, Submission
from forms_app.rendering import field_rows

SETTINGS_FIELDS = ("title", "slug", "description", "success_message", "redirect_url", "tags", "stage", "owner")


def builder_required(view):
    """Require a staff user who may build forms; other staff get 403."""

    @wraps(view)
    @staff_required
    def wrapped(request, *args, **kwargs):
        if not selectors.user_can_build_forms(request.user):
            raise PermissionDenied("Only admins build forms.")
        return view(request, *args, **kwargs)

    return wrapped


# --- Staff: list, builder, form page ---------------------------------------------------


@require_safe
@staff_required
def form_list(request):
    return render(
        request,
        "forms_app/list.html",
        {"forms": selectors.forms_with_counts(request.user), "can_build": selectors.user_can_build_forms(request.user)},
    )


def _builder_context(request, *, form: Form | None, settings_form: FormSettingsForm, fields, field_errors) -> dict:
    return {
        "form_obj": form,
        "settings_form": settings_form,
        "fields": fields,
        "field_errors": field_errors,
        "targets": services.mapping_targets(),
        "field_types": [{"value": value, "label": label} for value, label in FieldType.choices],
        "limits": services.limits(),
        # One save per rendering of the builder: a double click on "Save and publish" saves once.
        "submission_token": new_submission_token(),
    }


@require_http_methods(["GET", "POST"])
@builder_required
@once_per_submission
def form_builder(request, pk: int | None = None):
    form = get_object_or_404(Form.objects.select_related("current_version"), pk=pk) if pk else None
    fields = form.current_version.fields if form and form.current_version else []
    field_errors: dict[str, str] = {}
    if request.method == "POST":
        settings_form = FormSettingsForm(request.POST)
        if settings_form.is_valid():
            data = settings_form.cleaned_data
            fields = data["fields_json"]
            try:
                saved = services.save_form(
                    form=form,
                    settings_in=services.FormSettings(
                        title=data["title"], slug=data["slug"], description=data["description"],
                        success_message=data["success_message"], redirect_url=data["redirect_url"],
                        tags=data["tags"], stage=data["stage"], owner=data["owner"],
                    ),
                    fields=fields,
                    actor=Actor.for_user(request.user),
                    publish=request.POST.get("action") == "publish",
                )
            except InputRejected as exc:
                for error in exc.errors:
                    if error.field in SETTINGS_FIELDS:
                        settings_form.add_error(error.field, error.message)
                    else:
                        field_errors[error.field] = error.message
            else:
                published = saved.is_open and request.POST.get("action") == "publish"
                messages.success(request, "Form published: share the link below." if published else "Form saved.")
                return redirect(saved.get_absolute_url())
        elif isinstance(settings_form.cleaned_data.get("fields_json"), list):
            # Show the field list's own problems now too, not after the settings are fixed.
            fields = settings_form.cleaned_data["fields_json"]
            try:
                services.clean_field_definitions(fields)
            except InputRejected as exc:
                field_errors = {error.field: error.message for error in exc.errors}
    else:
        initial = {"success_message": "", "title": ""}
        if form is not None:
            initial = {name: getattr(form, name) for name in SETTINGS_FIELDS if name != "tags"}
            initial["tags"] = list(form.tags.all())
        settings_form = FormSettingsForm(initial=initial)
    context = _builder_context(request, form=form, settings_form=settings_form, fields=fields, field_errors=field_errors)
    return render(request, "forms_app/builder.html", context, status=400 if field_errors or settings_form.errors else 200)


@require_POST
@builder_required
def form_preview(request):
    """Render the public fields for the builder's live preview from the unsaved field list."""
    settings_form = FormSettingsForm(request.POST)
    settings_form.is_valid()
    raw = settings_form.cleaned_data.get("fields_json") or []
    fields = [f for f in raw if isinstance(f, dict) and f.get("type") in FieldType.values]
    for definition in fields:
        choices = definition.get("choices")
        if isinstance(choices, str):
            definition["choices"] = [c.strip() for c in choices.splitlines() if c.strip()]
        elif not isinstance(choices, list):
            definition["choices"] = []  # a half-typed field list must not break the preview
    return render(
        request,
        "forms_app/_preview.html",
        {
            "title": request.POST.get("title", ""),
            "description": request.POST.get("description", ""),
            "rows": field_rows(fields, {}, {}, services.limits()),
            "limits": services.limits(),
            "preview": True,
        },
    )


@require_safe
@staff_required
def form_detail(request, pk: int):
    form = get_object_or_404(Form.objects.select_related("current_version", "stage__pipeline", "owner"), pk=pk)
    public_url = request.build_absolute_uri(form.get_public_url())
    return render(
        request,
        "forms_app/detail.html",
        {
            "form_obj": form,
            "stats": selectors.form_stats(form, request.user),
            "public_url": public_url,
            "embed_url": f"{public_url}?embed=1",
            "recent": selectors.submissions_for_form(form, request.user)[:5],
            "can_build": selectors.user_can_build_forms(request.user),
            "automations": selectors.automations_for_form(form),
            "can_add_rules": request.user.has_perm("automations.add_rule"),
        },
    )


@require_POST
@builder_required
def form_status(request, pk: int):
    form = get_object_or_404(Form, pk=pk)
    try:
        services.set_form_status(form=form, status=request.POST.get("status", ""), actor=Actor.for_user(request.user))
    except InputRejected as exc:
        messages.error(request, " ".join(e.message for e in exc.errors))
    else:
        messages.success(request, "Form status updated.")
    return redirect(form.get_absolute_url())


# --- Staff: review ----------------------------------------------------------------------

SUBMISSIONS_PER_PAGE = 50


@require_safe
@staff_required
def submission_list(request, pk: int):
    form = get_object_or_404(Form, pk=pk)
    filterset = SubmissionFilter(request.GET, queryset=selectors.submissions_for_form(form, request.user))
    # Every submission is reachable, a page at a time (the list used to stop silently at 200).
    page = Paginator(filterset.qs if filterset.is_valid() else Submission.objects.none(), SUBMISSIONS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    filters = request.GET.copy()
    filters.pop("page", None)
    return render(
        request,
        "forms_app/submissions.html",
        {"form_obj": form, "filter": filterset, "submissions": page.object_list, "page": page,
         "query": filters.urlencode()},
    )


@require_safe
@staff_required
def submission_export(request, pk: int):
    form = get_object_or_404(Form, pk=pk)
    filterset = SubmissionFilter(request.GET, queryset=selectors.submissions_for_form(form, request.user))
    if not filterset.is_valid():
        return HttpResponse("Invalid filters.", status=400, content_type="text/plain")
    columns = selectors.export_columns(form)
    header = ["submitted_at", "status", "contact_id", "contact", "version"] + [c["label"] for c in columns]

    def rows():
        for submission in filterset.qs.iterator(chunk_size=500):
            contact = submission.contact
            yield [
                timezone.localtime(submission.created_at).isoformat(timespec="seconds"),
                submission.status,
                contact.pk if contact else "",
                str(contact) if contact else "",
                submission.version.number,
                *[submission.answers.get(c["id"]) for c in columns],
            ]

    response = StreamingHttpResponse(exporting.csv_lines(header, rows()), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{form.slug}-submissions.csv"'
    return response


@require_http_methods(["GET", "POST"])
@staff_required
def submission_detail(request, pk: int):
    try:
        submission = selectors.submission_detail(pk, request.user)
    except Submission.DoesNotExist:
        raise Http404 from None
    if request.method == "POST":
        try:
            services.mark_submission(
                submission=submission, status=request.POST.get("status", ""), actor=Actor.for_user(request.user)
            )
        except InputRejected as exc:
            messages.error(request, " ".join(e.message for e in exc.errors))
        else:
            messages.success(request, "Submission updated.")
        return redirect(submission.get_absolute_url())
    contact = submission.contact
    return render(
        request,
        "forms_app/submission_detail.html",
        {
            "submission": submission,
            "form_obj": submission.form,
            "contact": contact,
            "contact_url": selectors.contact_url(contact),
            "contact_info": selectors.contact_summary(contact) if contact else None,
        },
    )


# --- Public page -----------------------------------------------------------------------


def _public_form(slug: str) -> Form:
    form = Form.objects.select_related("current_version").filter(slug=slug).first()
    if form is None or form.status == Form.Status.DRAFT:
        raise Http404("No such form.")
    return form


def _render_public(request, form: Form, *, embed: bool, values=None, errors=None, status: int = 200):
    errors = errors or {}
    fields = form.current_version.fields if form.current_version else []
    return render(
        request,
        "forms_app/public.html",
        {
            "form_obj": form,
            "rows": field_rows(fields, values or {}, errors, services.limits()),
            "errors": errors,
            "form_errors": errors.get("", []),
            "field_error_list": [(f, errors[f["id"]]) for f in fields if f["id"] in errors],
            "token": spam.make_token(form.pk),
            "embed": embed,
            "honeypot": spam.HONEYPOT_FIELD,
            "limits": services.limits(),
        },
        status=status,
    )


def _values_for_redisplay(fields, data) -> dict:
    values = {}
    for definition in fields:
        if definition["type"] == FieldType.FILE:
            continue
        values[definition["id"]] = data.getlist(definition["id"]) if definition["type"] in (
            FieldType.MULTIPLE_CHOICE,
        ) else data.get(definition["id"], "")
    return values


@csrf_exempt  # see forms_app.spam: a signed form token replaces the CSRF cookie on this public POST
@xframe_options_exempt  # the page is made to be embedded on other sites
@require_http_methods(["GET", "POST"])
def public_form(request, slug: str):
    form = _public_form(slug)
    embed = request.GET.get("embed") == "1"  # the form posts back to its own URL, query included
    if not form.is_open:
        status = 200 if request.method == "GET" else 410
        return render(request, "forms_app/public_closed.html", {"form_obj": form, "embed": embed}, status=status)
    if request.method == "GET":
        services.record_form_view(form=form)
        return _render_public(request, form, embed=embed)
    ip = spam.client_ip(request)
    ip_hash = spam.hash_ip(ip)
    if not spam.allow_attempt(spam.hash_ip(login_throttle.ip_bucket(ip))):
        message = "We received many submissions from your network in a short time. Please wait a few minutes and try again."
        response = _public_message(request, form, embed=embed, message=message, status=429)
        response["Retry-After"] = str(settings.FORMS_RATE_LIMIT_WINDOW)
        return response
    fields = form.current_version.fields if form.current_version else []
    try:
        declared_length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _public_message(request, form, embed=embed, message="The request was malformed. Please try again.", status=400)
    if declared_length > services.max_request_bytes(fields):
        # Refused before Django reads (and spools to disk) a body no valid submission can have.
        message = "Your submission is too large. Please use smaller files and try again."
        return _public_message(request, form, embed=embed, message=message, status=413)
    thanks = _thanks_redirect(form, embed)
    try:
        request.POST  # noqa: B018  (read now, so Django's own limits are answered on the form's page)
    except RequestDataTooBig:
        message = "Your submission is too large. Please shorten your answers and try again."
        return _public_message(request, form, embed=embed, message=message, status=413)
    except TooManyFieldsSent:
        message = "The request was malformed (too many fields). Please reload the form and try again."
        return _public_message(request, form, embed=embed, message=message, status=400)
    if spam.honeypot_filled(request.POST):
        # Look like success so the bot moves on; nothing is stored.
        return thanks
    values = _values_for_redisplay(fields, request.POST)
    token = request.POST.get("form_token", "")
    token_problem = spam.token_problem(token, form.pk)
    if token_problem:
        errors = {"": [token_problem]}
        return _render_public(request, form, embed=embed, values=values, errors=errors, status=400)
    if not spam.claim_token(token):
        return thanks  # the same page sent twice: the first POST is the submission
    try:
        services.submit_form(form=form, data=request.POST, files=request.FILES, ip_hash=ip_hash)
    except BaseException as exc:
        spam.release_token(token)
        if not isinstance(exc, InputRejected):
            raise
        if any(e.code == "form_closed" for e in exc.errors):
            return render(request, "forms_app/public_closed.html", {"form_obj": form, "embed": embed}, status=410)
        errors: dict[str, list[str]] = {}
        for error in exc.errors:
            errors.setdefault(error.field, []).append(error.message)
        return _render_public(request, form, embed=embed, values=values, errors=errors, status=400)
    return thanks


def _public_message(request, form: Form, *, embed: bool, message: str, status: int):
    return render(
        request, "forms_app/public_message.html", {"form_obj": form, "embed": embed, "message": message}, status=status
    )


def _thanks_redirect(form: Form, embed: bool):
    if form.redirect_url:  # validated as an http(s) URL by save_form
        return redirect(form.redirect_url)
    return redirect(reverse("forms_public:thanks", args=[form.slug]) + ("?embed=1" if embed else ""))


@xframe_options_exempt
@require_safe
def public_thanks(request, slug: str):
    form = _public_form(slug)
    return render(
        request,
        "forms_app/public_thanks.html",
        {
            "form_obj": form,
            "embed": request.GET.get("embed") == "1",
            "message": form.success_message or services.DEFAULT_SUCCESS_MESSAGE,
        },
    )
