"""Forms of the web UI. They validate shape; the services validate meaning."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import AuthenticationForm


class StaffAuthenticationForm(AuthenticationForm):
    """Django's login form, refusing accounts that are not staff (customers never sign in here)."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "not_staff": "This account has no access to the CRM. Ask an administrator for a staff account.",
    }

    def confirm_login_allowed(self, user) -> None:
        super().confirm_login_allowed(user)
        if not user.is_staff:
            raise forms.ValidationError(self.error_messages["not_staff"], code="not_staff")
