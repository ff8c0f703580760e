"""Property-based run of every documented operation: no 5xx, and every response matches the schema.

Bounded: a few generated examples per operation and no deadline, so it stays a few seconds.
"""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.api.factories import ALL_SCOPES, make_agent, make_taxonomy

schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())
# The coverage phase adds dozens of boundary cases per operation; the documented examples plus a few
# generated ones keep the run inside the suite's time budget.
schema.config.phases.coverage.enabled = False


@pytest.fixture
def token(db, settings):
    settings.CRM_ACCESS_CHECK_RATE = "100000/min"
    make_taxonomy()
    _agent, raw = make_agent("fuzzer", scopes=ALL_SCOPES, rate_limit="100000/min")
    # The WSGI calls run inside the test transaction; closing "old" connections there would close it.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield raw
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_never_fails_and_matches_its_schema(case, token):
    case.call_and_validate(
        headers={"Authorization": f"Bearer {token}"},
        checks=[not_a_server_error, response_schema_conformance],
    )
