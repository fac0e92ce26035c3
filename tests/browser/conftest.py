"""Browser tests of the dashboard: Debian's chromium, driven by Playwright (no browser
download). Without ``/usr/bin/chromium`` the tests skip, except under ``CI=true``, where
``.ci/install-debian-tools`` installs it and they must run.

Screenshots are test artifacts, written to ``$MESH_TEST_ARTIFACTS/dashboard/`` (default
``build/test-artifacts/dashboard/``, kept after the run)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tools import require_binary

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go."""
    base = Path(os.environ.get("MESH_TEST_ARTIFACTS") or ROOT / "build" / "test-artifacts")
    directory = base / "dashboard"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium for the module's tests."""
    binary = require_binary(CHROMIUM if CHROMIUM.exists() else None, "chromium", "CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(binary), args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class PageWithConsole:
    """A page and what its console said: tests end by asserting it said no error."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def leave(self) -> None:
        """Leave the dashboard (before the cluster behind it stops: a page left polling a
        stopped coordinator would log refused connections)."""
        self.page.goto("about:blank")

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, for fixtures to see how the test went."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[PageWithConsole]:
    """A fresh 1280x800 page; fails the test if its console logged an error.

    Not after a test that failed already: its page was left polling a cluster that
    stopped, and the refused connections would only repeat the failure."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    watched = PageWithConsole(context.new_page())
    try:
        yield watched
    finally:
        context.close()
    call = getattr(request.node, "report_call", None)
    if call is None or call.passed:
        assert watched.errors == []
