"""Server-side request forgery guard for outbound webhooks.

Only http(s); the host is resolved and every address it resolves to must be a
public one, unless ``settings.CRM_WEBHOOK_ALLOWED_HOSTS`` names the host, one of
its addresses, or a network (CIDR) holding it. Redirects are never followed by
the sender, so a public URL cannot bounce a request to an internal address.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class UnsafeURL(Exception):
    """The URL may not be called from the server."""


def _allowed() -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    names: set[str] = set()
    networks = []
    for item in getattr(settings, "CRM_WEBHOOK_ALLOWED_HOSTS", []) or []:
        item = str(item).strip().lower()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            names.add(item)
    return names, networks


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address (mapped ::ffff:a.b.c.d, 6to4 2002:abcd:efgh::, Teredo) reach
        # that address on hosts that route them: each is judged by the address it wraps too.
        wrapped = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        if any(inner is not None and not _is_public(inner) for inner in wrapped):
            return False
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        or not address.is_global
    )


def check_url(url: str) -> None:
    """Raise UnsafeURL unless ``url`` is http(s) and resolves only to public or allow-listed addresses."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("Only http and https URLs are allowed.")
    # Parsers disagree on backslashes, credentials and spaces: urlsplit reads
    # "http://127.0.0.1:81\@8.8.8.8/" as host 8.8.8.8 while the HTTP client sends it
    # to 127.0.0.1. Such URLs are refused, and the host checked is the one the client
    # itself will connect to.
    if "\\" in url or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise UnsafeURL("The URL may not contain a backslash, spaces or control characters.")
    from urllib3.util import parse_url

    try:
        client_host = (parse_url(url).host or "").strip("[]").lower()
    except ValueError as exc:
        raise UnsafeURL("The URL cannot be read.") from exc
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeURL("The URL has no host.")
    if client_host != host:
        raise UnsafeURL("The URL's host is ambiguous.")
    names, networks = _allowed()
    if host in names:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeURL("The URL has an invalid port.") from exc
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURL(f"Cannot resolve {host}.") from exc
    if not infos:
        raise UnsafeURL(f"Cannot resolve {host}.")
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if str(address) in names or any(address in network for network in networks):
            continue
        if not _is_public(address):
            raise UnsafeURL(
                f"{host} resolves to {address}, a private, loopback, link-local or reserved address; "
                "to allow it on purpose (a receiver on your own network), add it to CRM_WEBHOOK_ALLOWED_HOSTS."
            )
