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


@register.filter
def getlist(querydict, key):
    """Return every value of ``key`` in a QueryDict (``params|getlist:'tag'``)."""
    return querydict.getlist(key) if hasattr(querydict, "getlist") else []


@register.filter
def filesize(value) -> str:
    """Return a byte count as "10 MB" / "512 KB"."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return ""
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" or size >= 10 else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def size_over_limit(size: int, limit: int) -> tuple[str, str]:
    """The two sizes of "this file is X; the limit is Y", told apart: rounded alike ("10 MB" twice), in bytes."""
    shown, allowed = filesize(size), filesize(limit)
    if shown == allowed:
        return f"{size:,} bytes", f"{limit:,} bytes"
    return shown, allowed


@register.filter
def days_since(value, now) -> int:
    """Return whole days between ``value`` and ``now`` (days in stage on the board)."""
    if not value or not now:
        return 0
    return max((now - value).days, 0)


@register.filter
def rich_text(value) -> str:
    """Render a note body: sanitized again at display time, so a row written around the services is still safe."""
    from django.utils.safestring import mark_safe

    from contacts.sanitize import safe_stored_html

    return mark_safe(safe_stored_html(value or ""))
