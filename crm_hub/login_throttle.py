"""Staff sign-in throttling: failed logins counted per username and per client IP, then a lockout.

One mechanism for both password logins, the web UI's ``/accounts/login/`` and Django admin's
``/admin/login/``: their forms mix in :class:`LoginThrottleMixin`, which asks :func:`lockout_for`
before anything else, so while a username or an IP is locked out no password is checked at all
(a correct one is refused too) and the lockout costs no password hashing.

Counting: each failure adds one to a fixed-window counter in Django's cache (``cache.add`` then
``cache.incr``; atomic on Redis, so the limit holds across web processes when ``CACHE_URL``
names one). A counter that reaches its limit within ``CRM_LOGIN_FAILURE_WINDOW_SECONDS`` becomes
a lock key that lives ``CRM_LOGIN_LOCKOUT_SECONDS`` and holds its own end time, so the form can
say roughly when to come back; the counter starts again from zero after it. A successful sign-in
clears its username's counter, never the IP's (one right password must not buy an IP another
round of guesses at other accounts).

Nothing here reveals whether an account exists: unknown usernames are counted and locked like
real ones and every lockout shows the same message. Usernames are compared stripped and
case-folded ("Sam" and " sam" share a budget), and cache keys hold HMACs, not usernames or IPs.

Client IP: ``REMOTE_ADDR``; with ``CRM_LOGIN_TRUSTED_PROXIES = N`` the N-th address from the
right of ``X-Forwarded-For``, the one the outermost of your own proxies saw (the left-hand
entries are whatever the client sent). IPv6 addresses count per /64, the block one host usually
holds, so rotating addresses inside it does not buy more guesses.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.utils.crypto import salted_hmac

logger = logging.getLogger(__name__)

KEY_PREFIX = "crm_hub:login"


@dataclass(frozen=True)
class Lockout:
    """A refusal: sign-in from this username or IP is locked until ``until`` (a Unix time)."""

    until: float

    @property
    def seconds_left(self) -> int:
        return max(0, math.ceil(self.until - time.time()))

    @property
    def message(self) -> str:
        minutes = max(1, math.ceil(self.seconds_left / 60))
        when = "about a minute" if minutes == 1 else f"about {minutes} minutes"
        return f"Too many failed sign-in attempts. Try again in {when}."


@dataclass(frozen=True)
class _Subject:
    kind: str  # "user" or "ip"
    value: str  # the normalized username or the IP, for the log only
    limit: int

    @property
    def _digest(self) -> str:
        return salted_hmac(f"{KEY_PREFIX}:{self.kind}", self.value, algorithm="sha256").hexdigest()

    @property
    def counter_key(self) -> str:
        return f"{KEY_PREFIX}:failures:{self.kind}:{self._digest}"

    @property
    def lock_key(self) -> str:
        return f"{KEY_PREFIX}:locked:{self.kind}:{self._digest}"


def normalize_username(username: str) -> str:
    """Return the username as the throttle counts it: stripped and case-folded."""
    return (username or "").strip().casefold()


def client_ip(request, *, trusted_proxies: int | None = None) -> str:
    """Return the client's IP: REMOTE_ADDR, or X-Forwarded-For's entry from the outermost trusted proxy.

    Entries are read from the right: each of our proxies appends the address it
    saw, while everything to their left is whatever the client chose to send.
    """
    if request is None:
        return ""
    proxies = settings.CRM_LOGIN_TRUSTED_PROXIES if trusted_proxies is None else trusted_proxies
    if proxies > 0:
        hops = [
            hop.strip()
            for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
            if hop.strip()
        ]
        if hops:
            return hops[-min(proxies, len(hops))]
    return (request.META.get("REMOTE_ADDR") or "").strip()


def ip_bucket(ip: str) -> str:
    """Return the address an IP is counted under: itself, or its /64 for IPv6."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # not an address (a proxy's odd header): counted as given
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _subjects(request, username: str) -> list[_Subject]:
    subjects = []
    name = normalize_username(username)
    if name and settings.CRM_LOGIN_MAX_FAILURES_PER_USER > 0:
        subjects.append(_Subject("user", name, settings.CRM_LOGIN_MAX_FAILURES_PER_USER))
    # No IP (no request, or a server that sets none): not counted, since one shared "unknown"
    # bucket would let anyone lock every user out. The username limit still holds.
    ip = client_ip(request)
    if ip and settings.CRM_LOGIN_MAX_FAILURES_PER_IP > 0:
        subjects.append(_Subject("ip", ip_bucket(ip), settings.CRM_LOGIN_MAX_FAILURES_PER_IP))
    return subjects


def lockout_for(request, username: str) -> Lockout | None:
    """Return the lockout that applies to this username or the request's IP, or None."""
    subjects = _subjects(request, username)
    if not subjects:
        return None
    locks = cache.get_many([subject.lock_key for subject in subjects])
    # The end time decides, not only the key's TTL: the same answer whatever the backend's clock.
    until = max((float(end) for end in locks.values()), default=0.0)
    return Lockout(until=until) if until > time.time() else None


def _count_failure(key: str, window: int) -> int:
    if cache.add(key, 1, timeout=window):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add() and incr()
        cache.add(key, 1, timeout=window)
        return 1


def record_failure(request, username: str) -> Lockout | None:
    """Count a failed sign-in for the username and the IP; return the lockout if this one started it."""
    window = settings.CRM_LOGIN_FAILURE_WINDOW_SECONDS
    lockout_seconds = settings.CRM_LOGIN_LOCKOUT_SECONDS
    started = None
    for subject in _subjects(request, username):
        if _count_failure(subject.counter_key, window) < subject.limit:
            continue
        until = time.time() + lockout_seconds
        cache.set(subject.lock_key, until, timeout=lockout_seconds)
        cache.delete(subject.counter_key)
        started = Lockout(until=until)
        logger.warning(
            "Sign-in locked for %d s: %s %r reached %d failed attempts within %d s (client IP %s)",
            lockout_seconds,
            "username" if subject.kind == "user" else "IP",
            subject.value,
            subject.limit,
            window,
            client_ip(request) or "unknown",
        )
    return started


def record_success(request, username: str) -> None:
    """Clear the username's failure count after a successful sign-in (the IP's count stays)."""
    for subject in _subjects(request, username):
        if subject.kind == "user":
            cache.delete(subject.counter_key)


class LoginThrottleMixin:
    """Mix into an ``AuthenticationForm``: refuse locked-out sign-ins unchecked, count failures.

    A failure is a wrong username or password (``authenticate`` found no user). A right password
    for an account that may not sign in here (inactive, not staff) is neither counted nor a success.
    """

    def clean(self):
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is None or not password:
            # A required field is missing: Django reports it and checks nothing.
            return super().clean()
        lockout = lockout_for(self.request, username)
        if lockout is not None:
            raise ValidationError(lockout.message, code="throttled")
        try:
            cleaned_data = super().clean()
        except ValidationError:
            if self.user_cache is None:
                lockout = record_failure(self.request, username)
                if lockout is not None:
                    raise ValidationError(lockout.message, code="throttled") from None
            raise
        record_success(self.request, username)
        return cleaned_data
