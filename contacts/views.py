"""Web UI for the sales team. Views translate HTTP to selectors and services; they decide nothing."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from contacts.forms import StaffAuthenticationForm


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


def error_404(request, exception=None):
    return render(request, "errors/404.html", status=404)


def error_500(request):
    # No context processors beyond the request: the database may be what failed.
    from django.template import loader

    from django.http import HttpResponseServerError

    return HttpResponseServerError(loader.get_template("errors/500.html").render({"request": request}))


@require_GET
@staff_required
def contact_list(request):
    from contacts.selectors import visible_contacts

    contacts = visible_contacts(request.user).select_related("owner")[:50]
    return render(request, "contacts/list.html", {"contacts": contacts})


@require_GET
@staff_required
def board(request):
    return render(request, "contacts/board.html", {})


@require_GET
@staff_required
def my_tasks(request):
    return render(request, "contacts/tasks.html", {})
