"""Failed staff sign-ins are throttled per username and per client IP, on the web UI and in admin alike."""

import importlib.util
import logging
from datetime import timedelta

import pytest
from django.test import Client
from freezegun import freeze_time

from tests.contacts.factories import UserFactory

pytestmark = pytest.mark.django_db

WEB_LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
LOGIN_URLS = [WEB_LOGIN, ADMIN_LOGIN]
PASSWORD = "pw-secret-123"
LOCKED = "Too many failed sign-in attempts"


@pytest.fixture
def sam(db):
    return UserFactory(username="sam", is_staff=True, password=PASSWORD)


def attempt(client, url, username, password="wrong-password"):
    return client.post(url, {"username": username, "password": password})


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def errors(response) -> list[str]:
    return list(response.context["form"].non_field_errors())


@pytest.mark.parametrize("url", LOGIN_URLS)
def test_fifth_failure_locks_the_username_and_then_the_right_password_is_refused(client, sam, url):
    for _ in range(4):
        response = attempt(client, url, "sam")
        assert response.status_code == 200 and LOCKED not in response.content.decode()
    fifth = attempt(client, url, "sam")
    assert fifth.status_code == 200
    assert errors(fifth) == ["Too many failed sign-in attempts. Try again in about 15 minutes."]

    locked = attempt(client, url, "sam", PASSWORD)
    assert locked.status_code == 200
    assert LOCKED in locked.content.decode()
    assert not signed_in(client)


@pytest.mark.parametrize(
    ("fail_url", "then_url"), [(WEB_LOGIN, ADMIN_LOGIN), (ADMIN_LOGIN, WEB_LOGIN)]
)
def test_one_lockout_covers_web_and_admin_sign_in(client, sam, fail_url, then_url):
    for _ in range(5):
        attempt(client, fail_url, "sam")
    response = attempt(client, then_url, "sam", PASSWORD)
    assert LOCKED in response.content.decode()
    assert not signed_in(client)


def test_locked_sign_in_checks_no_password(client, sam, monkeypatch):
    import django.contrib.auth.forms as auth_forms

    for _ in range(5):
        attempt(client, WEB_LOGIN, "sam")
    calls = []
    real_authenticate = auth_forms.authenticate
    monkeypatch.setattr(
        auth_forms, "authenticate", lambda *a, **kw: calls.append(kw) or real_authenticate(*a, **kw)
    )
    attempt(client, WEB_LOGIN, "sam", PASSWORD)
    attempt(client, ADMIN_LOGIN, "sam", PASSWORD)
    assert calls == []


def test_lockout_ends_after_the_window(client, sam):
    with freeze_time("2025-03-01 12:00:00") as clock:
        for _ in range(5):
            attempt(client, WEB_LOGIN, "sam")
        clock.tick(timedelta(minutes=14))
        still_locked = attempt(client, WEB_LOGIN, "sam", PASSWORD)
        assert errors(still_locked) == [
            "Too many failed sign-in attempts. Try again in about a minute."
        ]
        assert not signed_in(client)

        clock.tick(timedelta(minutes=1, seconds=1))
        response = attempt(client, WEB_LOGIN, "sam", PASSWORD)
        assert response.status_code == 302
        assert signed_in(client)


def test_failures_outside_the_window_do_not_add_up(client, sam, settings):
    # The window is the counter's cache TTL; only the in-process cache follows freezegun's clock.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with freeze_time("2025-03-01 12:00:00") as clock:
        for _ in range(4):
            attempt(client, WEB_LOGIN, "sam")
        clock.tick(timedelta(minutes=15, seconds=1))
        for _ in range(4):
            assert LOCKED not in attempt(client, WEB_LOGIN, "sam").content.decode()
        assert LOCKED in attempt(client, WEB_LOGIN, "sam").content.decode()  # 5 within this window


@pytest.mark.parametrize("url", LOGIN_URLS)
def test_success_clears_the_username_failure_count(sam, url):
    first = Client()
    for _ in range(4):
        attempt(first, url, "sam")
    assert attempt(first, url, "sam", PASSWORD).status_code == 302

    second = Client()
    for _ in range(4):
        assert LOCKED not in attempt(second, url, "sam").content.decode()
    assert LOCKED in attempt(second, url, "sam").content.decode()  # counting from zero again


def test_success_does_not_clear_the_ip_failure_count(sam, settings):
    settings.CRM_LOGIN_MAX_FAILURES_PER_IP = 6
    first = Client()
    for _ in range(4):
        attempt(first, WEB_LOGIN, "sam")
    assert attempt(first, WEB_LOGIN, "sam", PASSWORD).status_code == 302

    second = Client()
    assert LOCKED not in attempt(second, WEB_LOGIN, "someone-else").content.decode()
    # The IP's 6th failure: sam's success did not wipe the IP's count.
    assert LOCKED in attempt(second, WEB_LOGIN, "someone-else").content.decode()
    assert LOCKED in attempt(second, WEB_LOGIN, "sam", PASSWORD).content.decode()
    assert not signed_in(second)


@pytest.mark.parametrize("url", LOGIN_URLS)
def test_twenty_failures_from_one_ip_lock_every_username_from_it(sam, url):
    spraying = Client(REMOTE_ADDR="203.0.113.7")
    for n in range(19):
        assert LOCKED not in attempt(spraying, url, f"guess{n}").content.decode()
    assert LOCKED in attempt(spraying, url, "guess19").content.decode()

    assert LOCKED in attempt(spraying, url, "sam", PASSWORD).content.decode()
    assert not signed_in(spraying)
    elsewhere = Client(REMOTE_ADDR="198.51.100.9")
    assert attempt(elsewhere, url, "sam", PASSWORD).status_code == 302


@pytest.mark.parametrize("url", LOGIN_URLS)
def test_unknown_username_gets_the_same_answers_as_a_real_one(sam, url):
    answers = {}
    for n, username in enumerate(["sam", "nobody-here"]):
        client = Client(REMOTE_ADDR=f"192.0.2.{n + 1}")
        failures = [errors(attempt(client, url, username)) for _ in range(5)]
        after = attempt(client, url, username, PASSWORD)
        answers[username] = (failures, errors(after), after.status_code)
    assert answers["sam"] == answers["nobody-here"]
    assert answers["sam"][1] == ["Too many failed sign-in attempts. Try again in about 15 minutes."]


def test_username_is_counted_stripped_and_case_insensitive(client, sam):
    for typed in ["Sam", " SAM ", "sAm", "sam ", "SAM"]:
        attempt(client, WEB_LOGIN, typed)
    response = attempt(client, WEB_LOGIN, "sam", PASSWORD)
    assert LOCKED in response.content.decode()
    assert not signed_in(client)


def test_x_forwarded_for_is_ignored_without_a_trusted_proxy(sam, settings):
    settings.CRM_LOGIN_TRUSTED_PROXIES = 0
    settings.CRM_LOGIN_MAX_FAILURES_PER_IP = 3
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for n in range(3):
        response = attacker.post(
            WEB_LOGIN,
            {"username": f"guess{n}", "password": "nope"},
            HTTP_X_FORWARDED_FOR=f"10.0.0.{n}",
        )
    assert LOCKED in response.content.decode()
    # Another client naming the attacker's address in the header is not caught by its lock.
    other = Client(REMOTE_ADDR="198.51.100.9")
    response = other.post(
        WEB_LOGIN, {"username": "sam", "password": PASSWORD}, HTTP_X_FORWARDED_FOR="203.0.113.7"
    )
    assert response.status_code == 302


def fresh_settings():
    """Execute crm_hub/settings.py again under another name and return it (the environment as now)."""
    from crm_hub import settings as loaded

    spec = importlib.util.spec_from_file_location("crm_hub_settings_probe", loaded.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trusted_proxy_count_defaults_to_zero_unless_a_proxy_setting_is_on(monkeypatch):
    for name in (
        "CRM_LOGIN_TRUSTED_PROXIES",
        "CRM_BEHIND_TLS_PROXY",
        "FORMS_TRUST_X_FORWARDED_FOR",
    ):
        monkeypatch.delenv(name, raising=False)
    assert fresh_settings().CRM_LOGIN_TRUSTED_PROXIES == 0
    monkeypatch.setenv("CRM_BEHIND_TLS_PROXY", "1")
    assert fresh_settings().CRM_LOGIN_TRUSTED_PROXIES == 1
    monkeypatch.setenv("CRM_LOGIN_TRUSTED_PROXIES", "0")
    assert fresh_settings().CRM_LOGIN_TRUSTED_PROXIES == 0


def test_behind_a_trusted_proxy_the_address_it_saw_is_counted_not_the_forged_ones(sam, settings):
    settings.CRM_LOGIN_TRUSTED_PROXIES = 1
    settings.CRM_LOGIN_MAX_FAILURES_PER_IP = 3
    proxy = Client(REMOTE_ADDR="10.0.0.2")
    for n in range(3):
        # The client forges a fresh left-hand entry each time; the proxy appends what it saw.
        response = proxy.post(
            WEB_LOGIN,
            {"username": f"guess{n}", "password": "nope"},
            HTTP_X_FORWARDED_FOR=f"198.18.0.{n}, 203.0.113.7",
        )
    assert LOCKED in response.content.decode()
    # Other visitors behind the same proxy keep their own budget.
    response = proxy.post(
        WEB_LOGIN, {"username": "sam", "password": PASSWORD}, HTTP_X_FORWARDED_FOR="198.51.100.9"
    )
    assert response.status_code == 302


def test_ipv6_addresses_are_counted_per_64_block(sam, settings):
    settings.CRM_LOGIN_MAX_FAILURES_PER_IP = 3
    for n in range(1, 4):
        response = attempt(Client(REMOTE_ADDR=f"2001:db8:0:1::{n}"), WEB_LOGIN, f"guess{n}")
    assert LOCKED in response.content.decode()
    assert (
        attempt(Client(REMOTE_ADDR="2001:db8:0:2::1"), WEB_LOGIN, "sam", PASSWORD).status_code
        == 302
    )


def test_limits_of_zero_turn_the_throttle_off(client, sam, settings):
    settings.CRM_LOGIN_MAX_FAILURES_PER_USER = 0
    settings.CRM_LOGIN_MAX_FAILURES_PER_IP = 0
    for _ in range(30):
        assert LOCKED not in attempt(client, WEB_LOGIN, "sam").content.decode()
    assert attempt(client, WEB_LOGIN, "sam", PASSWORD).status_code == 302


def test_right_password_of_a_non_staff_account_is_not_counted_as_a_failure(client):
    UserFactory(username="customer", is_staff=False, password=PASSWORD)
    for _ in range(6):
        response = attempt(client, WEB_LOGIN, "customer", PASSWORD)
        assert b"no access to the CRM" in response.content


def test_lockout_is_logged_as_a_warning(client, sam, caplog):
    with caplog.at_level(logging.WARNING, logger="crm_hub.login_throttle"):
        for _ in range(5):
            attempt(client, WEB_LOGIN, "Sam")
    [record] = [r for r in caplog.records if r.name == "crm_hub.login_throttle"]
    assert record.levelno == logging.WARNING
    assert "'sam'" in record.getMessage() and "127.0.0.1" in record.getMessage()
