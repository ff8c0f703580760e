"""The published schema says what the API does, in a form strict OAS 3.0 validators read the same way.

openapi-core is not installed here, so ``OAS30`` below is jsonschema's Draft 4 with the one keyword
openapi-schema-validator (openapi-core's validator) changes for nulls: ``type`` lets ``None`` through
only when ``nullable: true`` sits in the same Schema Object (OAS 3.0.3). Everything else openapi-core
adds (readOnly, discriminator, formats) does not bear on nulls.
"""

import pytest
from django.urls import resolve
from jsonschema import Draft4Validator, ValidationError, validators
from jsonschema.exceptions import best_match

from contacts.api.serializers import StrictSerializer
from conversations.models import Conversation, Message
from crm_hub.api.schema import STRICT_INPUT_DESCRIPTION

pytestmark = pytest.mark.django_db


def _oas30_type(validator, types, instance, schema):
    if instance is None and schema.get("nullable") is True:
        return
    if not validator.is_type(instance, types):
        yield ValidationError(f"{instance!r} is not of type {types!r}")


OAS30 = validators.extend(Draft4Validator, {"type": _oas30_type})


@pytest.fixture
def schema(client):
    response = client.get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def errors(document: dict, subschema: dict, instance) -> list[str]:
    # The root holds the components so "#/components/schemas/..." resolves; in Draft 4 $ref wins over siblings.
    root = {"components": document["components"], **subschema}
    return [error.message for error in OAS30(root).iter_errors(instance)]


def assert_valid(document: dict, subschema: dict, instance) -> None:
    root = {"components": document["components"], **subschema}
    error = best_match(OAS30(root).iter_errors(instance))
    assert error is None, f"{error.message} at {list(error.absolute_path)}"


def response_schema(document: dict, path: str, method: str, status: int) -> dict:
    return document["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable_properties(document: dict):
    for name, component in document["components"]["schemas"].items():
        for prop, spec in component.get("properties", {}).items():
            if spec.get("nullable") is True:
                yield name, prop, spec


# --- 1. nullable references --------------------------------------------------------------------


def test_the_validator_is_strict_about_nullable_beside_allof(schema):
    # What drf-spectacular emitted: without this failing, the tests below would prove nothing.
    old_form = {"allOf": [ref("OwnerOutput")], "nullable": True}
    assert errors(schema, old_form, None)
    assert not errors(schema, {"type": "string", "nullable": True}, None)


def test_no_nullable_property_hides_its_null_behind_allof(schema):
    offenders = [
        f"{name}.{prop}" for name, prop, spec in nullable_properties(schema) if "allOf" in spec and "type" not in spec
    ]
    assert offenders == []


@pytest.mark.parametrize("name, prop, target", [
    ("ContactOutput", "owner", "OwnerOutput"),
    ("ContactDetailOutput", "owner", "OwnerOutput"),
    ("ContactListItemOutput", "owner", "OwnerOutput"),
    ("BatchResultOutput", "contact", "ContactOutput"),
    ("EndResponse", "contact", "ContactBrief"),
    ("EndResponse", "completeness", "CompletenessOutput"),
    ("IntakeInputRequest", "task", "IntakeTaskInputRequest"),
    ("IntakeInputRequest", "conversation", "IntakeConversationInputRequest"),
])
def test_reported_nullable_references_take_null_and_still_check_the_object(schema, name, prop, target):
    spec = schema["components"]["schemas"][name]["properties"][prop]
    assert spec["oneOf"][0] == ref(target)
    assert spec["oneOf"][1] == {"type": "object", "nullable": True, "enum": [None]}
    assert not errors(schema, spec, None)
    assert errors(schema, spec, "not an object")
    # An object answers to the referenced schema alone: the null branch neither admits nor doubles it.
    for instance in ({}, {"id": "x"}):
        assert bool(errors(schema, spec, instance)) == bool(errors(schema, ref(target), instance))


def test_every_nullable_property_accepts_null(schema):
    refused = {f"{name}.{prop}": errors(schema, spec, None) for name, prop, spec in nullable_properties(schema)}
    assert {key: value for key, value in refused.items() if value} == {}


def test_real_null_owner_and_contact_responses_match_the_schema(schema, full_bot, taxonomy):
    created = full_bot.post("contacts/upsert", {"name": "Nobody Owns Me", "phone": "+15615550177"})
    assert created.status_code == 201, created.content
    contact_id = created.json()["contact"]["id"]
    assert created.json()["contact"]["owner"] is None
    assert_valid(schema, response_schema(schema, "/api/v1/contacts/upsert", "post", 201), created.json())

    detail = full_bot.get(f"contacts/{contact_id}")
    assert detail.status_code == 200 and detail.json()["owner"] is None
    assert_valid(schema, response_schema(schema, "/api/v1/contacts/{id}", "get", 200), detail.json())

    listing = full_bot.get("contacts")
    assert listing.status_code == 200 and listing.json()["results"][0]["owner"] is None
    assert_valid(schema, response_schema(schema, "/api/v1/contacts", "get", 200), listing.json())

    batch = full_bot.post("contacts/batch-upsert", {"contacts": [{"name": "Bad", "email": "nope"}]})
    assert batch.status_code == 200 and batch.json()["results"][0]["contact"] is None
    assert_valid(schema, response_schema(schema, "/api/v1/contacts/batch-upsert", "post", 200), batch.json())


def test_real_end_without_intake_matches_the_schema(schema, full_bot):
    started = full_bot.post("conversations", {"external_id": "chat-null", "channel": "sms",
                                              "messages": [{"role": "visitor", "content": "Hi"}]})
    assert started.status_code == 201, started.content
    conversation_id = started.json()["conversation"]["id"]
    ended = full_bot.post(f"conversations/{conversation_id}/end", {})
    assert ended.status_code == 200, ended.content
    assert ended.json()["contact"] is None and ended.json()["completeness"] is None
    assert_valid(schema, response_schema(schema, "/api/v1/conversations/{id}/end", "post", 200), ended.json())


# --- 2. StrictSerializer's docstring -----------------------------------------------------------


def test_no_component_shows_strict_serializers_internal_docstring(schema):
    internal = StrictSerializer.__doc__.split("\n", 1)[0].strip()
    leaked = [name for name, c in schema["components"]["schemas"].items() if internal in c.get("description", "")]
    assert leaked == []
    text = "\n".join(c.get("description", "") for c in schema["components"]["schemas"].values())
    assert "clean(data)" not in text and "deep-copies" not in text


def test_strict_request_bodies_say_unknown_keys_are_refused(schema, bot, taxonomy):
    components = schema["components"]["schemas"]
    for name in ("IntakeInputRequest", "IntakeTaskInputRequest", "NoteInputRequest", "BatchUpsertInputRequest"):
        assert components[name]["description"] == STRICT_INPUT_DESCRIPTION
    # The description is a promise: hold the server to it.
    response = bot.post("contacts/upsert", {"name": "Ana", "nickname": "An"})
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["code"] == "unknown_field" and error["field"] == "nickname" and "name" in error["allowed"]


def test_request_bodies_forbid_additional_properties_but_custom_stays_open(schema):
    components = schema["components"]["schemas"]
    requests = {name: c for name, c in components.items() if name.endswith("Request") and c.get("type") == "object"}
    assert len(requests) >= 15
    assert [name for name, c in requests.items() if c.get("additionalProperties") is not False] == []
    # Custom values are keyed by the CRM's own field keys: that object takes any key.
    assert components["ContactFieldsInputRequest"]["properties"]["custom"]["additionalProperties"] == {}
    assert all(c.get("additionalProperties") is not False for name, c in components.items() if not name.endswith("Request"))


# --- 3. bounds on id and page_size -------------------------------------------------------------


def test_integer_id_path_parameters_start_at_1(schema):
    ids = [
        (path, method, parameter["schema"])
        for path, item in schema["paths"].items() for method, operation in item.items()
        for parameter in operation.get("parameters", []) if parameter["in"] == "path" and parameter["name"] == "id"
    ]
    assert len(ids) >= 11
    assert [(path, method) for path, method, s in ids if s != {"type": "integer", "minimum": 1}] == []


# Read from the code: ContactCursorPagination and ConversationCursorPagination.
PAGE_SIZE_BOUNDS = {"/api/v1/contacts": 200, "/api/v1/conversations": 100}


def test_page_size_is_bounded_by_each_lists_own_paginator(schema):
    documented = {
        path: parameter
        for path, item in schema["paths"].items() for operation in item.values()
        for parameter in operation.get("parameters", []) if parameter["name"] == "page_size"
    }
    assert set(documented) == set(PAGE_SIZE_BOUNDS)
    for path, maximum in PAGE_SIZE_BOUNDS.items():
        assert documented[path]["schema"] == {"type": "integer", "minimum": 1, "maximum": maximum}
        paginator = resolve(path).func.cls.pagination_class
        assert paginator.max_page_size == maximum
        assert f"{paginator.page_size} by default" in documented[path]["description"]


# --- 4. enums in the conversation outputs ------------------------------------------------------


@pytest.mark.parametrize("component, prop, values", [
    ("Conversation", "channel", Conversation.Channel.values),
    ("Conversation", "status", Conversation.Status.values),
    ("ConversationDetail", "channel", Conversation.Channel.values),
    ("ConversationDetail", "status", Conversation.Status.values),
    ("ConversationOutput", "channel", Conversation.Channel.values),
    ("ConversationOutput", "status", Conversation.Status.values),
    ("Message", "role", Message.Role.values),
])
def test_conversation_outputs_document_their_fixed_choices(schema, component, prop, values):
    spec = schema["components"]["schemas"][component]["properties"][prop]
    for value in values:
        assert not errors(schema, spec, value)
    assert errors(schema, spec, "not-a-choice")
    assert spec.get("description")


def test_a_real_conversation_detail_matches_the_enums(schema, full_bot):
    started = full_bot.post("conversations", {"external_id": "chat-enum", "channel": "whatsapp",
                                              "messages": [{"role": "user", "content": "Hi"}]})
    assert started.status_code == 201, started.content
    detail = full_bot.get(f"conversations/{started.json()['conversation']['id']}")
    assert detail.status_code == 200
    body = detail.json()
    assert (body["channel"], body["status"], body["messages"][0]["role"]) == ("whatsapp", "open", "visitor")
    assert_valid(schema, response_schema(schema, "/api/v1/conversations/{id}", "get", 200), body)


def test_every_write_documents_411_and_every_read_406(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in ("post", "put", "patch"):
                assert "411" in operation["responses"], (path, method)
            if method == "get":
                assert "406" in operation["responses"], (path, method)


def test_write_examples_carry_the_contact_id_every_answer_has(schema):
    for path in ("/api/v1/contacts/upsert", "/api/v1/intake"):
        content = schema["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]
        for example in content["examples"].values():
            assert "contact_id" in example["value"], (path, example)
