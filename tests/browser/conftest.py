"""Browser tests: headless Chromium from Debian (/usr/bin/chromium) driven by Playwright's Python
package (never a browser download), as a staff user, against uvicorn and a real Celery worker on
the test database, with what `make run` loads (the built-in catalogue and the demo) and nothing
else registered by hand. Screenshots of the key pages go to var/screenshots/ (git-ignored)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from tests.executions.conftest import FAST_ENGINE, ProcessWorker, _purge_queue
from tests.reliability.stack import WebServer

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
PHOTOS = ROOT.parent / "shared" / "photos"
CHROMIUM = "/usr/bin/chromium"
STAFF_PASSWORD = "browser-staff-password"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--no-first-run"]


@pytest.fixture
def stack(transactional_db, settings):
    """What `make run` starts: the catalogue and the demo, a worker and the web server."""
    from executions.catalogue import builtin_components_register
    from executions.demo import demo_load
    from tests.factories import StaffFactory

    # Served as with DEBUG off: the collected static files (the editor's and the live panel's scripts).
    call_command("collectstatic", interactive=False, verbosity=0)
    for key, value in FAST_ENGINE.items():
        setattr(settings, key, value)
    staff = StaffFactory(username="browser-staff", is_superuser=True)
    staff.set_password(STAFF_PASSWORD)
    staff.save()
    builtin_components_register()
    demo_load(user=staff)
    _purge_queue()
    worker = ProcessWorker()
    web = WebServer(database=connection.settings_dict["NAME"])
    try:
        yield {"web": web, "staff": staff}
    finally:
        web.stop()
        worker.stop()
        _purge_queue()


@pytest.fixture
def browser():
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are plain
    # synchronous calls between browser steps.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def staff_page(stack, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs
    base = stack["web"].base
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", stack["staff"].username)
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")
    page.base = base
    yield page
    context.close()


def shot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
