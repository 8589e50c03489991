"""Headless Chromium for the browser client's tests (the chat example has its own copy of
this start-up, as it is a separate project that must not import the package's tests)."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: CI sets it: a missing browser then fails the run instead of skipping.
BROWSER_REQUIRED = bool(os.environ.get("CHANNELS_REQUIRE_BROWSER"))
BROWSER_MISSING = not (CHROMIUM.exists() and CHROMEDRIVER.exists())


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium with a fresh profile, driven by the system's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if BROWSER_MISSING:
        raise RuntimeError(
            f"The browser tests need {CHROMIUM} and {CHROMEDRIVER}; one is missing "
            "(apt-get install chromium chromium-driver)"
        )
    with tempfile.TemporaryDirectory(prefix="channels-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(flag)
        service = Service(executable_path=str(CHROMEDRIVER))
        driver = webdriver.Chrome(options=options, service=service)
        try:
            driver.set_script_timeout(30)
            yield driver
        finally:
            driver.quit()


def run_js(driver: Any, body: str, *args: Any) -> Any:
    """Run ``body`` as the body of an async function in the page (``args`` as ``args``);
    its result comes back, a rejection as ``{"error": code or message}``."""
    script = (
        "const done = arguments[arguments.length - 1];"
        "const args = Array.from(arguments).slice(0, -1);"
        f"(async () => {{ {body} }})().then((value) => done({{value}}),"
        " (e) => done({error: String((e && (e.code || e.message)) || e)}));"
    )
    outcome = driver.execute_async_script(script, *args)
    if "error" in outcome:
        return {"error": outcome["error"]}
    return outcome.get("value")


def wait_for(driver: Any, expression: str, what: str, timeout: float = 20) -> Any:
    """Poll a JavaScript expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"return ({expression});")
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what} ({expression})")
        time.sleep(0.05)
