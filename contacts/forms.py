"""Forms of the web UI. They validate shape; the services validate meaning."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.utils.functional import cached_property

from contacts.models import Contact, CustomField, Task
from contacts.normalize import InvalidPhone, email_normalize_or_none, parse_phone
from crm_hub.errors import InputRejected
from crm_hub.login_throttle import LoginThrottleMixin


class StaffAuthenticationForm(LoginThrottleMixin, AuthenticationForm):
    """Django's login form, throttled, refusing accounts that are not staff (customers never sign in here)."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "not_staff": "This account has no access to the CRM. Ask an administrator for a staff account.",
    }

    def confirm_login_allowed(self, user) -> None:
        super().confirm_login_allowed(user)
        if not user.is_staff:
            raise forms.ValidationError(self.error_messages["not_staff"], code="not_staff")


class StaffAdminAuthenticationForm(LoginThrottleMixin, AdminAuthenticationForm):
    """Django admin's login form under the same throttle as the web UI's (set in crm_hub.urls)."""


STANDARD_FORM_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("name", "Name", 200),
    ("phone", "Phone", 64),
    ("email", "Email", 254),
    ("company", "Company", 200),
    ("position", "Position", 120),
    ("identity", "Tax / ID number", 40),
    ("street", "Street", 200),
    ("number", "Number", 20),
    ("complement", "Complement", 120),
    ("district", "District", 120),
    ("city", "City", 120),
    ("state", "State", 80),
    ("zip_code", "ZIP code", 20),
    ("country", "Country", 80),
)


def _choices(definition: CustomField) -> list[str]:
    """The field's choices as text; only a list is read (never a string saved before validation)."""
    return [str(c) for c in definition.choices] if isinstance(definition.choices, list) else []


def _custom_form_field(definition: CustomField) -> forms.Field:
    T = CustomField.Type
    # "Required" binds people editing by hand; agents and imports may leave it empty.
    common = {
        "required": definition.required, "label": definition.label, "help_text": definition.help_text,
        "error_messages": {"required": f"{definition.label} is required: fill it in to save."},
    }
    if definition.type == T.LONG_TEXT:
        return forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), **common)
    if definition.type in (T.NUMBER, T.DECIMAL):
        return forms.CharField(widget=forms.NumberInput(attrs={"step": "any"}), **common)
    if definition.type == T.BOOLEAN:
        return forms.ChoiceField(choices=[("", "—"), ("true", "Yes"), ("false", "No")], **common)
    if definition.type == T.DATE:
        return forms.CharField(widget=forms.DateInput(attrs={"type": "date"}), **common)
    if definition.type == T.DATETIME:
        return forms.CharField(widget=forms.DateTimeInput(attrs={"type": "datetime-local"}), **common)
    if definition.type == T.SINGLE_CHOICE:
        return forms.ChoiceField(choices=[("", "—"), *((c, c) for c in _choices(definition))], **common)
    if definition.type == T.MULTIPLE_CHOICE:
        return forms.MultipleChoiceField(
            choices=[(c, c) for c in _choices(definition)], widget=forms.CheckboxSelectMultiple, **common
        )
    input_type = {T.EMAIL: "email", T.PHONE: "tel", T.URL: "url"}.get(definition.type, "text")
    return forms.CharField(widget=forms.TextInput(attrs={"type": input_type}), **common)


def _stale_choices(definition: CustomField, value: Any) -> list[str]:
    """The contact's stored choice values that are no longer among the field's choices."""
    T = CustomField.Type
    if value in (None, "", []) or definition.type not in (T.SINGLE_CHOICE, T.MULTIPLE_CHOICE):
        return []
    allowed = set(_choices(definition))
    stored = value if isinstance(value, list) else [value]
    return [str(v) for v in stored if str(v) not in allowed]


def _custom_initial(definition: CustomField, value: Any) -> Any:
    if value is None:
        return None
    if definition.type == CustomField.Type.BOOLEAN:
        return "true" if value else "false"
    if definition.type == CustomField.Type.SINGLE_CHOICE:
        return str(value)
    if definition.type == CustomField.Type.DATETIME and isinstance(value, str):
        return value[:16]
    return value


def _one_line_break(value: Any) -> Any:
    return value.replace("\r\n", "\n") if isinstance(value, str) else value


class ContactForm(forms.Form):
    """Shape of a manual create/edit. The contact services decide what is valid (one set of rules)."""

    birthday = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    owner = forms.ChoiceField(required=False)

    def __init__(self, *args, custom_fields: list[CustomField], owners: list, tags: list | None = None,
                 contact: Contact | None = None, owner_required: bool = False, **kwargs):
        if contact is not None and "initial" not in kwargs:
            initial = {name: getattr(contact, name) for name, _label, _max in STANDARD_FORM_FIELDS}
            initial["birthday"] = contact.birthday
            initial["owner"] = str(contact.owner_id or "")
            for definition in custom_fields:
                initial[f"cf_{definition.key}"] = _custom_initial(definition, (contact.custom or {}).get(definition.key))
            kwargs["initial"] = initial
        super().__init__(*args, **kwargs)
        standard = {
            name: forms.CharField(label=label, max_length=max_length, required=False)
            for name, label, max_length in STANDARD_FORM_FIELDS
        }
        standard["phone"].widget = forms.TextInput(attrs={"type": "tel", "autocomplete": "off"})
        standard["email"].widget = forms.TextInput(attrs={"type": "email", "autocomplete": "off"})
        ordered = {**standard, "birthday": self.fields["birthday"], "owner": self.fields["owner"]}
        self.fields = ordered
        people = [(str(u.pk), u.get_full_name() or u.get_username()) for u in owners]
        if contact is not None and contact.owner_id and all(pk != str(contact.owner_id) for pk, _ in people):
            # An owner who left (inactive, or no longer staff) stays selected, so saving another field keeps
            # them; choosing them again is refused by the service with the reason.
            owner = contact.owner
            people.append((str(owner.pk), f"{owner.get_full_name() or owner.get_username()} (can no longer sign in)"))
        self.fields["owner"].choices = people if owner_required else [("", "Nobody"), *people]
        if owner_required:
            # A sales user who sees only their own contacts would lose one handed to anyone else (a 404 after saving).
            self.fields["owner"].required = True
            self.fields["owner"].help_text = "You see only the contacts you own, so this one stays yours."
        self.custom_fields = custom_fields
        # Choice fields whose stored value is no longer an allowed choice (removed in the admin):
        # offered as the current, marked option so an edit of another field keeps the value.
        self.stale_choice_keys: set[str] = set()
        for definition in custom_fields:
            field = _custom_form_field(definition)
            stale = _stale_choices(definition, (contact.custom or {}).get(definition.key)) if contact else []
            if stale:
                self.stale_choice_keys.add(definition.key)
                marked = [(v, f"{v} (current value, no longer a choice)") for v in stale]
                options = list(field.choices)
                if definition.type == CustomField.Type.SINGLE_CHOICE:
                    field.choices = [options[0], *marked, *options[1:]]
                else:
                    field.choices = [*marked, *options]
            self.fields[f"cf_{definition.key}"] = field
        self.editing = contact is not None
        if self.editing:
            # Each field carries the value the user loaded, so a save writes only what they changed
            # (see edit_data): writing back the whole form reverted what an agent or a colleague had
            # saved meanwhile.
            for field in self.fields.values():
                field.show_hidden_initial = True
        if tags is not None:
            self.fields["tags"] = forms.MultipleChoiceField(
                required=False, choices=[(t.name, t.name) for t in tags], widget=forms.CheckboxSelectMultiple
            )

    @property
    def standard_fields(self):
        return [self[name] for name, _label, _max in STANDARD_FORM_FIELDS] + [self["birthday"], self["owner"]]

    @property
    def custom_bound_fields(self):
        return [self[f"cf_{d.key}"] for d in self.custom_fields]

    def contact_data(self) -> dict[str, Any]:
        data = {name: self.cleaned_data.get(name) or "" for name, _label, _max in STANDARD_FORM_FIELDS}
        birthday = self.cleaned_data.get("birthday")
        if birthday:
            # The services read "" as an invalid date, so an empty birthday is left out (kept as is).
            data["birthday"] = birthday.isoformat()
        data["owner"] = self.cleaned_data.get("owner") or ""
        return data

    def custom_data(self) -> dict[str, Any]:
        """The custom values to write; a kept no-longer-allowed choice the user did not change is left out (kept)."""
        return {
            # A textarea's line breaks come as CRLF from the browser: stored as the API stores them.
            d.key: _one_line_break(self.cleaned_data.get(f"cf_{d.key}")) or None
            for d in self.custom_fields
            if not (d.key in self.stale_choice_keys and f"cf_{d.key}" not in self.edited)
        }

    # Posted by the edit page beside the hidden copies of what it loaded: a field without one was
    # loaded empty (an empty multiple choice renders no hidden input at all).
    LOADED_MARK = "loaded_values"

    def _comparable(self, name: str, raw: Any) -> Any:
        """A widget's raw value (text or a list of texts) as one value to compare, the same way for every source."""
        field = self.fields[name]
        if isinstance(raw, str):
            raw = raw.replace("\r\n", "\n")  # browsers send a textarea's line breaks as CRLF
        elif isinstance(raw, (list, tuple)):
            raw = [str(v).replace("\r\n", "\n") for v in raw]
        try:
            value = field.to_python(raw)
        except ValidationError:
            return raw
        if isinstance(value, (list, tuple)):
            return sorted(str(v) for v in value)
        if name == "phone" and value:  # the same number in another format is the same phone
            try:
                parsed = parse_phone(value)
            except InvalidPhone:
                return value
            return (parsed.e164, parsed.extension)
        if name == "email" and value:
            return email_normalize_or_none(value) or value
        return "" if value is None else value

    def _as_rendered(self, name: str, value: Any) -> Any:
        """``value`` as the form renders it into its hidden copy (so a stored 0.05 and a typed "0.05" agree)."""
        field = self.fields[name]
        return field.hidden_widget().format_value(field.prepare_value(value))

    def _posted(self, name: str) -> Any:
        return self._comparable(name, self.fields[name].widget.value_from_datadict(self.data, self.files, self.add_prefix(name)))

    def _now(self, name: str) -> Any:
        """The field's value as stored now, comparable."""
        return self._comparable(name, self._as_rendered(name, self.get_initial_for_field(self.fields[name], name)))

    def _loaded(self, name: str) -> Any:
        """The value the user loaded: its hidden copy, or (posted without any) the value stored now."""
        key = self.add_initial_prefix(name)
        if key in self.data:
            return self._comparable(name, self.fields[name].hidden_widget().value_from_datadict(self.data, self.files, key))
        if self.LOADED_MARK in self.data:
            return self._comparable(name, None)
        return self._now(name)

    @cached_property
    def edited(self) -> list[str]:
        """The fields the user changed since loading the form."""
        return [name for name in self.fields if self._posted(name) != self._loaded(name)]

    def edit_data(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(standard, custom) values of the fields the user changed since loading the form: an edit writes only these."""
        edited = set(self.edited)
        data = {k: v for k, v in self.contact_data().items() if k in edited}
        if "birthday" in edited and "birthday" not in data:
            data["birthday"] = ""  # emptied: cleared (contact_data leaves an empty one out)
        custom = {k: v for k, v in self.custom_data().items() if f"cf_{k}" in edited}
        return data, custom

    def concurrent_edits(self) -> list[str]:
        """Fields the user changed that someone else also changed since the form was loaded (to another value).

        The form's initial values are read from the contact as it is now; the hidden copies are what
        the user saw. Where those differ and the user typed a third value, whose change wins is a
        question for the user. The hidden copies are refreshed, so saving again keeps theirs.
        """
        if self.LOADED_MARK not in self.data and not any(self.add_initial_prefix(n) in self.data for n in self.fields):
            return []  # posted without what it loaded (a script, an old page): nothing to compare
        clashing = [
            name for name in self.edited
            if self._now(name) != self._loaded(name) and self._posted(name) != self._now(name)
        ]
        if clashing:
            self.data = self.data.copy()
            for name in clashing:
                shown = self._as_rendered(name, self.get_initial_for_field(self.fields[name], name))
                values = shown if isinstance(shown, (list, tuple)) else [shown]
                self.data.setlist(self.add_initial_prefix(name), ["" if v is None else str(v) for v in values])
        return clashing

    def add_service_errors(self, exc: InputRejected) -> None:
        """Show each service error on its field ("custom.budget" on cf_budget); the rest above the form."""
        for error in exc.errors:
            name = error.field
            if name.startswith("custom."):
                name = "cf_" + name.split(".", 1)[1]
            message = error.message
            if error.allowed:
                message += " Allowed: " + ", ".join(str(a) for a in error.allowed[:20])
            self.add_error(name if name in self.fields else None, message)


class NoteForm(forms.Form):
    body = forms.CharField(max_length=100_000, widget=forms.HiddenInput)


class TaskForm(forms.Form):
    title = forms.CharField(
        label="Title", max_length=200,
        widget=forms.TextInput(attrs={"placeholder": "Call back about the proposal"}),
    )
    due_at = forms.DateTimeField(
        label="Due",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    assignee = forms.ChoiceField(label="Assignee", required=False)
    priority = forms.ChoiceField(label="Priority", choices=Task.Priority.choices, initial=Task.Priority.NORMAL)

    def __init__(self, *args, owners: list, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["assignee"].choices = [("", "Contact owner (or me, if none)"), *((str(u.pk), u.get_full_name() or u.get_username()) for u in owners)]

    def add_service_errors(self, exc: InputRejected) -> None:
        """Show each service error on its field; the rest above the form."""
        for error in exc.errors:
            self.add_error(error.field if error.field in self.fields else None, error.message)

    def error_summary(self) -> list[str]:
        """Every error as "Label: message", for the alert above the form."""
        return [
            f"{self.fields[name].label}: {message}" if name in self.fields else message
            for name, errors in self.errors.items()
            for message in errors
        ]


class SaveViewForm(forms.Form):
    """Shape only: save_view decides what a name and a query may be, and says it."""

    name = forms.CharField(required=False)
    shared = forms.BooleanField(required=False)
    query = forms.CharField(required=False)
