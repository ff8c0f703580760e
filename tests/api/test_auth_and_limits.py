"""Tokens, scopes, throttling, the access check and body limits."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings

from contacts.models import Contact
from crm_hub.services import revoke_agent_token
from tests.api.factories import AgentClient, make_agent

pytestmark = pytest.mark.django_db


def error(response):
    return response.json()["errors"][0]


@pytest.mark.parametrize("header", [None, "Bearer nope", "Token abc", "Bearer"])
def test_missing_or_bad_token_is_401(db, header):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = Client().post("/api/v1/contacts/upsert", data="{}", content_type="application/json", **extra)
    assert response.status_code == 401
    assert error(response)["code"] == "not_authenticated"


def test_revoked_token_is_401(db):
    agent, token = make_agent("gone")
    revoke_agent_token(agent=agent)
    assert AgentClient(token).get("contacts").status_code == 401


SCOPED_CALLS = [
    ("get", "contacts", "contacts:read"),
    ("get", "contacts/{id}", "contacts:read"),
    ("post", "contacts/upsert", "contacts:write"),
    ("post", "contacts/batch-upsert", "contacts:write"),
    ("patch", "contacts/{id}", "contacts:write"),
    ("post", "contacts/{id}/notes", "notes:write"),
    ("post", "contacts/{id}/tasks", "tasks:write"),
    ("post", "contacts/{id}/files", "files:write"),
    ("post", "contacts/{id}/tags", "contacts:write"),
    ("delete", "contacts/{id}/tags/Lead", "contacts:write"),
    ("put", "contacts/{id}/stage", "contacts:write"),
    ("post", "intake", "contacts:write"),
    ("post", "access/check", "access:check"),
]


@pytest.mark.parametrize(("method", "path", "scope"), SCOPED_CALLS)
def test_each_endpoint_names_its_missing_scope(db, method, path, scope):
    contact = Contact.objects.create(name="X", source="api")
    _agent, token = make_agent("no-scopes", scopes=[])
    response = getattr(AgentClient(token), method)(path.format(id=contact.pk))
    assert response.status_code == 403
    assert error(response)["code"] == "missing_scope"
    assert error(response)["scope"] == scope


def test_throttle_answers_429_with_retry_after(db):
    _agent, token = make_agent("slow", rate_limit="2/min")
    client = AgentClient(token)
    assert [client.get("contacts").status_code for _ in range(3)] == [200, 200, 429]
    throttled = client.get("contacts")
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    assert error(throttled)["code"] == "throttled"
    # Another token has its own budget.
    _other, other_token = make_agent("other", rate_limit="2/min")
    assert AgentClient(other_token).get("contacts").status_code == 200


def test_access_check_answers_allowed_contact_and_reason_only(bot, taxonomy):
    contact_id = bot.post("contacts/upsert", {"name": "V", "phone": "+15615550180", "email": "v@example.com", "tags": ["VIP"]}).json()["contact"]["id"]
    bot.post("contacts/upsert", {"name": "L", "phone": "+15615550181"})
    assert bot.post("access/check", {"phone": "(561) 555-0180"}).json() == {"allowed": True, "contact_id": contact_id, "reason": "contact_found"}
    assert bot.post("access/check", {"email": "V@EXAMPLE.COM", "tag": "vip"}).json()["allowed"] is True
    assert bot.post("access/check", {"phone": "5615550181", "tag": "VIP"}).json() == {"allowed": False, "contact_id": None, "reason": "tag_missing"}
    assert bot.post("access/check", {"phone": "+15615550199"}).json() == {"allowed": False, "contact_id": None, "reason": "no_contact"}
    assert error(bot.post("access/check", {"phone": "12"}))["code"] == "invalid_phone"
    assert error(bot.post("access/check", {}))["code"] == "required"
    unknown = error(bot.post("access/check", {"phone": "5615550181", "tag": "VIPP"}))
    assert (unknown["field"], unknown["code"], "VIP" in unknown["allowed"]) == ("tag", "unknown_tag", True)


def test_access_check_is_one_query_after_the_token_lookup(bot, taxonomy, django_assert_num_queries):
    bot.post("contacts/upsert", {"name": "V", "phone": "+15615550180", "tags": ["VIP"]})
    with django_assert_num_queries(2):
        bot.post("access/check", {"phone": "+15615550180", "tag": "VIP"})


def test_access_check_has_its_own_tight_throttle(bot, settings):
    settings.CRM_ACCESS_CHECK_RATE = "3/min"
    answers = [bot.post("access/check", {"phone": f"+1561555{i:04d}"}).status_code for i in range(4)]
    assert answers == [200, 200, 200, 429]
    # Other endpoints keep the agent's general budget.
    assert bot.get("contacts").status_code == 200


def test_oversized_json_body_is_413_never_500(bot, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = bot.post("contacts/upsert", {"name": "x" * 2000})
    assert response.status_code == 413
    assert error(response)["code"] == "request_too_large"
    keyed = bot.post("contacts/upsert", {"name": "x" * 2000}, key="big")
    assert keyed.status_code == 413


def test_oversized_upload_is_413(bot, settings):
    settings.CRM_MAX_UPLOAD_BYTES = 1000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    contact = Contact.objects.create(name="X", source="api")
    upload = SimpleUploadedFile("big.pdf", b"x" * 5000, content_type="application/pdf")
    response = bot.client.post(f"/api/v1/contacts/{contact.pk}/files", {"file": upload}, **bot.headers)
    assert response.status_code == 413


def test_upload_over_the_file_limit_but_under_the_body_limit_is_413_too(bot, settings):
    settings.CRM_MAX_UPLOAD_BYTES = 1000
    contact = Contact.objects.create(name="X", source="api")
    upload = SimpleUploadedFile("mid.pdf", b"%PDF-1.4\n" + b"x" * 1500, content_type="application/pdf")
    response = bot.client.post(f"/api/v1/contacts/{contact.pk}/files", {"file": upload}, **bot.headers)
    assert response.status_code == 413
    assert response.json()["errors"] == [{"field": "file", "code": "file_too_large",
                                          "message": "The file is 1,509 bytes; the limit is 1,000 bytes."}]
    # Too large and of the wrong kind: still 413 (an oversized upload always is), naming both.
    fake = SimpleUploadedFile("fake.pdf", b"x" * 1500, content_type="application/pdf")
    response = bot.client.post(f"/api/v1/contacts/{contact.pk}/files", {"file": fake}, **bot.headers)
    assert response.status_code == 413
    assert [e["code"] for e in response.json()["errors"]] == ["file_too_large", "unsupported_file_type"]


def test_docs_and_schema_are_served_without_a_cdn(client):
    schema = client.get("/api/v1/schema/")
    assert schema.status_code == 200
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    page = docs.content.decode()
    assert "swagger-ui" in page and "cdn.jsdelivr" not in page and "unpkg" not in page


def test_every_operation_is_documented_with_examples_and_error_envelope(client):
    import yaml

    schema = yaml.safe_load(client.get("/api/v1/schema/").content)
    operations = [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items()]
    contract = {
        ("/api/v1/contacts/upsert", "post"), ("/api/v1/contacts/batch-upsert", "post"), ("/api/v1/contacts", "get"),
        ("/api/v1/contacts/{id}", "get"), ("/api/v1/contacts/{id}", "patch"), ("/api/v1/contacts/{id}/notes", "post"),
        ("/api/v1/contacts/{id}/tasks", "post"), ("/api/v1/contacts/{id}/files", "post"),
        ("/api/v1/contacts/{id}/tags", "post"), ("/api/v1/contacts/{id}/tags/{tag}", "delete"),
        ("/api/v1/contacts/{id}/stage", "put"), ("/api/v1/intake", "post"), ("/api/v1/access/check", "post"),
        ("/api/v1/conversations", "post"), ("/api/v1/conversations", "get"), ("/api/v1/conversations/{id}", "get"),
        ("/api/v1/conversations/{id}/messages", "post"), ("/api/v1/conversations/{id}/end", "post"),
    }
    assert contract <= {(path, method) for path, method, _ in operations}
    for path, method, op in operations:
        assert op.get("summary"), (path, method)
        has_example = any("examples" in body for body in op.get("requestBody", {}).get("content", {}).values()) or any(
            "examples" in media for status, response in op["responses"].items() if status.startswith("2")
            for media in response.get("content", {}).values()
        )
        assert has_example, (path, method)
        for status in ("400", "401", "403", "429"):
            assert status in op["responses"], (path, method, status)
        if method in ("post", "put", "patch"):
            assert any(p["name"] == "Idempotency-Key" for p in op.get("parameters", [])), (path, method)
            # Middleware and parsers answer these on every write, conversations included.
            for status in ("413", "415", "422"):
                assert status in op["responses"], (path, method, status)


@pytest.mark.parametrize("key", [None, "multipart-key"])
def test_form_fields_over_the_limit_inside_an_allowed_upload_are_413(bot, settings, key):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    settings.CRM_MAX_UPLOAD_BYTES = 100_000
    contact = Contact.objects.create(name="X", source="api")
    upload = SimpleUploadedFile("a.txt", b"hi", content_type="text/plain")
    extra = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    response = bot.client.post(
        f"/api/v1/contacts/{contact.pk}/files", {"file": upload, "comment": "y" * 500}, **bot.headers, **extra
    )
    assert response.status_code == 413
    assert error(response)["code"] == "request_too_large"


def test_throttle_window_slides_and_keeps_two_counters_whatever_the_rate(db, monkeypatch):
    """The previous minute still counts for the part of it that overlaps the last 60 seconds."""
    from django.core.cache import cache

    from crm_hub.api import throttling

    agent, _token = make_agent("busy", rate_limit="10/min")
    request = type("Request", (), {"auth": agent})()
    clock = [60 * 1000 + 40.0]  # 40 s into a window
    monkeypatch.setattr(throttling.time, "time", lambda: clock[0])
    throttle = throttling.AgentRateThrottle()
    assert [throttle.allow_request(request, None) for _ in range(11)] == [True] * 10 + [False]
    assert 19.9 < throttle.wait() <= 20.01  # the next window starts in 20 s
    clock[0] = 60 * 1001 + 6.0  # 6 s into the next one: 10 * 0.9 = 9 of the 10 still count
    assert [throttle.allow_request(request, None) for _ in range(2)] == [True, False]
    assert 0 < throttle.wait() <= 54.01
    clock[0] = 60 * 1001 + 30.0  # halfway: 10 * 0.5 + 1 = 6
    assert [throttle.allow_request(request, None) for _ in range(5)] == [True] * 4 + [False]
    stored = cache.get_many([f"throttle_agent_{agent.pk}_1000", f"throttle_agent_{agent.pk}_1001"])
    assert stored == {f"throttle_agent_{agent.pk}_1000": 10, f"throttle_agent_{agent.pk}_1001": 5}


@override_settings(DEBUG=False)
def test_an_unknown_api_path_answers_the_json_error_envelope(bot):
    response = bot.get("conversations/not-a-number/messages")
    assert response.status_code == 404
    assert response.json() == {
        "errors": [{"field": None, "code": "not_found", "message": "No such endpoint; the endpoints are listed at /api/v1/docs/."}]
    }


def test_a_server_error_under_the_api_is_json_too(rf):
    from contacts.views import error_500

    response = error_500(rf.post("/api/v1/intake"))
    assert response.status_code == 500
    assert json.loads(response.content)["errors"][0]["code"] == "server_error"


def test_deeply_nested_json_is_a_400_parse_error_never_500(bot):
    body = '{"name": "T", "custom": ' + "[" * 5000 + "]" * 5000 + "}"
    for key in (None, "nested"):
        headers = dict(bot.headers, **({"HTTP_IDEMPOTENCY_KEY": key} if key else {}))
        response = bot.client.post("/api/v1/contacts/upsert", data=body, content_type="application/json", **headers)
        assert response.status_code == 400, response.content
        assert error(response)["code"] == "parse_error"
    assert not Contact.objects.exists()


def test_json_sent_as_form_data_is_told_to_send_json(bot):
    # curl -d '{...}' without -H 'Content-Type: application/json'.
    body = '{"name": "Curl Person", "phone": "+1 303 555 0950"}'
    response = bot.client.post(
        "/api/v1/contacts/upsert", data=body, content_type="application/x-www-form-urlencoded", **bot.headers
    )
    assert response.status_code == 415
    assert "Content-Type: application/json" in error(response)["message"]
    assert not Contact.objects.exists()
    # A form body cannot carry the nested objects (custom, task) and was read as empty: JSON only.
    form = bot.client.post(
        "/api/v1/contacts/upsert", data='name=Form+Person&custom={"budget":"5"}',
        content_type="application/x-www-form-urlencoded", **bot.headers,
    )
    assert form.status_code == 415 and "'Content-Type: application/json'" in error(form)["message"]
    multipart = bot.client.post("/api/v1/contacts/upsert", {"name": "Form Person", "custom": '{"budget": "5"}'},
                                **bot.headers)
    assert multipart.status_code == 415
    assert not Contact.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path, body", [
    ("contacts/upsert", '{"name": "x", "bogus\\ud800": 1}'),
    ("contacts/upsert", '{"name": "x", "custom": {"k\\ud800": "1"}}'),
    ("intake", '{"contact": {"name": "x"}, "k\\u0000": 1}'),
    ("contacts/batch-upsert", '{"contacts": [{"name": "Half Written", "phone": "+1 404 660 0001"}, {"name": "x", "k\\ud800": 1}]}'),
])
def test_an_unstorable_object_key_is_a_400_at_its_object_and_nothing_is_written(bot, path, body):
    # A lone surrogate in a key used to reach the error message, which could not be encoded: a 500
    # after the batch's good items were already committed.
    response = bot.client.post(f"/api/v1/{path}", data=body, content_type="application/json", **bot.headers)
    assert response.status_code == 400, response.content
    (item,) = response.json()["errors"]
    assert item["code"] in ("surrogate_characters_not_allowed", "null_characters_not_allowed")
    assert item["field"] in (None, "custom", "contacts.1")
    assert not Contact.objects.exists()


def test_an_answer_holding_a_lone_surrogate_is_escaped_not_a_500():
    from crm_hub.api.renderers import JSONRenderer

    assert JSONRenderer().render({"name": "a\ud800b"}) == b'{"name":"a\\ud800b"}'


def test_a_chunked_body_without_content_length_is_411_not_read_as_empty(bot):
    response = bot.client.generic(
        "POST", "/api/v1/contacts/upsert", b"", content_type="application/json",
        HTTP_TRANSFER_ENCODING="chunked", **bot.headers,
    )
    assert response.status_code == 411
    assert error(response)["code"] == "length_required"
    assert not Contact.objects.exists()


def test_an_answer_lists_at_most_100_errors(bot):
    custom = {f"k{i}": 1 for i in range(5000)}
    response = bot.post("contacts/upsert", {"name": "x", "custom": custom})
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert len(errors) == 101 and errors[-1]["code"] == "too_many_errors"
    assert "4,900 more errors" in errors[-1]["message"]
    assert len(response.content) < 200_000


def test_a_batch_lists_at_most_ten_errors_an_item(bot):
    items = [{"name": "x", **{f"k{i}": 1 for i in range(150)}} for _ in range(100)]
    response = bot.post("contacts/batch-upsert", {"contacts": items})
    assert response.status_code == 200
    for result in response.json()["results"]:
        assert len(result["errors"]) == 11 and result["errors"][-1]["code"] == "too_many_errors"
    assert len(response.content) < 600_000


def test_a_body_without_content_type_is_told_so(bot):
    response = bot.client.generic("POST", "/api/v1/contacts/upsert", b'{"name": "x"}', content_type="", **bot.headers)
    assert response.status_code == 415
    message = error(response)["message"]
    assert message.startswith("The request has no Content-Type header.") and "text/plain" not in message
