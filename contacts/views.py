"""Web UI for the sales team. Views translate HTTP to selectors and services; they decide nothing."""

from __future__ import annotations

import datetime as dt
import html
import re
import secrets
import time
from dataclasses import dataclass, field
from functools import wraps
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Prefetch, Q, QuerySet
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
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django.views.defaults import bad_request

from contacts.exporting import cell_value, csv_response, export_rows, xlsx_response
from contacts.filters import (
    Column,
    ContactFilter,
    available_columns,
    chosen_columns,
    filter_is_active,
    owner_filter_problem,
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
from contacts.importing.services import recent_imports_of
from contacts.models import (
    Contact,
    ContactFile,
    ContactStage,
    HistoryEntry,
    Pipeline,
    PossibleDuplicate,
    SavedView,
    Source,
    Stage,
    Tag,
    Task,
)
from contacts.normalize import email_normalize_or_none, phone_to_e164_or_none
from contacts.selectors import (
    BOARD_COLUMN_SIZE,
    KeysetPage,
    ListVocabulary,
    attach_list_relations,
    board_column_page,
    board_columns,
    board_memberships,
    can_see_contact,
    contact_timeline,
    custom_field_definitions,
    encode_cursor,
    estimated_total,
    fields_provenance,
    find_visible_contact,
    keyset_page,
    list_vocabulary,
    merge_moves,
    merged_into,
    open_duplicates_of,
    sees_only_own_contacts,
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
    dismiss_possible_duplicate,
    find_contact_by_keys,
    merge_contacts,
    merge_fills,
    move_to_stage,
    moved_phrase,
    remove_tag,
    reopen_task,
    save_view,
    update_contact,
    upsert_contact,
)
from contacts.templatetags.crm_ui import size_over_limit
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


class LogoutView(auth_views.LogoutView):
    """Sign out by POST (CSRF-protected, as Django requires since 5.0); a GET asks first instead of a bare 405.

    A signed-out visitor opening the URL goes to the login page; after signing out the login
    page says so.
    """

    http_method_names = ["get", "post", "options"]
    template_name = "registration/logout_confirm.html"

    def get(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect(settings.LOGIN_URL)
        return render(request, self.template_name, {"next": self.get_redirect_url() or ""})

    def post(self, request, *args, **kwargs):
        response = super().post(request, *args, **kwargs)
        # After auth.logout flushed the session: the message travels in the messages cookie.
        messages.info(request, "You are signed out.")
        return response


@require_safe
@staff_required
def home(request):
    return redirect("contacts:list")


# --- Error pages (wired as handler400/403/404/500 in crm_hub.urls) -------------------


def error_400(request, exception=None):
    # Django's own 400s (too many query or form fields, a Host not allowed, a broken upload) are
    # answered before any view; under /api/ they are the API's envelope like every other error.
    return _api_error(
        request, 400, "bad_request", "The request could not be read: too many fields, or a malformed header or body."
    ) or bad_request(request, exception)


def error_403(request, exception=None):
    return render(request, "errors/403.html", status=403)


def csrf_failure(request, reason: str = ""):
    """A refused CSRF check (a page left open, a session renewed in another tab): the app's 403, saying what to do."""
    return _api_error(request, 403, "csrf_failed", "CSRF check failed.") or render(
        request, "errors/403.html", {"csrf_failed": True}, status=403
    )


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
    return sees_only_own_contacts(user)


def _names_another_owner(view, user) -> bool:
    owner = QueryDict(view.query or "").get("owner", "")
    return owner.isdigit() and int(owner) != user.pk


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


# --- One submission per form ------------------------------------------------------------------------
# A plain form carries a random token; the first POST with it claims it in the cache (cache.add
# is atomic, so two POSTs arriving together cannot both win) and records where it sent the user.
# A repeat (double click with JavaScript off, a second tab, a resent POST) is sent there too and
# writes nothing. The claim lives in the cache rather than the session: the session is saved only
# at the end of a request, so a second POST arriving meanwhile would still see the token unused.
# Several processes need a shared cache (Redis CACHE_URL) for this, as for the login throttle.

SUBMISSION_TOKEN_FIELD = "submission_token"
SUBMISSION_TOKEN_TTL = 10 * 60
SUBMISSION_WAIT_SECONDS = 5.0
_SUBMISSION_PENDING = "pending"
_SUBMISSION_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,64}")


def new_submission_token() -> str:
    """Return a fresh token for one rendering of a form (app.js makes a new one when the page comes back from history)."""
    return secrets.token_urlsafe(18)


def once_per_submission(view):
    """Run a form POST at most once per submission token; a repeat is redirected where the first one went.

    A POST without a token (API-like clients, old pages) runs as before. A first POST that did not
    redirect (the form came back with errors) releases its token, so sending it again is allowed.
    """

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        token = request.POST.get(SUBMISSION_TOKEN_FIELD, "") if request.method == "POST" else ""
        if not _SUBMISSION_TOKEN_SHAPE.fullmatch(token) or not request.user.is_authenticated:
            return view(request, *args, **kwargs)
        key = f"crm:submission:{request.user.pk}:{request.path}:{token}"
        deadline = time.monotonic() + SUBMISSION_WAIT_SECONDS
        while not cache.add(key, _SUBMISSION_PENDING, SUBMISSION_TOKEN_TTL):
            outcome = cache.get(key)
            if outcome not in (None, _SUBMISSION_PENDING):
                messages.info(request, "That form was sent twice; it was saved once.")
                return redirect(outcome)
            if time.monotonic() >= deadline:
                messages.warning(request, "That form was sent twice and the first one is still being saved. "
                                          "Reload the page in a moment to see the result.")
                return redirect(_same_site_referer(request) or "/")
            time.sleep(0.05)
        try:
            response = view(request, *args, **kwargs)
        except BaseException:
            cache.delete(key)
            raise
        target = response.get("HX-Redirect") or (
            response.get("Location") if response.status_code in (301, 302, 303) else None
        )
        if target:
            cache.set(key, target, SUBMISSION_TOKEN_TTL)
        else:
            cache.delete(key)
        return response

    return wrapped


def _same_site_referer(request) -> str:
    referer = request.headers.get("Referer", "")
    if referer and url_has_allowed_host_and_scheme(referer, allowed_hosts={request.get_host()},
                                                   require_https=request.is_secure()):
        return referer
    return ""


@dataclass
class ListState:
    """Everything the contact list, its export and its bulk actions derive from the query string."""

    params: QueryDict
    definitions: list
    columns: dict
    filterset: ContactFilter
    queryset: QuerySet
    vocabulary: ListVocabulary
    # Filters the query string gives but that cannot be applied: {filter name: what is wrong}.
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def filtered(self) -> bool:
        return filter_is_active(self.params)


LIST_CONTROL_PARAMS = ("view", "after", "before")


def _compact(params: QueryDict) -> QueryDict:
    """Return the parameters without empty values: an empty parameter means "not set".

    (It still matters before this: given in the URL, it overrides a saved view's value.)
    """
    compact = QueryDict(mutable=True)
    for key, values in params.lists():
        kept = [value for value in values if value.strip()]
        if kept:
            compact.setlist(key, kept)
    return compact


INVERTED_RANGE = "The range starts after it ends."
# What a filter that cannot be applied is called on the page, and the parameters it reads.
FILTER_PARAMS = {"created": ("created_after", "created_before"), "updated": ("updated_after", "updated_before")}


def _filter_problems(form, definitions) -> dict[str, str]:
    """Say, per filter, why the query string's value cannot be applied, naming the filter by its label."""
    labels = {f"cf_{d.key}": d.label for d in definitions}
    problems = {}
    for name in form.errors:
        if name == "stage":
            problems[name] = "The stage filter refers to a stage that no longer exists."
        elif name == "tag":
            problems[name] = "The tag filter refers to a tag that no longer exists."
        elif name == "source":
            problems[name] = "The source filter has a value that is not a source."
        elif name in FILTER_PARAMS and INVERTED_RANGE in form.errors[name]:
            problems[name] = f"The “{name.capitalize()}” dates are the wrong way round: “from” is after “to”."
        elif name in FILTER_PARAMS:
            problems[name] = f"The “{name.capitalize()}” date filter is not a date (use YYYY-MM-DD)."
        elif name in labels:
            problems[name] = f"The “{labels[name]}” filter has a value that is not one of its choices."
        elif name == "owner":
            problems[name] = " ".join(form.errors[name])
        else:
            field_label = form.fields[name].label if name in form.fields else name
            problems[name] = f"The “{field_label}” filter is not valid: {' '.join(form.errors[name])}"
    return problems


def _list_state(request, params: QueryDict) -> ListState:
    params = _compact(params)
    _guard_owner_param(request, params)
    vocabulary = list_vocabulary()
    definitions = vocabulary.custom_fields
    filterset = ContactFilter(
        params, queryset=visible_contacts(request.user), request=request, custom_fields=definitions,
        owner_choices=vocabulary.staff_users,
    )
    form = filterset.form
    if form.is_valid():
        for name in FILTER_PARAMS:
            # A from-date after the to-date matches nothing; "0 contacts" alone reads as an answer.
            dates = form.cleaned_data.get(name)
            if dates and dates.start and dates.stop and dates.start > dates.stop:
                form.add_error(name, INVERTED_RANGE)
    if form.is_valid():
        return ListState(params, definitions, available_columns(definitions), filterset, filterset.qs, vocabulary)
    # django-filter would drop the bad filter and list everything else as if it matched: list
    # nothing instead and say which filter is wrong (bulk actions and export refuse the same way).
    return ListState(
        params, definitions, available_columns(definitions), filterset, filterset.queryset.none(), vocabulary,
        problems=_filter_problems(filterset.form, definitions),
    )


def _visible_views(user) -> QuerySet[SavedView]:
    return SavedView.objects.filter(Q(owner=user) | Q(shared=True)).select_related("owner")


def _query_without(params: QueryDict, *keys: str) -> str:
    copy = params.copy()
    for key in keys:
        copy.pop(key, None)
    return copy.urlencode()


def _query_dropping_filter(params: QueryDict, keys, *, in_view: bool) -> str:
    """Return the list query without one filter; inside a saved view it is given empty, which overrides the view's."""
    copy = params.copy()
    for key in ("after", "before", *keys):
        copy.pop(key, None)
        if in_view and key not in ("after", "before"):
            copy[key] = ""
    return copy.urlencode()


def _over_saved_view(view: SavedView, given: QueryDict) -> QueryDict:
    """Return the view's saved query with each parameter the URL gives put over it (the view is a starting point)."""
    merged = QueryDict(view.query, mutable=True)
    for key in given:
        if key != "view":
            merged.setlist(key, given.getlist(key))
    merged["view"] = str(view.pk)
    return merged


def _list_signature(params: QueryDict, columns: dict) -> tuple:
    """What a list query shows, to tell whether the page still shows its saved view as saved."""
    compact = _compact(params)
    chosen = tuple(c.key for c in chosen_columns(compact.getlist("cols"), columns))
    sort = parse_sort(compact.get("sort", ""), columns)[2]
    filters = tuple(sorted(
        (key, tuple(sorted(compact.getlist(key))))
        for key in compact if key not in (*LIST_CONTROL_PARAMS, "cols", "sort", "page_size")
    ))
    return filters, chosen, sort


# --- Contact list ------------------------------------------------------------------------------

LIST_BACK_PARAM = "back"


@require_safe
@staff_required
def contact_list(request):
    params = request.GET
    active_view = None
    views = list(_visible_views(request.user))
    if _restricted(request.user):
        # A shared view of another owner's contacts only leads a user who sees their own to a 404.
        views = [v for v in views if not _names_another_owner(v, request.user)]
    if params.get("view", "").isdigit():
        active_view = next((v for v in views if v.pk == int(params["view"])), None)
        if active_view is None:
            raise Http404("No such saved view.")
        params = _over_saved_view(active_view, params)
    # ``params`` keeps empty values (they override the view in links); the state reads them compacted.
    state = _list_state(request, params)
    current = state.params
    columns = chosen_columns(current.getlist("cols"), state.columns)
    sort_column, descending, sort = parse_sort(current.get("sort", ""), state.columns)
    first_page = not (current.get("after") or current.get("before"))
    if state.problems:
        page = KeysetPage(rows=[], next_cursor=None, prev_cursor=None)
        total, exact = 0, True
    else:
        page = keyset_page(
            state.queryset.select_related("owner"),
            sort_expr=sort_expression(sort_column),
            descending=descending,
            nullable=sort_column.nullable,
            after=current.get("after", ""),
            before=current.get("before", ""),
            size=PAGE_SIZE,
        )
        attach_list_relations(
            page.rows, state.vocabulary,
            tags="tags" in [c.key for c in columns], stages="stage" in [c.key for c in columns],
        )
        total, exact = estimated_total(
            state.queryset, filtered=state.filtered or _restricted(request.user), page=page, first_page=first_page,
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
    chosen = {c.key for c in columns}
    chosen_tags = set(current.getlist("tag"))
    view_modified = active_view is not None and (
        _list_signature(params, state.columns) != _list_signature(QueryDict(active_view.query), state.columns)
    )
    context = {
        "rows": page.rows,
        "rows_html": _render_rows(page.rows, columns, show_company="company" not in [c.key for c in columns]),
        "page": page,
        "page_size": PAGE_SIZE,
        "columns": columns,
        "sort": sort,
        "sort_label": f"{sort_column.label.lower()}, {'descending' if descending else 'ascending'}",
        "sort_links": sort_links,
        "total": total,
        "total_exact": exact,
        "filtered": state.filtered,
        "filter_problems": [
            (message, _query_dropping_filter(params, FILTER_PARAMS.get(name, (name,)), in_view=active_view is not None))
            for name, message in state.problems.items()
        ],
        "filters_open": filter_is_active(QueryDict(_query_without(current, "q"))),
        "params": current,
        "base_query": base_query,
        "save_query": _query_without(current, *LIST_CONTROL_PARAMS),
        "filterset": state.filterset,
        "form": form,
        # Option lists as (value, label, selected): the template only prints them.
        "owner_options": [
            (str(u.pk), u.get_full_name() or u.get_username(), current.get("owner") == str(u.pk))
            for u in state.filterset.owner_choices
            if not _restricted(request.user) or u.pk == request.user.pk
        ],
        "tag_options": [(str(t.pk), t.name, str(t.pk) in chosen_tags) for t in state.vocabulary.tags],
        "stage_groups": _stage_groups(state.vocabulary.stages, current.get("stage")),
        "column_options": [(c.key, c.label, c.key in chosen) for c in state.columns.values() if c.key != "name"],
        "custom_filters": state.filterset.custom_fields,
        "sources": Source.choices,
        "saved_views": views,
        "active_view": active_view,
        "view_modified": view_modified,
        "bulk_limit": BULK_ACTION_LIMIT,
        "bulk_actions": BULK_ACTION_CHOICES,
        "is_admin": user_is_crm_admin(request.user),
        # Another owner's list is a 404 for them: not offered.
        "own_only": _restricted(request.user),
        # Imports run in the background: their progress pages are reached from here, not only from admin.
        "recent_imports": recent_imports_of(request.user),
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
                cells.append(
                    f'<td><a class="cell-main" href="{detail_prefix}{contact.pk}/">{label}</a>{sub}</td>'
                )
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
    if key in ("phone", "email"):
        # A phone number or an address broken over two lines reads as two values.
        return f'<td class="cell-{key}">{esc(cell_value(contact, column))}</td>'
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
    query = request.POST.get("query", "")
    back = reverse("contacts:list") + ("?" + query if len(query) <= 4000 else "")
    if not form.is_valid():  # only a NUL character makes optional text invalid
        for name, problems in form.errors.items():
            messages.error(request, f"{form.fields[name].label or name.capitalize()}: {' '.join(problems)}")
        return redirect(back)
    if len(query) <= 4000 and (problems := _list_state(request, QueryDict(query)).problems):
        # Saved, such a view only ever opened onto "a filter cannot be applied".
        for message in problems.values():
            messages.error(request, f"Not saved: {message}")
        return redirect(back)
    try:
        view = save_view(
            owner=request.user, name=form.cleaned_data["name"], query=form.cleaned_data["query"],
            shared=form.cleaned_data["shared"],
        )
    except InputRejected as exc:
        _flash_errors(request, exc)
        return redirect(back)
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


def _refuse_broken_filters(request, state: ListState) -> None:
    for message in state.problems.values():
        messages.error(request, f"{message} Nothing was done; fix or remove that filter first.")


@require_safe
@staff_required
def contact_export(request):
    """Export every contact matching the list's filters, with its chosen columns."""
    params = request.GET
    if "view" in params:
        # A saved view's filters, as the list applies them (ignored, ?view= exported every contact).
        wanted = params["view"]
        view = _visible_views(request.user).filter(pk=int(wanted)).first() if wanted.isdigit() and len(wanted) < 19 else None
        if view is None:
            raise Http404("No such saved view.")
        params = _over_saved_view(view, params)
    fmt = (request.GET.get("format") or "csv").strip().lower()
    if fmt not in ("csv", "xlsx"):
        # A file in another format than asked for would be opened as if it were one.
        messages.error(request, f"Contacts export as CSV or XLSX, not {request.GET.get('format')!r}.")
        return redirect(reverse("contacts:list") + "?" + _query_without(request.GET, "format"))
    state = _list_state(request, params)
    if state.problems:
        # An export of "nothing" would look like an answer; send the user to the list, which says what is wrong.
        return redirect(reverse("contacts:list") + "?" + _query_without(request.GET, "format"))
    return _export_response(state, state.queryset, fmt)


BULK_ACTION_CHOICES = (
    ("assign_owner", "Assign owner"),
    ("add_tag", "Add tag"),
    ("remove_tag", "Remove tag"),
    ("move_stage", "Move to stage"),
    ("export_csv", "Export CSV"),
    ("export_xlsx", "Export XLSX"),
)
# The control each action reads its value from, and what to call a missing one.
BULK_VALUE_FIELDS = {
    "assign_owner": ("owner", "Choose the owner to assign (or “Nobody” to remove the owner)."),
    "add_tag": ("tag", "Choose the tag to add."),
    "remove_tag": ("tag", "Choose the tag to remove."),
    "move_stage": ("stage", "Choose the stage to move the contacts to."),
}


@require_POST
@staff_required
def contact_bulk(request):
    """Apply a bulk action to the selected contacts, or to all contacts matching the list's filters."""
    state = _list_state(request, QueryDict(request.POST.get("query", "")))
    back = reverse("contacts:list") + "?" + request.POST.get("query", "")
    action = request.POST.get("action", "")
    if action not in dict(BULK_ACTION_CHOICES):
        # Never a default: an action on "all matching" is chosen on purpose or not run at all.
        messages.error(request, "Choose a bulk action first; nothing was changed.")
        return redirect(back)
    if request.POST.get("scope") == "all":
        if state.problems:
            _refuse_broken_filters(request, state)
            return redirect(back)
        targets = state.queryset
    else:
        ids = [int(i) for i in request.POST.getlist("ids") if i.isdigit()]
        if not ids:
            messages.error(request, "Select at least one contact, or choose “all matching”.")
            return redirect(back)
        targets = visible_contacts(request.user).filter(pk__in=ids)
        found = set(targets.values_list("pk", flat=True))
        gone = sorted(set(ids) - found)
        if gone:
            # Usually merged or deleted by a colleague since the list loaded: said, and nothing half-applied.
            named = ", ".join(f"#{pk}" for pk in gone[:10]) + (f" and {len(gone) - 10} more" if len(gone) > 10 else "")
            one = len(gone) == 1
            messages.error(request, f"{'A selected contact' if one else 'Selected contacts'} ({named}) "
                                    f"{'no longer exists or is' if one else 'no longer exist or are'} not visible to you "
                                    "(merged or deleted since the list loaded); nothing was changed. "
                                    "Select again from the reloaded list.")
            return redirect(back)
    if action in ("export_csv", "export_xlsx"):
        return _export_response(state, targets, "xlsx" if action == "export_xlsx" else "csv")
    value_field, missing = BULK_VALUE_FIELDS[action]
    value = request.POST.get(value_field, "").strip()
    if not value:
        messages.error(request, missing + " Nothing was changed.")
        return redirect(back)
    if action == "assign_owner" and _restricted(request.user) and value not in (str(request.user.pk), "me"):
        # As the edit form has it: handed to anyone else, the contacts would vanish from this user's list.
        messages.error(request, "You see only the contacts you own, so you can assign them only to yourself; "
                                "nothing was changed.")
        return redirect(back)
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


def _field_labels(definitions) -> dict[str, str]:
    """Return what the page calls each field key of a change ("company" → "Company", "custom.budget" → its label)."""
    labels = {name: label for name, label, _max in STANDARD_FORM_FIELDS}
    labels.update(birthday="Birthday", owner="Owner", tags="Tags", source="Source", task="Task", file="File", note="Note")
    labels.update({"task.title": "Task title", "task.due_at": "Task due", "task.assignee": "Task assignee",
                   "task.priority": "Task priority", "task.description": "Task description"})
    labels.update({f"custom.{d.key}": d.label for d in definitions})
    return labels


def _field_label(key: str, labels: dict[str, str]) -> str:
    if key in labels:
        return labels[key]
    if key.startswith("stage."):
        return f"Stage ({key.split('.', 1)[1]})"
    return key.removeprefix("custom.").replace("_", " ").capitalize()


def _and_list(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _shown_value(form, name: str) -> str:
    """The field's current stored value as the form shows it (a choice by its label)."""
    field = form.fields[name]
    value = form.get_initial_for_field(field, name)
    choices = dict(getattr(field, "choices", []) or [])
    if isinstance(value, (list, tuple)):
        return ", ".join(str(choices.get(v, v)) for v in value) or "empty"
    shown = choices.get(value, value) if choices else value
    return str(shown) if shown not in (None, "") else "empty"


def _saved_message(changes, definitions) -> str:
    if not changes:
        return "Saved; nothing changed."
    labels = _field_labels(definitions)
    return f"Saved: {_and_list([_field_label(key, labels) for key in changes])} changed."


def _with_key_holders_named(request, exc: InputRejected, holders: dict[str, Contact]) -> InputRejected:
    """Say who holds a taken phone or email ("Already used by Ana Lima (#4)", linked) instead of "Contact #4 …".

    ``holders`` is _key_holders' answer: the contacts holding the form's phone and email.
    """
    errors = []
    for error in exc.errors:
        holder = holders.get(error.field) if error.code == "already_exists" else None
        if holder is not None:
            if visible_contacts(request.user).filter(pk=holder.pk).exists():
                message = format_html(
                    'Already used by <a href="{}">{} (#{})</a>.', holder.get_absolute_url(), holder, holder.pk
                )
            else:
                message = "Already used by another contact you cannot see; ask its owner or an admin."
            error = FieldError(error.field, error.code, message, error.allowed)
        errors.append(error)
    return InputRejected(errors)


def _owner_choices(request) -> tuple[list, bool]:
    """Who a contact may be given to on the create and edit forms, and whether an owner is required."""
    if _restricted(request.user):
        return [request.user], True
    return _staff_users(), False


@staff_required
@once_per_submission
def contact_create(request):
    definitions = custom_field_definitions()
    owners, owner_required = _owner_choices(request)
    tags = list(Tag.objects.order_by(Lower("name")))
    existing = None
    if request.method == "POST":
        form = ContactForm(request.POST, custom_fields=definitions, owners=owners, tags=tags, owner_required=owner_required)
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
                    # update=False: a colleague who saved the same phone a moment ago (after the check
                    # above) gets the "open that contact" offer, not a silent overwrite of theirs.
                    result = upsert_contact(
                        data=data, custom=custom, tags=chosen_tags, actor=actor, source=Source.MANUAL, cleaned=cleaned,
                        update=False,
                    )
                    messages.success(request, f"Created {result.contact}.")
                    return redirect(result.contact)
            except InputRejected as exc:
                holders = _key_holders(form.cleaned_data, None)
                if any(e.code == "already_exists" for e in exc.errors) and holders:
                    existing = next(iter(holders.values()))
                else:
                    form.add_service_errors(_with_key_holders_named(request, exc, holders))
    else:
        form = ContactForm(custom_fields=definitions, owners=owners, tags=tags, initial={"owner": str(request.user.pk)},
                           owner_required=owner_required)
    visible_existing = existing is not None and visible_contacts(request.user).filter(pk=existing.pk).exists()
    return render(request, "contacts/form.html", {
        "form": form, "existing": existing, "existing_visible": visible_existing, "creating": True,
        "submission_token": new_submission_token(),
    })


def _key_holders(cleaned_data, contact: Contact | None) -> dict[str, Contact]:
    """Return the other contacts holding the form's phone or email, as {"phone": ..., "email": ...}."""
    phone_e164 = phone_to_e164_or_none(cleaned_data.get("phone") or "") or ""
    email = email_normalize_or_none(cleaned_data.get("email") or "") or ""
    by_phone, by_email = find_contact_by_keys(phone_e164=phone_e164, email_normalized=email)
    return {
        field: other for field, other in (("phone", by_phone), ("email", by_email))
        if other and (contact is None or other.pk != contact.pk)
    }


@staff_required
def contact_edit(request, pk: int):
    contact = get_object_or_404(visible_contacts(request.user).select_related("owner"), pk=pk)
    definitions = custom_field_definitions()
    owners, owner_required = _owner_choices(request)
    existing = None
    if request.method == "POST":
        form = ContactForm(request.POST, custom_fields=definitions, owners=owners, contact=contact,
                           owner_required=owner_required)
        clashing = form.concurrent_edits() if form.is_valid() else []
        for name in clashing:
            form.add_error(name, (
                f"Changed by someone else while you were editing: it is now "
                f"“{_shown_value(form, name)}”. Save again to replace it with yours."
            ))
        if form.is_valid():
            data, custom = form.edit_data()
            try:
                result = update_contact(
                    contact=contact, data=data, custom=custom, actor=_actor(request), source=Source.MANUAL,
                )
                messages.success(request, _saved_message(result.changes, definitions))
                if _is_htmx(request):
                    return HttpResponse(status=204, headers={"HX-Redirect": contact.get_absolute_url()})
                return redirect(contact)
            except InputRejected as exc:
                # update_contact names a taken phone or email together with every other error.
                holders = _key_holders(form.cleaned_data, contact) if any(
                    e.code == "already_exists" for e in exc.errors
                ) else {}
                existing = next(iter(holders.values()), None)
                form.add_service_errors(_with_key_holders_named(request, exc, holders))
    else:
        form = ContactForm(custom_fields=definitions, owners=owners, contact=contact, owner_required=owner_required)
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


def _list_url_or_empty(raw: str) -> str:
    """Return ``raw`` when it is the contact list's own URL (a relative /contacts/?… link), else ""."""
    if not raw or any(c in raw for c in "\\\r\n\t"):
        return ""
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or parts.path != reverse("contacts:list"):
        return ""
    return raw


def _list_back_url(request) -> str:
    """Return the list URL "← Contacts" goes back to: an explicit ``?back=``, else the list the user came from.

    Only the contact list's own relative URL is accepted (never another path or host). After an
    action on the page, app.js points the link at the list this tab showed last.
    """
    given = _list_url_or_empty(request.GET.get(LIST_BACK_PARAM, ""))
    if given:
        return given
    referer = _same_site_referer(request)
    if referer:
        parts = urlsplit(referer)
        return _list_url_or_empty(parts.path + (f"?{parts.query}" if parts.query else ""))
    return ""


PANELS = ("note", "task", "file")


@require_safe
@staff_required
def contact_detail(request, pk: int):
    try:
        return _contact_page(request, pk)
    except Http404:
        # A link kept from before a merge (a task email, a bookmark) leads to where the contact lives on.
        into = merged_into(pk)
        if into is None or not visible_contacts(request.user).filter(pk=into).exists():
            raise
        messages.info(request, f"Contact #{pk} was merged into this one.")
        return redirect("contacts:detail", pk=into)


def _contact_page(request, pk: int, *, status: int = 200, panel: str = "note", task_form: TaskForm | None = None,
                  note_body: str = "", note_errors=(), file_errors=()):
    """Render the contact page; a refused note, task or file comes back in its open tab with what was typed."""
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
    timeline = _labelled_timeline(contact_timeline(contact, limit=TIMELINE_LIMIT), definitions,
                                  restricted=_restricted(request.user))
    if task_form is None:
        task_form = TaskForm(owners=owners, auto_id="task-%s", initial={"assignee": "", "due_at": _default_due()})
    return render(request, "contacts/detail.html", {
        "contact": contact,
        "standard": standard,
        "custom": custom,
        "provenance": provenance,
        "pipelines": pipeline_rows,
        "available_tags": [t for t in Tag.objects.order_by(Lower("name")) if t.pk not in contact_tag_ids],
        "timeline": timeline,
        "timeline_more": _timeline_more(timeline),
        "task_form": task_form,
        "panel": panel if panel in PANELS else "note",
        "note_body": note_body,
        "note_errors": list(note_errors),
        "file_errors": list(file_errors),
        "submission_token": new_submission_token(),
        "back_url": _list_back_url(request),
        "max_upload": settings.CRM_MAX_UPLOAD_BYTES,
        "allowed_types": _type_names(settings.CRM_ALLOWED_UPLOAD_TYPES),
        "accept": ",".join(settings.CRM_ALLOWED_UPLOAD_TYPES),
        "now": timezone.now(),
        "duplicates": open_duplicates_of(contact, request.user),
    }, status=status)


# --- Merging duplicates ----------------------------------------------------------------------

MAX_CONTACT_ID = 2**63 - 1  # a bigint: a longer number would be a database error, not a missing contact


def _merge_rows(keep: Contact, other: Contact, definitions) -> list[dict]:
    """Field by field: the kept contact's value, the other's, and which one the merge leaves."""
    filled, _custom = merge_fills(keep, other)
    rows = []
    for name, label, _max in STANDARD_FORM_FIELDS:
        shown = (lambda c: c.phone_display) if name == "phone" else (lambda c, n=name: getattr(c, n))
        rows.append({"label": label, "keep": shown(keep), "other": shown(other), "taken": name in filled})
    rows.append({"label": "Birthday", "keep": keep.birthday or "", "other": other.birthday or "", "taken": "birthday" in filled})
    rows.append({"label": "Owner", "keep": keep.owner or "", "other": other.owner or "", "taken": "owner" in filled})
    for definition in definitions:
        column = Column(f"cf.{definition.key}", definition.label, custom=definition)
        rows.append({"label": definition.label, "keep": cell_value(keep, column), "other": cell_value(other, column),
                     "taken": f"custom.{definition.key}" in filled})
    return [r for r in rows if r["keep"] not in ("", None) or r["other"] not in ("", None)]


@require_http_methods(["GET", "HEAD", "POST"])
@staff_required
def contact_merge(request, pk: int):
    """Merge another contact into this one: GET finds it and shows what the merge does, POST merges."""
    contact = _visible_contact(request, pk)
    if request.method == "POST":
        return _merge_post(request, contact)
    asked = request.GET.get("other", "").strip()
    other, problem = None, ""
    if asked:
        other = find_visible_contact(request.user, asked)
        if other is None:
            problem = f"No contact you can see has the id, email or phone “{asked}”."
        elif other.pk == contact.pk:
            other, problem = None, "That is this contact. Give the other one: its id, email or phone."
    definitions = custom_field_definitions()
    return render(request, "contacts/merge.html", {
        "contact": contact,
        "other": other,
        "asked": asked,
        "problem": problem,
        "rows": _merge_rows(contact, other, definitions) if other else [],
        "moves": moved_phrase(merge_moves(other, contact)) if other else "",
        "duplicates": open_duplicates_of(contact, request.user),
        "submission_token": new_submission_token(),
    }, status=400 if problem else 200)


@once_per_submission
def _merge_post(request, contact: Contact):
    other_id = _posted_id(request, "other")
    if other_id is None or other_id > MAX_CONTACT_ID:
        return _bad_id("other")
    other = get_object_or_404(visible_contacts(request.user), pk=other_id)
    try:
        result = merge_contacts(keep=contact, other=other, actor=_actor(request), source=Source.MANUAL)
    except InputRejected as exc:
        _flash_errors(request, exc)
        return redirect(reverse("contacts:merge", args=[contact.pk]))
    moved = moved_phrase(result.moved)
    messages.success(request, f"Merged contact #{result.merged_id} into {result.contact}" + (f": moved {moved}." if moved else "."))
    return redirect(result.contact)


@require_POST
@staff_required
def duplicate_dismiss(request, pk: int, flag_id: int):
    """Mark a possible duplicate of this contact as "not a duplicate"."""
    contact = _visible_contact(request, pk)
    flag = get_object_or_404(
        PossibleDuplicate.objects.filter(Q(contact=contact) | Q(other=contact)).select_related("contact"), pk=flag_id
    )
    other_id = flag.other_id if flag.contact_id == contact.pk else flag.contact_id
    get_object_or_404(visible_contacts(request.user), pk=other_id)
    if dismiss_possible_duplicate(flag=flag, actor=_actor(request), source=Source.MANUAL):
        messages.success(request, f"Marked contact #{other_id} as not a duplicate.")
    return redirect(contact)


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


def _allowed_kinds(content_types) -> str:
    """Return the accepted kinds for a person: "PDF, images (PNG, JPEG), text, Word (.docx)"."""
    images = [TYPE_NAMES.get(t, t) for t in content_types if t.startswith("image/")]
    kinds = []
    for content_type in content_types:
        if content_type.startswith("image/"):
            if images:
                kinds.append(f"images ({', '.join(images)})")
                images = []
        else:
            kinds.append(TYPE_NAMES.get(content_type, content_type))
    return ", ".join(kinds)


def _upload_error_messages(exc: InputRejected, upload) -> list[str]:
    """The upload's refusals in the page's words: sizes in KB/MB, refused types by their extension."""
    messages_out = []
    for error in exc.errors:
        message = error.message
        if error.code == "file_too_large" and upload is not None:
            shown, allowed = size_over_limit(upload.size, settings.CRM_MAX_UPLOAD_BYTES)
            message = f"This file is {shown}; the limit is {allowed}."
        elif error.code == "unsupported_file_type" and "does not match" not in message:
            name = (getattr(upload, "name", "") or "").rsplit("/", 1)[-1]
            if "." in name:
                extension = name.rsplit(".", 1)[-1].lower()
                message = (f"Files of this kind (.{extension}) are not accepted. "
                           f"Allowed: {_allowed_kinds(settings.CRM_ALLOWED_UPLOAD_TYPES)}.")
            else:
                message += f" Allowed: {_allowed_kinds(settings.CRM_ALLOWED_UPLOAD_TYPES)}."
        messages_out.append(message)
    return messages_out


def _shown(value) -> str:
    """A history value as one line of text: lists joined, empties blank."""
    if value in (None, "", []):
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


_CHANGE_OF_FIELD = re.compile(r"^((?:Approved |Rejected )?[Cc]hange of )(\S+)(.*)$")


def _labelled_timeline(items, definitions, *, restricted: bool = False):
    """Give history items their fields' labels ("Updated Company, Intent score"), not their keys.

    ``restricted`` (a user who sees only their own contacts): a possible-duplicate line names the
    other contact and its key, which that user may not see; it says only that there is one.
    """
    labels = _field_labels(definitions)
    for item in items:
        if item.kind != "change":
            continue
        entry = item.obj
        rows = []
        for key, pair in (entry.changes or {}).items():
            before, after = (list(pair) + [None, None])[:2] if isinstance(pair, list) else (None, pair)
            rows.append((_field_label(key, labels), _shown(before), _shown(after)))
        entry.labelled_changes = rows
        summary = entry.summary or ""
        if entry.action == "updated" and entry.changes and summary.startswith("Updated "):
            summary = "Updated " + ", ".join(_field_label(key, labels) for key in entry.changes)
        elif match := _CHANGE_OF_FIELD.match(summary):
            summary = match.group(1) + _field_label(match.group(2), labels) + match.group(3)
        if restricted and entry.action == HistoryEntry.Action.POSSIBLE_DUPLICATE:
            summary = "Flagged as a possible duplicate of another contact."
            entry.labelled_changes = []
        entry.labelled_summary = summary
    return items


def _timeline_more(items) -> str:
    if len(items) < TIMELINE_LIMIT:
        return ""
    return items[-1].at.isoformat()


@require_safe
@staff_required
def contact_timeline_more(request, pk: int):
    contact = _visible_contact(request, pk)
    before = parse_datetime(request.GET.get("before", "") or "")
    if before is None:
        raise Http404("Give ?before=<ISO datetime>.")
    items = _labelled_timeline(contact_timeline(contact, limit=TIMELINE_LIMIT, before=before), custom_field_definitions(),
                               restricted=_restricted(request.user))
    return render(request, "contacts/_timeline_items.html", {
        "contact": contact, "timeline": items, "timeline_more": _timeline_more(items), "now": timezone.now(),
    })


def _default_due() -> str:
    tomorrow = timezone.localtime() + dt.timedelta(days=1)
    return tomorrow.replace(hour=9, minute=0, second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M")


@require_POST
@staff_required
@once_per_submission
def contact_add_note(request, pk: int):
    contact = _visible_contact(request, pk)
    body = request.POST.get("body", "")
    try:
        add_note(contact=contact, body=body, actor=_actor(request), source=Source.MANUAL)
    except InputRejected as exc:
        return _contact_page(request, pk, status=400, panel="note", note_body=body,
                             note_errors=[e.message for e in exc.errors])
    messages.success(request, "Note added.")
    return redirect(contact)


@require_POST
@staff_required
@once_per_submission
def contact_add_file(request, pk: int):
    contact = _visible_contact(request, pk)
    upload = request.FILES.get("file")
    try:
        stored = add_file(contact=contact, upload=upload, actor=_actor(request), source=Source.MANUAL)
    except InputRejected as exc:
        return _contact_page(request, pk, status=400, panel="file", file_errors=_upload_error_messages(exc, upload))
    messages.success(request, f"Uploaded {stored.name}.")
    return redirect(contact)


@require_safe
@staff_required
def contact_file_download(request, pk: int, file_id: int):
    contact = _visible_contact(request, pk)
    stored = get_object_or_404(ContactFile, pk=file_id, contact=contact)
    # Served as an attachment with its checked type, so an uploaded HTML/SVG never renders on our origin.
    return FileResponse(stored.file.open("rb"), as_attachment=True, filename=stored.name,
                        content_type=stored.content_type or "application/octet-stream")


@require_POST
@staff_required
@once_per_submission
def contact_add_task(request, pk: int):
    contact = _visible_contact(request, pk)
    form = TaskForm(request.POST, owners=_staff_users(), auto_id="task-%s")
    if form.is_valid():
        try:
            create_task(
                contact=contact, title=form.cleaned_data["title"], due_at=form.cleaned_data["due_at"],
                assignee=form.cleaned_data["assignee"] or None, priority=form.cleaned_data["priority"],
                actor=_actor(request), source=Source.MANUAL,
            )
        except InputRejected as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, "Task added.")
            return redirect(contact)
    # Back to the page with the Task tab open, what was typed kept and each error by its field.
    return _contact_page(request, pk, status=400, panel="task", task_form=form)


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


def _to_contact(request, contact: Contact):
    url = contact.get_absolute_url()
    if _is_htmx(request):
        return HttpResponse(status=204, headers={"HX-Redirect": url})
    return redirect(url)


STAGE_GONE = "That stage no longer exists (deleted since the page loaded); nothing was changed. Reload the page to see the stages."


@require_POST
@staff_required
def contact_stage(request, pk: int):
    contact = _visible_contact(request, pk)
    if not request.POST.get("stage", "").strip():
        # "Not in this pipeline" is not a stage to move to: say so on the contact page.
        pipeline_id = _posted_id(request, "pipeline")
        pipeline = Pipeline.objects.filter(pk=pipeline_id).first() if pipeline_id is not None else None
        where = f" in {pipeline.name}" if pipeline else ""
        messages.error(request, f"Choose a stage{where} to move {contact} to; nothing was changed.")
        return _to_contact(request, contact)
    stage_id = _posted_id(request, "stage")
    if stage_id is None:
        return _bad_id("stage")
    stage = Stage.objects.select_related("pipeline").filter(pk=stage_id).first()
    if stage is None:
        messages.error(request, STAGE_GONE)
        return _to_contact(request, contact)
    move_to_stage(contact=contact, pipeline=stage.pipeline, stage=stage, actor=_actor(request), source=Source.MANUAL)
    messages.success(request, f"Moved to {stage.pipeline.name}: {stage.name}.")
    return _to_contact(request, contact)


# --- Tasks -----------------------------------------------------------------------------------


def _visible_task(request, pk: int) -> Task:
    task = get_object_or_404(Task.objects.select_related("contact", "assignee"), pk=pk)
    if task.assignee_id != request.user.pk and not visible_contacts(request.user).filter(pk=task.contact_id).exists():
        raise Http404("No such task.")
    return task


def _task_groups(request, wanted: str) -> dict:
    """Return My tasks' context for an assignee choice ("" me, "all", a user id; only admins choose)."""
    is_admin = user_is_crm_admin(request.user)
    owners = _staff_users() if is_admin else []
    wanted = wanted if is_admin else ""
    assignee = request.user
    everyone = wanted == "all"
    if wanted and not everyone:
        # Any other value names a user, or no one: a 404, never "me" shown as if asked for.
        assignee = next((u for u in owners if str(u.pk) == wanted), None)
        if assignee is None:
            raise Http404("No such user.")
    open_tasks = tasks_for(request.user, assignee=assignee, everyone=everyone)
    now = timezone.localtime()
    start_today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start_tomorrow = start_today + dt.timedelta(days=1)
    ranges = [
        ("overdue", "Overdue", Q(due_at__lt=start_today)),
        ("today", "Today", Q(due_at__gte=start_today, due_at__lt=start_tomorrow)),
        ("upcoming", "Upcoming", Q(due_at__gte=start_tomorrow)),
    ]
    # Counted in the database, listed a page at a time: a cut-off list counted by its length hid
    # every task past the 500th without a word.
    counts = open_tasks.aggregate(**{key: Count("id", filter=where) for key, _label, where in ranges})
    groups = []
    for key, label, where in ranges:
        shown = _pages_param(request, f"{key}_pages") * TASK_GROUP_PAGE
        tasks = list(open_tasks.filter(where)[:shown])
        for task in tasks:
            # Assigned to this user on a contact they may not see: the task is theirs, the person is not.
            task.contact_hidden = not can_see_contact(request.user, task.contact)
        more = ""
        if counts[key] > len(tasks):
            params = request.GET.copy()
            params[f"{key}_pages"] = str(shown // TASK_GROUP_PAGE + 1)
            more = f"?{params.urlencode()}#h-{key}"
        groups.append((key, label, tasks, counts[key], more))
    return {
        "groups": groups, "is_admin": is_admin, "owners": owners, "assignee": assignee, "everyone": everyone,
        "wanted": wanted, "now": timezone.now(), "total": sum(counts.values()),
    }


TASK_GROUP_PAGE = 200


def _pages_param(request, name: str) -> int:
    value = request.GET.get(name, "")
    return min(int(value), 100) if value.isdigit() and 0 < len(value) < 4 and int(value) > 0 else 1


@require_POST
@staff_required
def task_toggle(request, pk: int):
    task = _visible_task(request, pk)
    if request.POST.get("done", "1") == "1":
        task = complete_task(task=task, actor=_actor(request), source=Source.MANUAL)
    else:
        task = reopen_task(task=task, actor=_actor(request), source=Source.MANUAL)
    # Assigned to this user on a contact they may not see: the row says so, as My tasks does.
    task.contact_hidden = not can_see_contact(request.user, task.contact)
    if _is_htmx(request):
        # The row's form keeps pointing back at the page it is on, not at this POST-only URL.
        next_url = _back(request, "")
        show_contact = request.POST.get("show_contact") == "1"
        context = {"task": task, "now": timezone.now(), "show_contact": show_contact, "inline": not show_contact,
                   "next_url": next_url}
        if show_contact:
            # On My tasks: the heading's count and each section's badge follow (out-of-band swaps).
            wanted = QueryDict(urlsplit(next_url).query).get("assignee", "")
            try:
                context["counts"] = _task_groups(request, wanted)
            except Http404:
                context["counts"] = _task_groups(request, "")
        return render(request, "contacts/_task_toggled.html", context)
    messages.success(request, f"Task “{task.title}” {'done' if task.status == Task.Status.DONE else 'reopened'}.")
    # A task assigned to a user who may not see its contact is theirs to do, but its contact page is a 404 to them.
    return redirect(_back(request, reverse("contacts:tasks") if task.contact_hidden else task.contact.get_absolute_url()))


@require_safe
@staff_required
def my_tasks(request):
    return render(request, "contacts/tasks.html", _task_groups(request, request.GET.get("assignee", "")))


# --- Pipeline board ---------------------------------------------------------------------------


def _board_filters(request) -> tuple[str, Tag | None, str]:
    """(owner, tag, problem): a filter that names no one or no tag is a problem, not "everyone"."""
    owner = request.GET.get("owner", "")
    _guard_owner_param(request, request.GET)
    problem = owner_filter_problem(owner) or ""
    tag = None
    wanted_tag = request.GET.get("tag", "")
    if wanted_tag:
        tag = Tag.objects.filter(pk=int(wanted_tag)).first() if wanted_tag.isdigit() and len(wanted_tag) < 19 else None
        if tag is None:
            problem = problem or "The tag filter refers to a tag that does not exist (any more)."
    return owner, tag, problem


@require_safe
@staff_required
def board(request):
    pipelines = list(Pipeline.objects.all())
    if not pipelines:
        return render(request, "contacts/board.html", {"pipelines": []})
    wanted = request.GET.get("pipeline", "")
    pipeline = next((p for p in pipelines if str(p.pk) == wanted), None)
    if pipeline is None:
        if wanted:
            messages.warning(request, f"There is no pipeline {wanted[:20]!r} (deleted, or never was); showing {pipelines[0].name}.")
        pipeline = pipelines[0]
    owner, tag, problem = _board_filters(request)
    memberships = board_memberships(pipeline, user=request.user, owner=owner, tag=tag)
    if problem:
        memberships = memberships.none()
    stages, cards, counts = board_columns(pipeline, memberships)
    columns = [
        {"stage": s, "cards": cards.get(s.pk, []), "count": counts.get(s.pk, 0),
         "more": counts.get(s.pk, 0) > len(cards.get(s.pk, [])),
         "cursor": _card_cursor(cards.get(s.pk, []))}
        for s in stages
    ]
    return render(request, "contacts/board.html", {
        "pipelines": pipelines, "pipeline": pipeline, "columns": columns, "owner": owner, "tag": tag, "problem": problem,
        "tags": list(Tag.objects.order_by(Lower("name"))), "owners": _staff_users(), "now": timezone.now(),
        "own_only": _restricted(request.user),
        "filter_query": _query_without(request.GET, "pipeline"),
    })


def _card_cursor(cards) -> str:
    if len(cards) < BOARD_COLUMN_SIZE:
        return ""
    last = cards[-1]
    return encode_cursor(last.entered_at, last.pk)


@require_safe
@staff_required
def board_column(request, stage_id: int):
    """Next cards of one column, loaded when the column is scrolled to its end."""
    stage = get_object_or_404(Stage.objects.select_related("pipeline"), pk=stage_id)
    owner, tag, problem = _board_filters(request)
    memberships = board_memberships(stage.pipeline, user=request.user, owner=owner, tag=tag)
    if problem:
        memberships = memberships.none()
    page = board_column_page(memberships, stage, after=request.GET.get("after", ""))
    return render(request, "contacts/_board_cards.html", {
        "cards": page.rows, "stage": stage, "cursor": page.next_cursor or "", "now": timezone.now(),
        "filter_query": _query_without(request.GET, "after"),
    })


@require_safe
@staff_required
def board_card(request, contact_id: int):
    contact = _visible_contact(request, contact_id)
    pipeline_id = request.GET.get("pipeline") or ""
    pipeline = get_object_or_404(Pipeline, pk=int(pipeline_id) if pipeline_id.isdigit() and len(pipeline_id) < 18 else 0)
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
    stage = Stage.objects.select_related("pipeline").filter(pk=stage_id).first()
    if stage is None:
        return HttpResponse(STAGE_GONE, status=404, content_type="text/plain")
    result = move_to_stage(contact=contact, pipeline=stage.pipeline, stage=stage, actor=_actor(request), source=Source.MANUAL)
    membership = result.membership
    membership.contact = contact
    return render(request, "contacts/_board_card.html", {"card": membership, "now": timezone.now()})
