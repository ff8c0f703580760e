"""Fixtures of the forms tests, including the browser for the Playwright test (tests/forms_app only)."""

import pytest
from django.core.cache import cache

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    # The rate limit counts in the cache; each test starts with a clean slate.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "headless": True, "args": CHROMIUM_ARGS}


@pytest.fixture
def lead_setup(db):
    """Tags, a pipeline stage and a custom field a lead form uses."""
    from tests.contacts.factories import (
        CustomFieldFactory,
        PipelineFactory,
        StageFactory,
        TagFactory,
    )

    pipeline = PipelineFactory(name="Sales")
    StageFactory(pipeline=pipeline, name="Qualified", position=2)
    return {
        "tags": [TagFactory(name="Web lead"), TagFactory(name="Newsletter")],
        "stage": StageFactory(pipeline=pipeline, name="New lead", position=1),
        "budget": CustomFieldFactory(key="budget", label="Budget", type="number", allow_for_ai=False),
    }
