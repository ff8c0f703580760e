"""Outbound webhooks: the outbox, Standard Webhooks signing, batched delivery with retries.

Flow: a service calls ``emit_event`` inside its transaction, which writes one
``WebhookDelivery`` row per subscribed endpoint and, on commit, queues a few
``deliver_due_webhooks`` tasks. A task claims due rows in batches
(``select_for_update(skip_locked=True)``), pushes their ``next_attempt_at``
forward as a lease, commits, POSTs them and records each attempt. Failures get a
new ``next_attempt_at`` (exponential backoff with jitter); the periodic beat task
picks them up. A worker killed mid-batch loses nothing: its lease expires and
the rows become due again (receivers deduplicate on ``webhook-id``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from automations import switchboard
from automations.models import DeliveryAttempt, WebhookDelivery, WebhookEndpoint, WebhookEventType
from automations.ssrf import UnsafeURL, check_url
from crm_hub.errors import FieldError, InputRejected

logger = logging.getLogger(__name__)

USER_AGENT = "CRM-Hub-Webhooks/1.0"


def _setting(name: str, default):
    return getattr(settings, name, default)


# --- Secrets and signing -------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return one Standard Webhooks signature, ``v1,<base64 HMAC-SHA256 of id.timestamp.body>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signing_secrets(endpoint: WebhookEndpoint, *, now: dt.datetime | None = None) -> list[str]:
    """The current secret, plus the previous one while its rotation window lasts."""
    now = now or timezone.now()
    found = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        found.append(endpoint.previous_secret)
    return found


def signed_headers(*, endpoint: WebhookEndpoint, msg_id: str, body: bytes, timestamp: int | None = None) -> dict:
    timestamp = int(time.time()) if timestamp is None else timestamp
    signatures = " ".join(
        sign(secret=s, msg_id=msg_id, timestamp=timestamp, body=body) for s in signing_secrets(endpoint)
    )
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }


def message_body(delivery: WebhookDelivery) -> bytes:
    """The JSON body: the same bytes on every attempt, so a receiver can compare retries."""
    document = {"type": delivery.event, "timestamp": delivery.created_at.isoformat(), "data": delivery.payload}
    return json.dumps(document, separators=(",", ":"), sort_keys=True, default=str).encode()


# --- Endpoints -------------------------------------------------------------------------


def _clean_endpoint(*, url: str, events: Iterable[str]) -> list[str]:
    errors: list[FieldError] = []
    try:
        check_url(url)
    except UnsafeURL as exc:
        errors.append(FieldError("url", "unsafe_url", str(exc)))
    events = list(events or [])
    unknown = [e for e in events if e not in WebhookEventType.values]
    if unknown or not events:
        errors.append(
            FieldError("events", "invalid_value", "Choose events from the list.", list(WebhookEventType.values))
        )
    if errors:
        raise InputRejected(errors)
    return events


@transaction.atomic
def create_endpoint(*, url: str, events: Iterable[str], active: bool = True, description: str = "") -> tuple[WebhookEndpoint, str]:
    """Create an endpoint with a fresh secret; return it and the secret (shown to the admin once)."""
    events = _clean_endpoint(url=url, events=events)
    secret = new_secret()
    endpoint = WebhookEndpoint.objects.create(
        url=url, events=events, active=active, description=description, secret=secret
    )
    return endpoint, secret


@transaction.atomic
def update_endpoint(
    *, endpoint: WebhookEndpoint, url: str, events: Iterable[str], active: bool, description: str = ""
) -> WebhookEndpoint:
    """Change an endpoint; turning it back on clears the failure state that disabled it."""
    events = _clean_endpoint(url=url, events=events)
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    reactivated = active and not endpoint.active
    endpoint.url, endpoint.events, endpoint.active, endpoint.description = url, events, active, description
    fields = ["url", "events", "active", "description"]
    if reactivated:
        endpoint.failing_since = endpoint.disabled_at = None
        endpoint.disabled_reason = ""
        fields += ["failing_since", "disabled_at", "disabled_reason"]
    endpoint.save(update_fields=fields)
    if reactivated:
        _queue_after_commit(WebhookDelivery.objects.filter(endpoint=endpoint, status="pending").count())
    return endpoint


@transaction.atomic
def rotate_secret(*, endpoint: WebhookEndpoint, window_seconds: int | None = None) -> str:
    """Give the endpoint a new secret; the old one keeps signing too until the window ends."""
    window = _setting("CRM_WEBHOOK_ROTATION_SECONDS", 86400) if window_seconds is None else window_seconds
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    secret = new_secret()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = timezone.now() + dt.timedelta(seconds=window)
    endpoint.secret = secret
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
    return secret


# --- The outbox -----------------------------------------------------------------------


class _Kick:
    """One on-commit callback per transaction that queues enough tasks for what it emitted."""

    def __init__(self) -> None:
        self.count = 0
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        _queue_tasks(self.count)


def _queue_tasks(count: int) -> None:
    from automations import tasks

    if count <= 0:
        return
    batch = max(1, _setting("CRM_WEBHOOK_BATCH_SIZE", 50))
    parallel = max(1, _setting("CRM_WEBHOOK_PARALLEL_TASKS", 2))
    for _ in range(min(parallel, math.ceil(count / batch))):
        tasks.deliver_due_webhooks.delay()


def _queue_after_commit(count: int) -> None:
    if count <= 0 or not _setting("CRM_WEBHOOK_QUEUE_ON_COMMIT", True):
        return
    if connection.in_atomic_block:
        for _sids, func, _robust in connection.run_on_commit:
            if isinstance(func, _Kick) and not func.fired:
                func.count += count
                return
    kick = _Kick()
    kick.count = count
    transaction.on_commit(kick)


# Django builds WebhookEventType.values afresh on each access; this runs for every contact write.
_KNOWN_EVENTS = frozenset(WebhookEventType.values)


def emit_event(
    *, event: str, payload: dict | Callable[[], dict], endpoints: Iterable[WebhookEndpoint] | None = None
) -> list[WebhookDelivery]:
    """Write the event to the outbox for each subscribed active endpoint, in the caller's transaction.

    Nothing is sent if that transaction rolls back; delivery is queued on commit.
    ``payload`` may be a callable, built only when someone is subscribed (it costs
    queries the hot write paths should not pay for nobody). ``endpoints`` narrows
    the recipients (a rule's webhook action names one).
    """
    if event not in _KNOWN_EVENTS:
        raise ValueError(f"Unknown webhook event {event!r}")
    if endpoints is None and not switchboard.event_has_subscribers(event):
        return []
    candidates = list(endpoints) if endpoints is not None else list(WebhookEndpoint.objects.filter(active=True))
    targets = [e for e in candidates if e.active and event in (e.events or [])]
    if not targets:
        return []
    if callable(payload):
        payload = payload()
    now = timezone.now()
    rows = [
        WebhookDelivery(
            endpoint=e, event=event, msg_id="msg_" + uuid.uuid4().hex, payload=payload, next_attempt_at=now
        )
        for e in targets
    ]
    WebhookDelivery.objects.bulk_create(rows)
    _queue_after_commit(len(rows))
    return rows


@transaction.atomic
def redeliver(*, deliveries: Iterable[WebhookDelivery]) -> int:
    """Send these events again (same webhook-id), whatever their state; return how many were queued."""
    ids = [d.pk for d in deliveries]
    now = timezone.now()
    count = WebhookDelivery.objects.filter(pk__in=ids).update(
        status=WebhookDelivery.Status.PENDING, next_attempt_at=now, delivered_at=None, retry_from=now,
    )
    _queue_after_commit(count)
    return count


# --- Delivery --------------------------------------------------------------------------


@dataclass
class AttemptResult:
    delivery: WebhookDelivery
    attempted_at: dt.datetime
    status_code: int | None
    duration_ms: int
    snippet: str
    error: str

    @property
    def success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff_seconds(attempts: int) -> float:
    """Delay before the next try after ``attempts`` failures: doubling, capped, with jitter.

    "Equal jitter": half the delay is fixed, half random, so retries from many
    deliveries spread out but never come sooner than half the schedule.
    """
    base = float(_setting("CRM_WEBHOOK_RETRY_BASE_SECONDS", 30))
    cap = float(_setting("CRM_WEBHOOK_RETRY_MAX_SECONDS", 3 * 3600))
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    return delay / 2 + random.uniform(0, delay / 2)


def _send_threads() -> int:
    return max(1, _setting("CRM_WEBHOOK_SEND_THREADS", 8))


def _per_endpoint_share(batch: int) -> int:
    """How many of a claimed batch's rows one endpoint gets sent at most; the rest wait for the next claim."""
    return math.ceil(batch / _send_threads())


def _lease_seconds(batch: int) -> float:
    """Long enough for a batch of receivers that all time out, so a live worker never loses its rows."""
    timeout = float(_setting("CRM_WEBHOOK_TIMEOUT_SECONDS", 10))
    # An attempt takes at most about two timeouts: the response's first byte, then the body's deadline.
    # A thread sends at most two endpoints' shares of a batch (see _Sender.send).
    worst_case = 2 * _per_endpoint_share(batch) * 2 * timeout + 2
    return max(float(_setting("CRM_WEBHOOK_LEASE_SECONDS", 120)), worst_case)


def _claim(*, limit: int, ids: list[int] | None = None, exclude: set[int] | None = None) -> list[WebhookDelivery]:
    """Take up to ``limit`` due rows nobody else holds and lease them to this worker."""
    now = timezone.now()
    lease = dt.timedelta(seconds=_lease_seconds(limit))
    with transaction.atomic():
        queryset = WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now, endpoint__active=True
        )
        if ids is not None:
            queryset = queryset.filter(pk__in=ids)
        if exclude:
            queryset = queryset.exclude(pk__in=exclude)
        claimed = list(
            queryset.select_for_update(skip_locked=True, of=("self",)).order_by("next_attempt_at", "id")[:limit]
        )
        if claimed:
            WebhookDelivery.objects.filter(pk__in=[d.pk for d in claimed]).update(next_attempt_at=now + lease)
    if claimed:
        endpoints = {e.pk: e for e in WebhookEndpoint.objects.filter(pk__in={d.endpoint_id for d in claimed})}
        for delivery in claimed:
            delivery.endpoint = endpoints[delivery.endpoint_id]
    return claimed


def _post(session: requests.Session, delivery: WebhookDelivery) -> AttemptResult:
    started = time.monotonic()
    attempted_at = timezone.now()
    endpoint = delivery.endpoint
    status_code = None
    snippet = error = ""
    try:
        check_url(endpoint.url)
        body = message_body(delivery)
        headers = signed_headers(endpoint=endpoint, msg_id=delivery.msg_id, body=body)
        timeout = float(_setting("CRM_WEBHOOK_TIMEOUT_SECONDS", 10))
        response = session.post(
            endpoint.url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True
        )
        try:
            status_code = response.status_code
            snippet = _read_snippet(response, deadline=started + timeout)
        finally:
            response.close()  # the rest of the body is not wanted
        if response.is_redirect or 300 <= status_code < 400:
            error = f"Redirect to {response.headers.get('location', '?')[:180]} not followed"
    except UnsafeURL as exc:
        error = f"Refused: {exc}"
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"
    duration = int((time.monotonic() - started) * 1000)
    return AttemptResult(delivery, attempted_at, status_code, duration, snippet, error[:255])


SNIPPET_BYTES = 2048


def _read_snippet(response, *, deadline: float) -> str:
    """The start of the response body, read for no longer than the attempt's deadline.

    requests' timeout bounds each socket read, not the whole body: a receiver sending one
    byte every second kept a worker for minutes, past its lease, and the event was sent
    again while the first POST was still open. read1 returns what has arrived, so the
    deadline is checked at least once per socket timeout.
    """
    received = bytearray()
    while len(received) < SNIPPET_BYTES and time.monotonic() < deadline:
        chunk = response.raw.read1(SNIPPET_BYTES - len(received))
        if not chunk:
            break
        received += chunk
    return bytes(received).decode(response.encoding or "utf-8", errors="replace")[:500]


def _record(results: list[AttemptResult], held: list[WebhookDelivery] = ()) -> None:
    """Write the attempt log and each row's new state; disable endpoints that are gone or failing for too long.

    ``held``: rows claimed but not sent, behind one of their endpoint's that failed (see _Sender.send). They
    wait for that one's retry, so they still reach the receiver after it.
    """
    now = timezone.now()
    retry_for = dt.timedelta(seconds=_setting("CRM_WEBHOOK_RETRY_FOR_SECONDS", 86400))
    disable_after = dt.timedelta(seconds=_setting("CRM_WEBHOOK_DISABLE_AFTER_SECONDS", 86400))
    with transaction.atomic():
        DeliveryAttempt.objects.bulk_create([
            DeliveryAttempt(
                delivery=r.delivery, attempted_at=r.attempted_at, status_code=r.status_code,
                duration_ms=r.duration_ms, response_snippet=r.snippet, error=r.error, success=r.success,
            )
            for r in results
        ])
        delivered = [r.delivery.pk for r in results if r.success]
        if delivered:
            WebhookDelivery.objects.filter(pk__in=delivered).update(
                status=WebhookDelivery.Status.DELIVERED, delivered_at=now, attempts=F("attempts") + 1,
                last_status_code=200, last_error="", next_attempt_at=None,  # the claim's lease: no send is coming
            )
            # Exact codes for the rare non-200 successes.
            for r in results:
                if r.success and r.status_code != 200:
                    WebhookDelivery.objects.filter(pk=r.delivery.pk).update(last_status_code=r.status_code)
        endpoint_state: dict[int, dict] = {}
        for r in results:
            state = endpoint_state.setdefault(r.delivery.endpoint_id, {"ok": False, "failed": False, "gone": False})
            state["ok"] |= r.success
            state["failed"] |= not r.success
            state["gone"] |= r.status_code == 410
            if r.success:
                continue
            delivery = r.delivery
            attempts = delivery.attempts + 1
            # The retry window runs from the event, or from an admin's redelivery of it (an old event sent
            # again after a receiver's outage had one attempt before).
            give_up = r.status_code == 410 or now - (delivery.retry_from or delivery.created_at) >= retry_for
            next_attempt_at = None if give_up else now + dt.timedelta(seconds=backoff_seconds(attempts))
            WebhookDelivery.objects.filter(pk=delivery.pk).update(
                attempts=attempts,
                last_status_code=r.status_code,
                last_error=r.error or f"HTTP {r.status_code}",
                status=WebhookDelivery.Status.FAILED if give_up else WebhookDelivery.Status.PENDING,
                next_attempt_at=next_attempt_at,
            )
            state["retry_at"] = next_attempt_at or now
        # Behind a failure: with its retry (claims take rows by time, then id). Left over from a
        # share: due now, for the next claim. One statement per distinct time, not per row.
        held_until: dict[dt.datetime, list[int]] = {}
        for delivery in held:
            retry_at = endpoint_state.get(delivery.endpoint_id, {}).get("retry_at") or now
            held_until.setdefault(retry_at, []).append(delivery.pk)
        for retry_at, ids in held_until.items():
            WebhookDelivery.objects.filter(pk__in=ids, status=WebhookDelivery.Status.PENDING).update(
                next_attempt_at=retry_at
            )
        # Lock endpoints in id order so two workers recording at once cannot deadlock.
        for endpoint_id, state in sorted(endpoint_state.items()):
            endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
            if state["gone"]:
                _disable(endpoint, now, "The receiver answered 410 Gone.")
            elif state["ok"] and endpoint.failing_since is not None:
                endpoint.failing_since = None
                endpoint.save(update_fields=["failing_since"])
            elif state["failed"] and not state["ok"]:
                if endpoint.failing_since is None:
                    endpoint.failing_since = now
                    endpoint.save(update_fields=["failing_since"])
                elif now - endpoint.failing_since >= disable_after:
                    _disable(endpoint, now, f"Every delivery failed since {endpoint.failing_since:%Y-%m-%d %H:%M} UTC.")


def _disable(endpoint: WebhookEndpoint, now: dt.datetime, reason: str) -> None:
    if not endpoint.active:
        return
    endpoint.active = False
    endpoint.disabled_at = now
    endpoint.disabled_reason = reason[:255]
    endpoint.save(update_fields=["active", "disabled_at", "disabled_reason"])
    logger.warning("Webhook endpoint %s disabled: %s", endpoint.pk, reason)


def _session() -> requests.Session:
    session = requests.Session()
    # Proxies from the environment would take requests past the SSRF guard's view.
    session.trust_env = False
    return session


def _subject(delivery: WebhookDelivery) -> Any:
    """The contact an event is about (every payload names it as contact.id), else the event itself."""
    contact = delivery.payload.get("contact") if isinstance(delivery.payload, dict) else None
    if isinstance(contact, dict) and contact.get("id") is not None:
        return ("contact", contact["id"])
    return ("delivery", delivery.pk)


class _Sender:
    """POSTs a batch over a few threads, each with its own keep-alive session (no database access here)."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.sessions: list[requests.Session] = []
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=_send_threads(), thread_name_prefix="webhook-send")

    def _post(self, delivery: WebhookDelivery) -> AttemptResult:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = _session()
            with self.lock:
                self.sessions.append(session)
        return _post(session, delivery)

    def send(self, deliveries: list[WebhookDelivery]) -> tuple[list[AttemptResult], list[WebhookDelivery]]:
        """POST a claimed batch; return the attempts and the rows held back, not sent.

        One contact's events to one endpoint go one at a time, in the order they happened (sent all at
        once over the threads, a contact's created and updated events crossed on the way); other
        contacts' and other endpoints' go in parallel. After a failure the rest of that contact's
        events are held back, to follow the failed one's retry.
        """
        share = _per_endpoint_share(len(deliveries)) if deliveries else 0
        in_order: dict[tuple[int, Any], list[WebhookDelivery]] = {}
        for delivery in sorted(deliveries, key=lambda d: d.pk):
            in_order.setdefault((delivery.endpoint_id, _subject(delivery)), []).append(delivery)
        results: list[AttemptResult] = []
        held: list[WebhookDelivery] = []
        for sent, kept in self.pool.map(lambda rows: self._send_in_order(rows, share), in_order.values()):
            results.extend(sent)
            held.extend(kept)
        return results, held

    def _send_in_order(self, rows: list[WebhookDelivery], share: int) -> tuple[list[AttemptResult], list[WebhookDelivery]]:
        sent: list[AttemptResult] = []
        for index, delivery in enumerate(rows):
            if index == share:
                return sent, rows[index:]
            result = self._post(delivery)
            sent.append(result)
            if not result.success:
                return sent, rows[index + 1:]
        return sent, []

    def __enter__(self) -> _Sender:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True)
        for session in self.sessions:
            session.close()


def deliver_due(*, batch_size: int | None = None, max_seconds: float | None = None) -> int:
    """Deliver due outbox rows batch after batch until none are due or the time budget is spent.

    Rows attempted in this call are not taken again in it, so a failing receiver
    gets its next try from a later (periodic) run, on the backoff schedule.
    """
    batch_size = batch_size or _setting("CRM_WEBHOOK_BATCH_SIZE", 50)
    budget = _setting("CRM_WEBHOOK_TASK_SECONDS", 60) if max_seconds is None else max_seconds
    deadline = time.monotonic() + budget
    seen: set[int] = set()
    sent = 0
    with _Sender() as sender:
        while time.monotonic() < deadline:
            claimed = _claim(limit=batch_size, exclude=seen)
            if not claimed:
                break
            results, held = sender.send(claimed)
            seen.update(r.delivery.pk for r in results)
            _record(results, held)
            sent += len(results)
    return sent


def deliver_one(*, delivery_id: int) -> bool:
    """Attempt one outbox row if it is still due; return whether it was delivered."""
    claimed = _claim(limit=1, ids=[delivery_id])
    if not claimed:
        return False
    with _session() as session:
        result = _post(session, claimed[0])
    _record([result])
    return result.success


def prune_log(*, older_than_days: int | None = None) -> int:
    """Delete delivered and given-up outbox rows (and their attempt logs) older than the retention."""
    days = _setting("CRM_WEBHOOK_KEEP_DAYS", 30) if older_than_days is None else older_than_days
    cutoff = timezone.now() - dt.timedelta(days=days)
    deleted, _ = WebhookDelivery.objects.filter(
        status__in=[WebhookDelivery.Status.DELIVERED, WebhookDelivery.Status.FAILED], created_at__lt=cutoff
    ).delete()
    return deleted
