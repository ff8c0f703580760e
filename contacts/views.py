"""Web UI for the sales team. Views translate HTTP to selectors and services; they decide nothing."""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, Q, QuerySet
from django.db.models.functions import Lower
from django.http import (
    FileResponse,
    Http404,
    HttpResponse,
    HttpResponseServerError,
    JsonResponse,
    QueryDict,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.template import loader
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from contacts.exporting import cell_value, csv_response, export_rows, xlsx_response
from contacts.filters import (
    Column,
    ContactFilter,
    available_columns,
    chosen_columns,
    filter_is_active,
    parse_sort,
    sort_expression,
)
from contacts.forms import (
    STANDARD_FORM_FIELDS,
    ContactForm,
    SaveViewForm,
    StaffAuthenticationForm,
    TaskForm,
)
from contacts.models import (
    Contact,
    ContactFile,
    ContactStage,
    Pipeline,
    SavedView,
    Source,
    Stage,
    Tag,
    Task,
)
from contacts.normalize import email_normalize_or_none, phone_to_e164_or_none
from contacts.selectors import (
    BOARD_COLUMN_SIZE,
    ListVocabulary,
    attach_list_relations,
    board_column_page,
    board_columns,
    board_memberships,
    contact_timeline,
    custom_field_definitions,
    encode_cursor,
    estimated_total,
    fields_provenance,
    keyset_page,
    list_vocabulary,
    tasks_for,
    user_is_crm_admin,
    visible_contacts,
)
from contacts.services import (
    BULK_ACTION_LIMIT,
    add_file,
    add_note,
    add_tags,
    bulk_apply,
    clean_contact_input,
    complete_task,
    create_task,
    delete_saved_view,
    find_contact_by_keys,
    move_to_stage,
    remove_tag,
    reopen_task,
    save_view,
    update_contact,
    upsert_contact,
)
from crm_hub.actors import Actor
from crm_hub.api.errors import error_body, error_item
from crm_hub.errors import FieldError, InputRejected


def staff_required(view):
    """Require a signed-in staff user: anonymous users go to the login page, others get 403."""

    @wraps(view)
    @login_required
    def wrapped(request, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied("Staff only.")
        return view(request, *args, **kwargs)

    return wrapped


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    authentication_form = StaffAuthenticationForm
    redirect_authenticated_user = True


@require_GET
@staff_required
def home(request):
    return redirect("contacts:list")


# --- Error pages (wired as handler403/404/500 in crm_hub.urls) ----------------------


def error_403(request, exception=None):
    return render(request, "errors/403.html", status=403)


def _api_error(request, status: int, code: str, message: str) -> JsonResponse | None:
    """Under /api/ every error is the API's JSON envelope, also for paths no view matched."""
    if not request.path.startswith("/api/"):
        return None
    return JsonResponse(error_body([error_item(None, code, message)]), status=status)


def error_404(request, exception=None):
    return _api_error(request, 404, "not_found", "No such endpoint or record.") or render(
        request, "errors/404.html", status=404
    )


def error_500(request):
    # No context processors beyond the request: the database may be what failed.
    return _api_error(request, 500, "server_error", "Something went wrong on our side; it has been logged.") or (
        HttpResponseServerError(loader.get_template("errors/500.html").render({"request": request}))
    )




# --- Shared helpers -------------------------------------------------------------------------

PAGE_SIZE = 50


def _actor(request) -> Actor:
    return Actor.for_user(request.user)


def _is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _staff_users() -> list:
    return list(get_user_model().objects.filter(is_active=True, is_staff=True).order_by("username"))


def _restricted(user) -> bool:
    return settings.CRM_SALES_SEE_OWN_ONLY and not user_is_crm_admin(user)


def _guard_owner_param(request, params) -> None:
    """A sales user limited to their own contacts asking for another owner's list gets 404, not an empty page."""
    owner = params.get("owner", "")
    if _restricted(request.user) and owner.isdigit() and int(owner) != request.user.pk:
        raise Http404("No such list.")


def _back(request, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return fallback


def _posted_id(request, field: str) -> int | None:
    """Return the POSTed record id, or None when it is missing or not a whole number."""
    raw = request.POST.get(field, "").strip()
    # isascii: str.isdigit() also accepts digits int() cannot read, like "²".
    return int(raw) if raw.isascii() and raw.isdigit() else None


def _bad_id(field: str) -> HttpResponse:
    """A 400 naming the field: only a hand-made request sends an id that is not a number."""
    return HttpResponse(f"{field}: give the id of a {field} (a whole number).", status=400, content_type="text/plain")


def _flash_errors(request, exc: InputRejected) -> None:
    for error in exc.errors:
        messages.error(request, error.message)


@dataclass
class ListState:
    """Everything the contact list, its export and its bulk actions derive from the query string."""

    params: QueryDict
    definitions: list
    columns: dict
    filterset: ContactFilter
    queryset: QuerySet
    vocabulary: ListVocabulary

    @property
    def filtered(self) -> bool:
        return filter_is_active(self.params)


def _list_state(request, params: QueryDict) -> ListState:
    _guard_owner_param(request, params)
    vocabulary = list_vocabulary()
    definitions = vocabulary.custom_fields
    filterset = ContactFilter(
        params, queryset=visible_contacts(request.user), request=request, custom_fields=definitions,
        owner_choices=vocabulary.staff_users,
    )
    return ListState(params, definitions, available_columns(definitions), filterset, filterset.qs, vocabulary)


def _visible_views(user) -> QuerySet[SavedView]:
    return SavedView.objects.filter(Q(owner=user) | Q(shared=True)).select_related("owner")


def _query_without(params: QueryDict, *keys: str) -> str:
    copy = params.copy()
    for key in keys:
        copy.pop(key, None)
    return copy.urlencode()


# --- Contact list ------------------------------------------------------------------------------


@require_GET
@staff_required
def contact_list(request):
    params = request.GET
    active_view = None
    views = list(_visible_views(request.user))
    if params.get("view", "").isdigit():
        active_view = next((v for v in views if v.pk == int(params["view"])), None)
        if active_view is None:
            raise Http404("No such saved view.")
        # The saved query wins; paging cursors of the current request still apply.
        stored = QueryDict(active_view.query, mutable=True)
        for key in ("after", "before"):
            if key in params:
                stored[key] = params[key]
        stored["view"] = str(active_view.pk)
        params = stored
    state = _list_state(request, params)
    columns = chosen_columns(params.getlist("cols"), state.columns)
    sort_column, descending, sort = parse_sort(params.get("sort", ""), state.columns)
    page = keyset_page(
        state.queryset.select_related("owner"),
        sort_expr=sort_expression(sort_column),
        descending=descending,
        nullable=sort_column.nullable,
        after=params.get("after", ""),
        before=params.get("before", ""),
        size=PAGE_SIZE,
    )
    attach_list_relations(
        page.rows, state.vocabulary, tags="tags" in [c.key for c in columns], stages="stage" in [c.key for c in columns]
    )
    total, exact = estimated_total(
        state.queryset, filtered=state.filtered or _restricted(request.user), page=page,
        first_page=not (params.get("after") or params.get("before")),
    )
    base_query = _query_without(params, "after", "before")
    # A header link sorts by its column ascending, or flips the direction when it is the current sort.
    sort_links = {}
    for column in columns:
        copy = params.copy()
        for key in ("after", "before"):
            copy.pop(key, None)
        copy["sort"] = ("-" if sort == column.key else "") + column.key
        sort_links[column.key] = copy.urlencode()
    form = state.filterset.form
    form.is_valid()
    chosen = {c.key for c in columns}
    chosen_tags = set(params.getlist("tag"))
    context = {
        "rows": page.rows,
        "rows_html": _render_rows(page.rows, columns, show_company="company" not in [c.key for c in columns]),
        "page": page,
        "columns": columns,
        "sort": sort,
        "sort_label": f"{sort_column.label.lower()}, {'descending' if descending else 'ascending'}",
        "sort_links": sort_links,
        "total": total,
        "total_exact": exact,
        "filtered": state.filtered,
        "filters_open": filter_is_active(QueryDict(_query_without(params, "q"))),
        "params": params,
        "base_query": base_query,
        "save_query": _query_without(params, "after", "before", "view"),
        "filterset": state.filterset,
        "form": form,
        # Option lists as (value, label, selected): the template only prints them.
        "owner_options": [
            (str(u.pk), u.get_full_name() or u.get_username(), params.get("owner") == str(u.pk))
            for u in state.filterset.owner_choices
        ],
        "tag_options": [(str(t.pk), t.name, str(t.pk) in chosen_tags) for t in state.vocabulary.tags],
        "stage_groups": _stage_groups(state.vocabulary.stages, params.get("stage")),
        "column_options": [(c.key, c.label, c.key in chosen) for c in state.columns.values() if c.key != "name"],
        "custom_filters": state.filterset.custom_fields,
        "sources": Source.choices,
        "saved_views": views,
        "active_view": active_view,
        "bulk_limit": BULK_ACTION_LIMIT,
        "is_admin": user_is_crm_admin(request.user),
    }
    return render(request, "contacts/list.html", context)


def _stage_groups(stages: list[Stage], selected: str | None) -> list[tuple[str, list[tuple[str, str, bool]]]]:
    """Return [(pipeline name, [(stage id, stage name, selected)])] in board order, one group per pipeline."""
    groups: list[tuple[str, list[tuple[str, str, bool]]]] = []
    current = None
    for stage in stages:
        if stage.pipeline_id != current:
            current = stage.pipeline_id
            groups.append((stage.pipeline.name, []))
        groups[-1][1].append((str(stage.pk), stage.name, selected == str(stage.pk)))
    return groups


def _render_rows(contacts: list[Contact], columns: list[Column], *, show_company: bool) -> str:
    """Return the table rows' HTML, every value escaped.

    Built with f-strings and html.escape rather than the template language or format_html:
    50 rows x ~10 cells through either cost more than every query of the page together.
    """
    now = timezone.now()
    detail_prefix = reverse("contacts:list")
    rows = []
    for contact in contacts:
        label = esc(str(contact))
        cells = [
            f'<td class="check-col"><input type="checkbox" name="ids" value="{contact.pk}" form="bulk-form" '
            f'aria-label="Select {label}"></td>'
        ]
        for column in columns:
            if column.key == "name":
                sub = f'<div class="cell-sub">{esc(contact.company)}</div>' if show_company and contact.company else ""
                cells.append(f'<td><a class="cell-main" href="{detail_prefix}{contact.pk}/">{label}</a>{sub}</td>')
            else:
                cells.append(_cell_html(contact, column, now=now))
        rows.append(f'<tr data-contact="{contact.pk}">{"".join(cells)}</tr>')
    # Every interpolated value above went through esc().
    return mark_safe("\n".join(rows))


DASH = '<span class="muted">—</span>'


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _cell_html(contact: Contact, column: Column, *, now) -> str:
    key = column.key
    if key == "tags":
        tags = "".join(
            f'<span class="tag" style="--tag-color: {esc(t.color)}">{esc(t.name)}</span>' for t in contact.list_tags
        )
        return f'<td><div class="tags">{tags}</div></td>'
    if key == "stage":
        stages = contact.list_stages
        if not stages:
            return f"<td>{DASH}</td>"
        several = len(stages) > 1
        parts = "".join(
            f'<div><span class="stage-dot" style="--stage-color: {esc(s.color)}"></span>{esc(s.name)}'
            + (f' <span class="muted small">({esc(s.pipeline.name)})</span>' if several else "")
            + "</div>"
            for s in stages
        )
        return f'<td class="nowrap">{parts}</td>'
    if key == "owner":
        owner = contact.owner
        return f'<td class="nowrap">{esc(owner.get_full_name() or owner.get_username()) if owner else DASH}</td>'
    if key in ("created", "updated", "last_activity"):
        value = getattr(contact, {"created": "created_at", "updated": "updated_at"}.get(key, "last_activity_at"))
        if not value:
            return f"<td>{DASH}</td>"
        local = timezone.localtime(value)
        return (f'<td class="nowrap"><time datetime="{value.isoformat()}" title="{local:%Y-%m-%d %H:%M}">'
                f"{esc(_short_when(local, now))}</time></td>")
    if key == "source":
        return f'<td><span class="badge">{esc(contact.get_source_display())}</span></td>'
    return f"<td>{esc(cell_value(contact, column))}</td>"


def _short_when(local: dt.datetime, now: dt.datetime) -> str:
    """Return "14:05" for today, "Mar 3" this year, else "Mar 3, 2024"."""
    today = timezone.localtime(now).date()
    if local.date() == today:
        return local.strftime("%H:%M")
    if local.year == today.year:
        return f"{local:%b} {local.day}"
    return f"{local:%b} {local.day}, {local.year}"


@require_POST
@staff_required
def saved_view_create(request):
    form = SaveViewForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the view a name.")
        return redirect(reverse("contacts:list") + "?" + request.POST.get("query", ""))
    try:
        view = save_view(
            owner=request.user, name=form.cleaned_data["name"], query=form.cleaned_data["query"],
            shared=form.cleaned_data["shared"],
        )
    except InputRejected as exc:
        _flash_errors(request, exc)
        return redirect(reverse("contacts:list") + "?" + form.cleaned_data["query"])
    messages.success(request, f"Saved view “{view.name}”.")
    return redirect(reverse("contacts:list") + f"?view={view.pk}")


@require_POST
@staff_required
def saved_view_delete(request, pk: int):
    view = get_object_or_404(_visible_views(request.user), pk=pk)
    try:
        delete_saved_view(view=view, user=request.user)
    except InputRejected as exc:
        _flash_errors(request, exc)
        return redirect(reverse("contacts:list") + f"?view={pk}")
    messages.success(request, f"Deleted view “{view.name}”.")
    return redirect("contacts:list")


def _export_response(state: ListState, queryset: QuerySet[Contact], fmt: str):
    columns = chosen_columns(state.params.getlist("cols"), state.columns)
    # The file lists the contacts in the order the list shows them.
    sort_column, descending, _sort = parse_sort(state.params.get("sort", ""), state.columns)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    rows = export_rows(
        queryset, columns, sort_expr=sort_expression(sort_column), descending=descending, nullable=sort_column.nullable
    )
    if fmt == "xlsx":
        return xlsx_response(rows, filename=f"contacts-{stamp}.xlsx")
    return csv_response(rows, filename=f"contacts-{stamp}.csv")


@require_GET
@staff_required
def contact_export(request):
    """Export every contact matching the list's filters, with its chosen columns."""
    state = _list_state(request, request.GET)
    return _export_response(state, state.queryset, request.GET.get("format", "csv"))


@require_POST
@staff_required
def contact_bulk(request):
    """Apply a bulk action to the selected contacts, or to all contacts matching the list's filters."""
    state = _list_state(request, QueryDict(request.POST.get("query", "")))
    back = reverse("contacts:list") + "?" + request.POST.get("query", "")
    if request.POST.get("scope") == "all":
        targets = state.queryset
    else:
        ids = [int(i) for i in request.POST.getlist("ids") if i.isdigit()]
        if not ids:
            messages.error(request, "Select at least one contact, or choose “all matching”.")
            return redirect(back)
        targets = visible_contacts(request.user).filter(pk__in=ids)
        if len(set(ids)) != targets.count():
            raise Http404("Some of the selected contacts are not visible to you.")
    action = request.POST.get("action", "")
    if action in ("export_csv", "export_xlsx"):
        return _export_response(state, targets, "xlsx" if action == "export_xlsx" else "csv")
    value = request.POST.get({"assign_owner": "owner", "move_stage": "stage"}.get(action, "tag"), "")
    try:
        changed = bulk_apply(
            contacts=targets.order_by("pk")[: BULK_ACTION_LIMIT + 1], action=action, value=value,
            actor=_actor(request), source=Source.MANUAL,
        )
    except InputRejected as exc:
        _flash_errors(request, exc)
        return redirect(back)
    messages.success(request, f"Done: {changed} contact{'s' if changed != 1 else ''} changed.")
    return redirect(back)


# --- Create and edit by hand --------------------------------------------------------------


def _existing_match(cleaned) -> Contact | None:
    by_phone, by_email = find_contact_by_keys(
        phone_e164=cleaned.phone_e164, email_normalized=cleaned.email_normalized
    )
    return by_phone or by_email


@staff_required
def contact_create(request):
    definitions = custom_field_definitions()
    owners = _staff_users()
    tags = list(Tag.objects.order_by(Lower("name")))
    existing = None
    if request.method == "POST":
        form = ContactForm(request.POST, custom_fields=definitions, owners=owners, tags=tags)
        if form.is_valid():
            actor = _actor(request)
            data = {k: v for k, v in form.contact_data().items() if v not in ("", None)}
            custom = {k: v for k, v in form.custom_data().items() if v not in ("", None, [])}
            chosen_tags = form.cleaned_data.get("tags") or []
            try:
                cleaned = clean_contact_input(data, custom=custom, tags=chosen_tags, actor=actor)
                if not (cleaned.phone_e164 or cleaned.email_normalized or data.get("name")):
                    raise InputRejected([FieldError("name", "required", "Give at least a name, phone or email.")])
                existing = _existing_match(cleaned)
                if existing is None:
                    result = upsert_contact(
                        data=data, custom=custom, tags=chosen_tags, actor=actor, source=Source.MANUAL, cleaned=cleaned
                    )
                    messages.success(request, f"Created {result.contact}.")
                    return redirect(result.contact)
            except InputRejected as exc:
                form.add_service_errors(exc)
    else:
        form = ContactForm(custom_fields=definitions, owners=owners, tags=tags, initial={"owner": str(request.user.pk)})
    visible_existing = existing is not None and visible_contacts(request.user).filter(pk=existing.pk).exists()
    return render(request, "contacts/form.html", {
        "form": form, "existing": existing, "existing_visible": visible_existing, "creating": True,
    })


def _key_holders(cleaned_data, contact: Contact) -> dict[str, Contact]:
    """Return the other contacts holding the form's phone or email, as {"phone": ..., "email": ...}."""
    phone_e164 = phone_to_e164_or_none(cleaned_data.get("phone") or "") or ""
    email = email_normalize_or_none(cleaned_data.get("email") or "") or ""
    by_phone, by_email = find_contact_by_keys(phone_e164=phone_e164, email_normalized=email)
    return {
        field: other for field, other in (("phone", by_phone), ("email", by_email)) if other and other.pk != contact.pk
    }


@staff_required
def contact_edit(request, pk: int):
    contact = get_object_or_404(visible_contacts(request.user).select_related("owner"), pk=pk)
    definitions = custom_field_definitions()
    owners = _staff_users()
    existing = None
    if request.method == "POST":
        form = ContactForm(request.POST, custom_fields=definitions, owners=owners, contact=contact)
        if form.is_valid():
            try:
                result = update_contact(
                    contact=contact, data=form.contact_data(), custom=form.custom_data(),
                    actor=_actor(request), source=Source.MANUAL,
                )
                changed = ", ".join(result.changes) or "nothing"
                messages.success(request, f"Saved ({changed} changed).")
                if _is_htmx(request):
                    return HttpResponse(status=204, headers={"HX-Redirect": contact.get_absolute_url()})
                return redirect(contact)
            except InputRejected as exc:
                # update_contact names a taken phone or email together with every other error.
                if any(e.code == "already_exists" for e in exc.errors):
                    existing = next(iter(_key_holders(form.cleaned_data, contact).values()), None)
                form.add_service_errors(exc)
    else:
        form = ContactForm(custom_fields=definitions, owners=owners, contact=contact)
    visible_existing = existing is not None and visible_contacts(request.user).filter(pk=existing.pk).exists()
    # Asked by HTMX from the contact page: the form alone, edited in place of the details card.
    template = "contacts/_contact_form.html" if _is_htmx(request) else "contacts/form.html"
    return render(request, template, {
        "form": form, "contact": contact, "existing": existing, "existing_visible": visible_existing,
        "creating": False, "inline": _is_htmx(request),
    })


# --- Contact page -----------------------------------------------------------------------------


def _visible_contact(request, pk: int) -> Contact:
    return get_object_or_404(visible_contacts(request.user), pk=pk)


def _provenance_label(entry) -> str:
    when = timezone.localtime(entry.created_at).strftime("%Y-%m-%d %H:%M")
    text = f"Set by {entry.actor_label} via {entry.get_source_display()} on {when}"
    if entry.conversation_id:
        text += f" (conversation #{entry.conversation_id})"
    return text


@require_GET
@staff_required
def contact_detail(request, pk: int):
    contact = get_object_or_404(
        visible_contacts(request.user).select_related("owner").prefetch_related(
            Prefetch("tags", queryset=Tag.objects.order_by(Lower("name")))
        ),
        pk=pk,
    )
    definitions = custom_field_definitions()
    provenance = {key: _provenance_label(entry) for key, entry in fields_provenance(contact).items()}
    standard = []
    for name, label, _max in STANDARD_FORM_FIELDS:
        value = contact.phone_display if name == "phone" else getattr(contact, name)
        if value:
            standard.append({"name": name, "label": label, "value": value, "provenance": provenance.get(name, "")})
    if contact.birthday:
        standard.append({"name": "birthday", "label": "Birthday", "value": contact.birthday,
                         "provenance": provenance.get("birthday", "")})
    custom = []
    for definition in definitions:
        value = (contact.custom or {}).get(definition.key)
        custom.append({
            "definition": definition,
            "value": cell_value(contact, Column(f"cf.{definition.key}", definition.label, custom=definition)),
            "band": definition.band_label(value),
            "provenance": provenance.get(f"custom.{definition.key}", ""),
        })
    pipelines = list(Pipeline.objects.prefetch_related(Prefetch("stages", queryset=Stage.objects.order_by("position", "id"))))
    memberships = {m.pipeline_id: m for m in contact.stage_memberships.select_related("stage")}
    pipeline_rows = [{"pipeline": p, "membership": memberships.get(p.pk)} for p in pipelines]
    contact_tag_ids = {t.pk for t in contact.tags.all()}
    owners = _staff_users()
    timeline = contact_timeline(contact, limit=TIMELINE_LIMIT)
    return render(request, "contacts/detail.html", {
        "contact": contact,
        "standard": standard,
        "custom": custom,
        "provenance": provenance,
        "pipelines": pipeline_rows,
        "available_tags": [t for t in Tag.objects.order_by(Lower("name")) if t.pk not in contact_tag_ids],
        "timeline": timeline,
        "timeline_more": _timeline_more(timeline),
        "task_form": TaskForm(owners=owners, auto_id="task-%s", initial={"assignee": "", "due_at": _default_due()}),
        "max_upload": settings.CRM_MAX_UPLOAD_BYTES,
        "allowed_types": _type_names(settings.CRM_ALLOWED_UPLOAD_TYPES),
        "accept": ",".join(settings.CRM_ALLOWED_UPLOAD_TYPES),
        "now": timezone.now(),
    })


TIMELINE_LIMIT = 40
TYPE_NAMES = {
    "application/pdf": "PDF", "image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WebP",
    "text/plain": "text", "text/csv": "CSV", "application/msword": "Word (.doc)",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "Word (.docx)",
    "application/vnd.ms-excel": "Excel (.xls)",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "Excel (.xlsx)",
}


def _type_names(content_types) -> str:
    return ", ".join(TYPE_NAMES.get(t, t) for t in content_types)


def _timeline_more(items) -> str:
    if len(items) < TIMELINE_LIMIT:
        return ""
    return items[-1].at.isoformat()


@require_GET
@staff_required
def contact_timeline_more(request, pk: int):
    contact = _visible_contact(request, pk)
    before = parse_datetime(request.GET.get("before", "") or "")
    if before is None:
        raise Http404("Give ?before=<ISO datetime>.")
    items = contact_timeline(contact, limit=TIMELINE_LIMIT, before=before)
    return render(request, "contacts/_timeline_items.html", {
        "contact": contact, "timeline": items, "timeline_more": _timeline_more(items), "now": timezone.now(),
    })


def _default_due() -> str:
    tomorrow = timezone.localtime() + dt.timedelta(days=1)
    return tomorrow.replace(hour=9, minute=0, second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M")


@require_POST
@staff_required
def contact_add_note(request, pk: int):
    contact = _visible_contact(request, pk)
    try:
        add_note(contact=contact, body=request.POST.get("body", ""), actor=_actor(request), source=Source.MANUAL)
        messages.success(request, "Note added.")
    except InputRejected as exc:
        _flash_errors(request, exc)
    return redirect(contact)


@require_POST
@staff_required
def contact_add_file(request, pk: int):
    contact = _visible_contact(request, pk)
    try:
        stored = add_file(contact=contact, upload=request.FILES.get("file"), actor=_actor(request), source=Source.MANUAL)
        messages.success(request, f"Uploaded {stored.name}.")
    except InputRejected as exc:
        _flash_errors(request, exc)
    return redirect(contact)


@require_GET
@staff_required
def contact_file_download(request, pk: int, file_id: int):
    contact = _visible_contact(request, pk)
    stored = get_object_or_404(ContactFile, pk=file_id, contact=contact)
    # Served as an attachment with its checked type, so an uploaded HTML/SVG never renders on our origin.
    return FileResponse(stored.file.open("rb"), as_attachment=True, filename=stored.name,
                        content_type=stored.content_type or "application/octet-stream")


@require_POST
@staff_required
def contact_add_task(request, pk: int):
    contact = _visible_contact(request, pk)
    form = TaskForm(request.POST, owners=_staff_users())
    if not form.is_valid():
        for field, errors in form.errors.items():
            for error in errors:
                messages.error(request, f"{form.fields[field].label or field}: {error}" if field != "__all__" else error)
        return redirect(contact)
    try:
        create_task(
            contact=contact, title=form.cleaned_data["title"], due_at=form.cleaned_data["due_at"],
            assignee=form.cleaned_data["assignee"] or None, priority=form.cleaned_data["priority"],
            actor=_actor(request), source=Source.MANUAL,
        )
        messages.success(request, "Task added.")
    except InputRejected as exc:
        _flash_errors(request, exc)
    return redirect(contact)


@require_POST
@staff_required
def contact_tags(request, pk: int):
    contact = _visible_contact(request, pk)
    try:
        if request.POST.get("remove"):
            remove_tag(contact=contact, tag=request.POST["remove"], actor=_actor(request), source=Source.MANUAL)
        elif request.POST.get("tag"):
            add_tags(contact=contact, tags=[request.POST["tag"]], actor=_actor(request), source=Source.MANUAL)
    except InputRejected as exc:
        _flash_errors(request, exc)
    return redirect(contact)


@require_POST
@staff_required
def contact_stage(request, pk: int):
    contact = _visible_contact(request, pk)
    stage_id = _posted_id(request, "stage")
    if stage_id is None:
        return _bad_id("stage")
    stage = get_object_or_404(Stage.objects.select_related("pipeline"), pk=stage_id)
    move_to_stage(contact=contact, pipeline=stage.pipeline, stage=stage, actor=_actor(request), source=Source.MANUAL)
    messages.success(request, f"Moved to {stage.pipeline.name}: {stage.name}.")
    return redirect(contact)


# --- Tasks -----------------------------------------------------------------------------------


def _visible_task(request, pk: int) -> Task:
    task = get_object_or_404(Task.objects.select_related("contact", "assignee"), pk=pk)
    if task.assignee_id != request.user.pk and not visible_contacts(request.user).filter(pk=task.contact_id).exists():
        raise Http404("No such task.")
    return task


@require_POST
@staff_required
def task_toggle(request, pk: int):
    task = _visible_task(request, pk)
    if request.POST.get("done", "1") == "1":
        task = complete_task(task=task, actor=_actor(request), source=Source.MANUAL)
    else:
        task = reopen_task(task=task, actor=_actor(request), source=Source.MANUAL)
    if _is_htmx(request):
        show_contact = request.POST.get("show_contact") == "1"
        return render(request, "contacts/_task_row.html", {
            "task": task, "now": timezone.now(), "show_contact": show_contact, "inline": not show_contact,
        })
    messages.success(request, f"Task “{task.title}” {'done' if task.status == Task.Status.DONE else 'reopened'}.")
    return redirect(_back(request, task.contact.get_absolute_url()))


@require_GET
@staff_required
def my_tasks(request):
    is_admin = user_is_crm_admin(request.user)
    owners = _staff_users() if is_admin else []
    wanted = request.GET.get("assignee", "") if is_admin else ""
    assignee = request.user
    everyone = wanted == "all"
    if wanted.isdigit():
        assignee = next((u for u in owners if u.pk == int(wanted)), None)
        if assignee is None:
            raise Http404("No such user.")
    tasks = list(tasks_for(request.user, assignee=assignee, everyone=everyone)[:500])
    now = timezone.localtime()
    start_today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start_tomorrow = start_today + dt.timedelta(days=1)
    groups = [
        ("overdue", "Overdue", [t for t in tasks if t.due_at < start_today]),
        ("today", "Today", [t for t in tasks if start_today <= t.due_at < start_tomorrow]),
        ("upcoming", "Upcoming", [t for t in tasks if t.due_at >= start_tomorrow]),
    ]
    return render(request, "contacts/tasks.html", {
        "groups": groups, "is_admin": is_admin, "owners": owners, "assignee": assignee, "everyone": everyone,
        "wanted": wanted, "now": timezone.now(), "total": len(tasks),
    })


# --- Pipeline board ---------------------------------------------------------------------------


def _board_filters(request):
    owner = request.GET.get("owner", "")
    _guard_owner_param(request, request.GET)
    tag = None
    if request.GET.get("tag", "").isdigit():
        tag = Tag.objects.filter(pk=int(request.GET["tag"])).first()
    return owner, tag


@require_GET
@staff_required
def board(request):
    pipelines = list(Pipeline.objects.all())
    if not pipelines:
        return render(request, "contacts/board.html", {"pipelines": []})
    wanted = request.GET.get("pipeline", "")
    pipeline = next((p for p in pipelines if str(p.pk) == wanted), pipelines[0])
    owner, tag = _board_filters(request)
    memberships = board_memberships(pipeline, user=request.user, owner=owner, tag=tag)
    stages, cards, counts = board_columns(pipeline, memberships)
    columns = [
        {"stage": s, "cards": cards.get(s.pk, []), "count": counts.get(s.pk, 0),
         "more": counts.get(s.pk, 0) > len(cards.get(s.pk, [])),
         "cursor": _card_cursor(cards.get(s.pk, []))}
        for s in stages
    ]
    return render(request, "contacts/board.html", {
        "pipelines": pipelines, "pipeline": pipeline, "columns": columns, "owner": owner, "tag": tag,
        "tags": list(Tag.objects.order_by(Lower("name"))), "owners": _staff_users(), "now": timezone.now(),
        "filter_query": _query_without(request.GET, "pipeline"),
    })


def _card_cursor(cards) -> str:
    if len(cards) < BOARD_COLUMN_SIZE:
        return ""
    last = cards[-1]
    return encode_cursor(last.entered_at, last.pk)


@require_GET
@staff_required
def board_column(request, stage_id: int):
    """Next cards of one column, loaded when the column is scrolled to its end."""
    stage = get_object_or_404(Stage.objects.select_related("pipeline"), pk=stage_id)
    owner, tag = _board_filters(request)
    memberships = board_memberships(stage.pipeline, user=request.user, owner=owner, tag=tag)
    page = board_column_page(memberships, stage, after=request.GET.get("after", ""))
    return render(request, "contacts/_board_cards.html", {
        "cards": page.rows, "stage": stage, "cursor": page.next_cursor or "", "now": timezone.now(),
        "filter_query": _query_without(request.GET, "after"),
    })


@require_GET
@staff_required
def board_card(request, contact_id: int):
    contact = _visible_contact(request, contact_id)
    pipeline = get_object_or_404(Pipeline, pk=request.GET.get("pipeline") or 0)
    membership = get_object_or_404(
        ContactStage.objects.select_related("contact", "contact__owner", "stage"), contact=contact, pipeline=pipeline
    )
    return render(request, "contacts/_board_card.html", {"card": membership, "now": timezone.now()})


@require_POST
@staff_required
def board_move(request):
    """Move a card to another stage (drag and drop) through the same service as the API."""
    contact_id, stage_id = _posted_id(request, "contact"), _posted_id(request, "stage")
    if contact_id is None or stage_id is None:
        return _bad_id("contact" if contact_id is None else "stage")
    contact = _visible_contact(request, contact_id)
    stage = get_object_or_404(Stage.objects.select_related("pipeline"), pk=stage_id)
    result = move_to_stage(contact=contact, pipeline=stage.pipeline, stage=stage, actor=_actor(request), source=Source.MANUAL)
    membership = result.membership
    membership.contact = contact
    return render(request, "contacts/_board_card.html", {"card": membership, "now": timezone.now()})
