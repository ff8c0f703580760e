import pytest

from tests.automations.receiver import Receiver


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


@pytest.fixture
def fast_retries(settings):
    """Retries due at once, so a test drives the schedule by running the periodic task."""
    settings.CRM_WEBHOOK_RETRY_BASE_SECONDS = 0
    return settings
