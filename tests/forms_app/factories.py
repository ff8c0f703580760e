"""Forms built through the service, as the builder does."""

from __future__ import annotations

from crm_hub.actors import Actor
from forms_app import services
from forms_app.models import Form

CONTACT_FIELDS = [
    {"id": "fname", "type": "text", "label": "Full name", "required": True, "maps_to": "contact.name"},
    {"id": "femail", "type": "email", "label": "Email", "required": True, "maps_to": "contact.email"},
    {"id": "fphone", "type": "phone", "label": "Phone", "required": False, "maps_to": "contact.phone"},
    {"id": "fmsg", "type": "long_text", "label": "Message", "required": False, "maps_to": ""},
]


def make_form(*, title="Contact us", fields=None, tags=(), stage=None, owner=None, publish=True, **settings) -> Form:
    return services.save_form(
        form=None,
        settings_in=services.FormSettings(title=title, tags=tags, stage=stage, owner=owner, **settings),
        fields=fields if fields is not None else [dict(f) for f in CONTACT_FIELDS],
        actor=Actor.for_system("test"),
        publish=publish,
    )
