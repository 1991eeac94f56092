"""A real headless browser for the tests: Debian's chromium (installed by `make sysdeps`) driven
by Playwright with ``executable_path`` (Playwright's own browser download cannot work here).

``open_browser()`` skips on a developer's machine without chromium but fails under CI, where the
set-up installs it. ``artifact_dir()`` is where tests keep their screenshots
(``$VAD_TEST_ARTIFACTS``, default ``build/test-artifacts``)."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.videos import skip_or_fail

REPO = Path(__file__).resolve().parents[1]

# Flags for a closed network: without the background-networking ones chromium keeps trying
# Google's hosts; no sandbox because CI runs the tests as root.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    return os.environ.get("VAD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def artifact_dir() -> Path:
    d = Path(os.environ.get("VAD_TEST_ARTIFACTS") or REPO / "build" / "test-artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def open_browser() -> Iterator["object"]:
    """A launched Playwright ``Browser`` (closed on exit)."""
    exe = chromium_path()
    if exe is None:
        skip_or_fail("no chromium (make sysdeps installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
