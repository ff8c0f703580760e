"""The SSRF guard: only http(s), no private/loopback/link-local targets, no redirects followed."""

import pytest

from automations import webhooks
from automations.models import WebhookDelivery
from automations.ssrf import UnsafeURL, check_url
from crm_hub.errors import InputRejected
from tests.automations.receiver import Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_allow_list(settings):
    settings.CRM_WEBHOOK_ALLOWED_HOSTS = []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8060/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://192.168.1.10/",
        "http://0.0.0.0/",
        "https://100.64.0.1/",
        "ftp://example.com/file",
        "file:///etc/passwd",
        "http:///nohost",
        # Read as host 8.8.8.8 by urlsplit but sent to 127.0.0.1 by the HTTP client.
        "http://127.0.0.1:8171\\@8.8.8.8/",
        "http://user:pass@8.8.8.8@127.0.0.1/",
        "http://8.8.8.8 @127.0.0.1/",
        # IPv6 forms that wrap a private IPv4 address: 6to4 of 169.254.169.254 and of 10.0.0.1, Teredo.
        "http://[2002:a9fe:a9fe::]/",
        "http://[2002:0a00:0001::1]/",
        "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",
    ],
)
def test_unsafe_urls_are_refused(no_allow_list, url):
    with pytest.raises(UnsafeURL):
        check_url(url)
    with pytest.raises(InputRejected) as caught:
        webhooks.create_endpoint(url=url, events=["contact.created"])
    assert caught.value.as_list()[0]["field"] == "url"


def test_public_address_is_allowed(no_allow_list):
    check_url("https://93.184.215.14/hook")


def test_allow_list_names_hosts_and_networks(settings):
    settings.CRM_WEBHOOK_ALLOWED_HOSTS = ["localhost", "10.0.0.0/8"]
    check_url("http://localhost:8060/")
    check_url("http://10.0.0.1/")
    with pytest.raises(UnsafeURL):
        check_url("http://169.254.169.254/")


def test_delivery_to_loopback_is_refused_at_send_time(receiver, settings):
    endpoint, _ = webhooks.create_endpoint(url=receiver.url(), events=["contact.created"])
    settings.CRM_WEBHOOK_ALLOWED_HOSTS = []  # e.g. the allow-list changed after the endpoint was saved
    webhooks.emit_event(event="contact.created", payload={"x": 1}, endpoints=[endpoint])

    webhooks.deliver_due()

    assert receiver.requests == []
    attempt = WebhookDelivery.objects.get().attempt_log.get()
    assert attempt.status_code is None and attempt.error.startswith("Refused:") and "127.0.0.1" in attempt.error


def test_redirect_to_a_private_address_is_not_followed(settings):
    with Receiver() as internal, Receiver(default=302) as bouncer:
        bouncer.redirect_to = internal.url(path="/admin")
        settings.CRM_WEBHOOK_ALLOWED_HOSTS = ["localhost"]  # the bouncer's name only, not 127.0.0.1
        endpoint, _ = webhooks.create_endpoint(url=bouncer.url(host="localhost"), events=["contact.created"])
        webhooks.emit_event(event="contact.created", payload={"x": 1}, endpoints=[endpoint])

        webhooks.deliver_due()

        assert len(bouncer.requests) == 1
        assert internal.requests == []
    delivery = WebhookDelivery.objects.get()
    attempt = delivery.attempt_log.get()
    assert attempt.status_code == 302 and "not followed" in attempt.error
    assert delivery.status == "pending" and delivery.attempts == 1
