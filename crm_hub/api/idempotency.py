"""``Idempotency-Key`` for every POST, PUT and PATCH under /api/v1/, as a middleware.

It sits in front of every API view, so new endpoints are covered without code of
their own. For a call carrying the header:

1. The agent is authenticated here with the same token lookup DRF uses (the
   lookup is remembered on the request, so a call costs one query). Without a
   valid token the call passes through and the view answers 401.
2. A row (agent, key) is inserted and committed at once, marked in flight. The
   unique constraint decides between concurrent duplicates: the loser finds the
   row and waits up to ``CRM_IDEMPOTENCY_WAIT_SECONDS`` for it to finish, then
   replays it, or answers 409 ``idempotency_key_in_flight``.
3. The view runs in one transaction together with the update that stores its
   response, so a stored response always matches what was written, and a crash
   in between leaves neither (the in-flight row can then be taken over once it
   is older than ``CRM_IDEMPOTENCY_IN_FLIGHT_SECONDS``).
   Work that must not run inside a transaction (an LLM call: on SQLite the
   open transaction holds the database write lock) goes in a hook the view
   class declares, ``prepare_before_transaction(request, agent, *args, **kwargs)``:
   it is called here before the transaction opens and leaves its result on the
   request for the view. A hook that raises is ignored; the view then decides.
4. What is stored: 2xx responses and the 4xx answers the body alone decides
   (400, 404, 413, 422): a retry with the same body gets the same answer.
   Answers that depend on the moment (401, 403, 409, 429) and every 5xx roll the
   view back and delete the row, so the key is free for a retry.

The same key with a different method, path or body gets 422
``idempotency_key_reused``; a replay carries ``Idempotent-Replayed: true``.
Rows are kept ``CRM_IDEMPOTENCY_TTL_HOURS`` (24) and purged by the
``purge_idempotency_keys`` command or the periodic Celery task of the same name.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import time

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.utils import timezone

from crm_hub.api.auth import agent_for_token, bearer_token
from crm_hub.models import Agent, IdempotencyRecord

API_PREFIX = "/api/v1/"
METHODS = frozenset({"POST", "PUT", "PATCH"})
REPLAY_HEADER = "Idempotent-Replayed"
STORED_CLIENT_ERRORS = frozenset({400, 404, 413, 422})
MAX_KEY_LENGTH = 255
logger = logging.getLogger(__name__)
PREPARE_HOOK = "prepare_before_transaction"


def should_store(status_code: int) -> bool:
    return 200 <= status_code < 300 or status_code in STORED_CLIENT_ERRORS


def _error(status: int, code: str, message: str, headers: dict | None = None, extra: dict | None = None) -> JsonResponse:
    item = {"field": "Idempotency-Key", "code": code, "message": message, **(extra or {})}
    response = JsonResponse({"errors": [item]}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def request_fingerprint(request: HttpRequest) -> str:
    """Hash method, path and body; JSON is canonicalised and multipart hashed by parts (boundaries vary)."""
    digest = hashlib.sha256(f"{request.method}\n{request.get_full_path()}\n".encode())
    if request.content_type == "multipart/form-data" and request.method == "POST":
        # DRF reads request.POST/FILES when the stream was consumed here. (Django parses forms only for
        # POST; other methods fall through to the raw body, where a new boundary means a new request.)
        for name in sorted(request.POST):
            digest.update(json.dumps([name, request.POST.getlist(name)]).encode())
        for name in sorted(request.FILES):
            for upload in request.FILES.getlist(name):
                digest.update(json.dumps([name, upload.name, upload.size]).encode())
                for chunk in upload.chunks():
                    digest.update(chunk)
                upload.seek(0)
        return digest.hexdigest()
    body = request.body
    try:
        body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass
    digest.update(body)
    return digest.hexdigest()


def replay(record: IdempotencyRecord) -> HttpResponse:
    response = HttpResponse(bytes(record.body), status=record.status_code, content_type=record.content_type or None)
    response[REPLAY_HEADER] = "true"
    return response


class IdempotencyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raw_key = request.META.get("HTTP_IDEMPOTENCY_KEY")
        if raw_key is None or request.method not in METHODS or not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        token = bearer_token(request)
        agent = agent_for_token(request, token) if token else None
        if agent is None or not _method_allowed(request):
            # Unknown path or a method the endpoint lacks: its 404 or 405 is the answer, not the key's.
            return self.get_response(request)
        key = raw_key.strip()
        if not key or len(key) > MAX_KEY_LENGTH:
            return _error(400, "invalid_value", f"Send a non-empty Idempotency-Key of at most {MAX_KEY_LENGTH} characters.")
        try:
            fingerprint = request_fingerprint(request)
        except RequestDataTooBig:
            from crm_hub.api.limits import body_limit, too_large

            return too_large(body_limit(request))
        record, answer = self._claim(request, agent, key, fingerprint)
        if answer is not None:
            return answer
        _prepare_before_transaction(request, agent)
        return self._run(request, record, agent)

    def _claim(self, request, agent: Agent, key: str, fingerprint: str):
        """Own the key (return the new row) or return the answer for a duplicate."""
        wait = float(getattr(settings, "CRM_IDEMPOTENCY_WAIT_SECONDS", 2))
        stale_after = dt.timedelta(seconds=float(getattr(settings, "CRM_IDEMPOTENCY_IN_FLIGHT_SECONDS", 60)))
        ttl = dt.timedelta(hours=float(getattr(settings, "CRM_IDEMPOTENCY_TTL_HOURS", 24)))
        deadline = time.monotonic() + wait
        while True:
            now = timezone.now()
            try:
                # Committed at once (autocommit) so concurrent duplicates see it; a savepoint only
                # when something (a test) already holds a transaction.
                with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
                    record = IdempotencyRecord.objects.create(
                        agent=agent, key=key, method=request.method, path=request.path[:500],
                        fingerprint=fingerprint, created_at=now,
                    )
                return record, None
            except IntegrityError:
                pass
            existing = IdempotencyRecord.objects.filter(agent=agent, key=key).first()
            if existing is None:
                continue  # the first call failed and freed the key: claim it
            if existing.created_at < now - ttl:
                IdempotencyRecord.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
                continue
            if existing.fingerprint != fingerprint:
                return None, _error(
                    422, "idempotency_key_reused",
                    "This Idempotency-Key was used with a different request; use a new key for a new request.",
                )
            if existing.state == IdempotencyRecord.State.DONE:
                lost = [scope for scope in existing.scopes or [] if not agent.has_scope(scope)]
                if lost:
                    # The stored answer was made with a scope the agent has since lost (a contact's
                    # identity, the write itself): replaying it would hand over what a new call may not.
                    return None, _error(
                        403, "missing_scope",
                        f"This key's stored answer was made with the scope '{lost[0]}', which this agent no longer has; "
                        "ask an admin to add it back.", extra={"field": None, "scope": lost[0], "scopes": lost},
                    )
                return None, replay(existing)
            if existing.created_at < now - stale_after:
                # Its request died without answering (the view's writes rolled back with it): take over.
                taken = IdempotencyRecord.objects.filter(
                    pk=existing.pk, state=IdempotencyRecord.State.IN_FLIGHT, created_at=existing.created_at
                ).update(created_at=now)
                if taken:
                    existing.created_at = now
                    return existing, None
                continue
            if time.monotonic() >= deadline:
                return None, _error(
                    409, "idempotency_key_in_flight",
                    "A request with this Idempotency-Key is still running; retry shortly to get its response.",
                    {"Retry-After": "1"},
                )
            time.sleep(0.05)

    def _run(self, request, record: IdempotencyRecord, agent: Agent) -> HttpResponse:
        keep = False
        try:
            # The view's writes and the stored response commit together, or neither does.
            with transaction.atomic():
                response = self.get_response(request)
                keep = should_store(response.status_code) and not response.streaming
                if keep:
                    IdempotencyRecord.objects.filter(pk=record.pk).update(
                        state=IdempotencyRecord.State.DONE,
                        status_code=response.status_code,
                        content_type=response.get("Content-Type", ""),
                        body=response.content,
                        scopes=sorted(agent.scopes or []),
                        completed_at=timezone.now(),
                    )
                else:
                    transaction.set_rollback(True)
        finally:
            if not keep:
                IdempotencyRecord.objects.filter(pk=record.pk).delete()
        return response


def _method_allowed(request: HttpRequest) -> bool:
    try:
        match = resolve(request.path_info, getattr(request, "urlconf", None))
    except Resolver404:
        return False
    view_class = getattr(match.func, "view_class", None) or getattr(match.func, "cls", None)
    if view_class is None:
        return False
    method = request.method.lower()
    return method in getattr(view_class, "http_method_names", ()) and hasattr(view_class, method)


def _prepare_before_transaction(request: HttpRequest, agent: Agent) -> None:
    """Call the view class's ``prepare_before_transaction`` hook, if it has one, outside any transaction."""
    try:
        match = resolve(request.path_info, getattr(request, "urlconf", None))
    except Resolver404:
        return
    view_class = getattr(match.func, "view_class", None) or getattr(match.func, "cls", None)
    hook = getattr(view_class, PREPARE_HOOK, None)
    if hook is None:
        return
    try:
        hook(request, agent, *match.args, **match.kwargs)
    except Exception:  # noqa: BLE001 - the view runs anyway and gives the real answer
        logger.exception("%s.%s failed", view_class.__name__, PREPARE_HOOK)


def purge_expired(*, older_than: dt.timedelta | None = None) -> int:
    """Delete idempotency rows older than the TTL; return how many went."""
    ttl = older_than or dt.timedelta(hours=float(getattr(settings, "CRM_IDEMPOTENCY_TTL_HOURS", 24)))
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - ttl).delete()
    return deleted
