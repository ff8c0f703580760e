"""Protection of the public form pages: the signed form token, the honeypot, the per-IP rate limit.

Why a signed token instead of Django's CSRF cookie on the public POST
---------------------------------------------------------------------
The public page is meant to live inside an ``<iframe>`` on someone else's
website. There the page is a third-party context: browsers do not send a
``SameSite=Lax`` cookie with the iframe's POST, and Chrome and Safari block or
partition third-party cookies even when marked ``SameSite=None; Secure``. Django's
CSRF check would then refuse every embedded submission. So the public POST is
``csrf_exempt`` and carries a token signed with ``SECRET_KEY`` (salted, tied to
the form's id, valid for ``FORMS_TOKEN_MAX_AGE`` seconds) that the page renders
into a hidden field.

This is safe because the public view has no ambient authority to abuse: it
ignores ``request.user`` and the session entirely, so a cross-site POST can do
nothing a visitor could not do by filling the form. The token still proves the
POST came from a page we rendered for this very form (bots replaying a bare
POST need to fetch the page first), and the rate limit below caps floods. Staff
pages keep Django's normal CSRF protection.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.utils.crypto import salted_hmac

from crm_hub import login_throttle

TOKEN_SALT = "forms_app.public-form"
HONEYPOT_FIELD = "website"


def client_ip(request) -> str:
    """Return the visitor's IP: REMOTE_ADDR, or, behind our own proxy, the address it appended to X-Forwarded-For.

    The leftmost entry is whatever the visitor sent, so a bot could rotate it to
    dodge the rate limit; the sign-in throttle's reading (from the right, as many
    hops as CRM_LOGIN_TRUSTED_PROXIES, at least one) is the one to trust.
    """
    if not settings.FORMS_TRUST_X_FORWARDED_FOR:
        return (request.META.get("REMOTE_ADDR") or "").strip()
    return login_throttle.client_ip(request, trusted_proxies=max(1, settings.CRM_LOGIN_TRUSTED_PROXIES))


def hash_ip(ip: str) -> str:
    """Return an HMAC-SHA256 of the IP keyed by SECRET_KEY: stable for rate limits, useless for finding the IP."""
    return salted_hmac("forms_app.ip", ip, algorithm="sha256").hexdigest()


def make_token(form_id: int) -> str:
    # A nonce makes each rendered page's token its own, so a token can be spent once (claim_token).
    return signing.TimestampSigner(salt=TOKEN_SALT).sign(f"{form_id}:{secrets.token_urlsafe(9)}")


TOKEN_EXPIRED = "This page was open for too long. Please check your answers and send the form again."
TOKEN_REFUSED = "This page could not be checked (it may come from an old copy or another form). Please send the form again."


def token_problem(token: str, form_id: int) -> str:
    """Why a page's token is not accepted (the message for the visitor), or "" when it is."""
    try:
        value = signing.TimestampSigner(salt=TOKEN_SALT).unsign(token or "", max_age=settings.FORMS_TOKEN_MAX_AGE)
    except signing.SignatureExpired:
        return TOKEN_EXPIRED
    except signing.BadSignature:
        return TOKEN_REFUSED
    return "" if value.split(":", 1)[0] == str(form_id) else TOKEN_REFUSED


def _token_key(token: str) -> str:
    return "forms_app:spent:" + hashlib.sha256(token.encode()).hexdigest()


def claim_token(token: str) -> bool:
    """Spend a page's token; False if it was already spent (a double click, a resent POST).

    The second POST of one page gets the thanks page without a second submission, so the
    person, their rules and webhooks are not recorded twice. Atomic in the cache.
    """
    return cache.add(_token_key(token), 1, timeout=settings.FORMS_TOKEN_MAX_AGE)


def release_token(token: str) -> None:
    """Give a token back when its POST wrote nothing (the answers were refused): fixing them is not a double submit."""
    cache.delete(_token_key(token))


def honeypot_filled(data) -> bool:
    """Return whether the field people never see (it is hidden from them and from screen readers) was filled."""
    return bool((data.get(HONEYPOT_FIELD) or "").strip())


def allow_attempt(ip_hash: str) -> bool:
    """Count one POST from this IP in the current window; return False once it is over the limit.

    The view counts an IPv6 client by its /64 (login_throttle.ip_bucket): every such client holds
    at least that block, so counting single addresses let one rotate through them.

    A fixed window in Django's cache: with a shared cache (Redis via CACHE_URL) the
    limit holds across every web process.
    """
    key = f"forms_app:rate:{ip_hash}"
    window = settings.FORMS_RATE_LIMIT_WINDOW
    if cache.add(key, 1, timeout=window):
        count = 1
    else:
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add() and incr()
            cache.set(key, 1, timeout=window)
            count = 1
    return count <= settings.FORMS_RATE_LIMIT
