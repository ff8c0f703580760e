"""Template helpers for the web UI."""

from django import template

from contacts.selectors import user_is_crm_admin

register = template.Library()


@register.filter
def is_crm_admin(user) -> bool:
    return user_is_crm_admin(user)


@register.filter
def get_item(mapping, key):
    """Look up ``key`` in a dict (template variables cannot index by a variable)."""
    if mapping is None:
        return None
    try:
        return mapping.get(key)
    except AttributeError:
        return None
