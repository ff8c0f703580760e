"""Browser tests: pytest-playwright driving Debian's Chromium (never a downloaded browser).

They skip only when no Chromium is installed; CI installs it and fails on any skip
(CRM_FAIL_ON_SKIP=1). Screenshots go to $CRM_ARTIFACTS_DIR (default
test-artifacts/screenshots); the folder is printed at the end of the run.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

# live_server + Playwright's sync API run ORM calls from a thread with an event loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM = next((p for p in CHROMIUM_CANDIDATES if Path(p).exists()), shutil.which("chromium") or "")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS_DIR = Path(os.environ.get("CRM_ARTIFACTS_DIR", "test-artifacts/screenshots")).resolve()


def pytest_collection_modifyitems(config, items):
    if CHROMIUM:
        return
    skip = pytest.mark.skip(reason="Chromium is not installed (apt-get install chromium)")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


_used = []


def pytest_terminal_summary(terminalreporter):
    if _used:
        terminalreporter.write_line(f"Browser test screenshots: {ARTIFACTS_DIR}")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS, "headless": True}


@pytest.fixture(scope="session")
def screenshots_dir():
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    _used.append(True)
    print(f"\nScreenshots: {ARTIFACTS_DIR}")
    return ARTIFACTS_DIR


@pytest.fixture
def shoot(page, screenshots_dir, request):
    """Save a full-page screenshot named after the test and the step."""
    prefix = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name.replace("test_", "", 1)).strip("-")

    def take(step: str, *, target=None):
        path = screenshots_dir / f"{prefix}-{step}.png"
        (target or page).screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def browser_errors(page):
    """Collect dialogs (dismissed) and console errors the page produces."""
    found = {"dialogs": [], "console": [], "page": []}

    def on_dialog(dialog):
        found["dialogs"].append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda msg: found["console"].append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: found["page"].append(str(exc)))
    return found
