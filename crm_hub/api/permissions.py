"""Scope checks: a view declares ``required_scopes`` per HTTP method; a call without one gets 403 naming it."""

from __future__ import annotations

from rest_framework import exceptions, permissions

from crm_hub.models import Agent


class MissingScope(exceptions.PermissionDenied):
    default_code = "missing_scope"

    def __init__(self, scope: str, *alternatives: str, also: tuple[str, ...] = ()):
        self.scope = scope
        self.scopes = [scope, *also]  # every scope the call lacks, so one answer names them all
        either = "".join(f" (or {a!r})" for a in alternatives)
        if also:
            named = ", ".join(repr(s) for s in self.scopes)
            message = f"This call needs the scopes {named}; ask an admin to add them to the agent."
        else:
            message = f"This call needs the scope {scope!r}{either}; ask an admin to add it to the agent."
        super().__init__(message, "missing_scope")


class HasAgentScopes(permissions.BasePermission):
    """Allow an authenticated agent whose token carries the scopes the view asks for this method."""

    def has_permission(self, request, view) -> bool:
        agent = request.auth if isinstance(request.auth, Agent) else None
        if agent is None:
            raise exceptions.NotAuthenticated("Send 'Authorization: Bearer <token>' with an agent token.")
        for scope in required_scopes(view, request.method):
            # "a|b": either one will do (access/check takes its own narrow scope or contacts:read).
            if not any(agent.has_scope(choice) for choice in scope.split("|")):
                raise MissingScope(*scope.split("|"))
        return True


def required_scopes(view, method: str) -> list[str]:
    declared = getattr(view, "required_scopes", {}) or {}
    if method == "HEAD":
        # Django answers HEAD with the GET handler: its status and length tell as much as GET would.
        method = "GET"
    scopes = declared.get(method, declared.get("*", []))
    return [scopes] if isinstance(scopes, str) else list(scopes)


def request_agent(request) -> Agent:
    return request.auth


# What ``POST intake`` needs besides ``contacts:write``: the scope of each optional part it writes.
INTAKE_WRITE_SCOPE = "contacts:write"
INTAKE_PART_SCOPES = (("note", "notes:write"), ("task", "tasks:write"), ("conversation", "conversations:write"))


def intake_scopes(intake) -> list[str]:
    """Scopes an intake body needs: contacts:write, plus the scope of each part it carries (note, task, ...)."""
    return [INTAKE_WRITE_SCOPE] + [scope for part, scope in INTAKE_PART_SCOPES if intake.get(part)]


def require_scopes(agent: Agent, scopes) -> None:
    """Raise MissingScope naming every scope ``agent`` lacks (a 403; ``scope`` is the first of them)."""
    missing = [scope for scope in scopes if not agent.has_scope(scope)]
    if missing:
        raise MissingScope(missing[0], also=tuple(missing[1:]))
