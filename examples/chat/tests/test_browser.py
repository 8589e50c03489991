"""The chat in a real headless Chromium, served by hypercorn on asyncio and on trio.

Skipped only when Chromium is not installed and CHANNELS_REQUIRE_BROWSER is unset
(CI sets it, so there a missing browser fails the run instead of hiding it).
"""

import os
import tempfile
import unittest
from pathlib import Path
from typing import Any

from channels.testing import ChannelsLiveServerTestCase
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BROWSER_REQUIRED = bool(os.environ.get("CHANNELS_REQUIRE_BROWSER"))
# How long the browser may take to show what the test waits for before the test fails.
WAIT_SECONDS = 20


def start_chromium(profile: str) -> WebDriver:
    """Headless Chromium with a fresh profile, driven by the system's chromedriver (so
    Selenium never tries to download one), with its own background traffic (updates,
    sync, QUIC) turned off."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        raise RuntimeError(
            f"The browser tests need {CHROMIUM} and {CHROMEDRIVER}; one is missing "
            "(apt-get install chromium chromium-driver)"
        )
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
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))


@unittest.skipIf(
    not CHROMIUM.exists() and not BROWSER_REQUIRED,
    f"{CHROMIUM} is not installed (set CHANNELS_REQUIRE_BROWSER=1 to fail instead)",
)
class ChatInBrowser:
    """The browser tests, run against one server per backend by the subclasses below."""

    live_server_url: str
    driver: WebDriver
    _profile: Any

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # type: ignore[misc]  # starts the server
        cls._profile = tempfile.TemporaryDirectory(prefix="chat-chromium-")
        try:
            cls.driver = start_chromium(cls._profile.name)
        except BaseException:
            cls._profile.cleanup()
            super().tearDownClass()  # type: ignore[misc]
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.driver.quit()
        cls._profile.cleanup()
        super().tearDownClass()  # type: ignore[misc]

    def tearDown(self) -> None:
        # Each test starts with one tab.
        handles = self.driver.window_handles
        for handle in handles[1:]:
            self.driver.switch_to.window(handle)
            self.driver.close()
        self.driver.switch_to.window(handles[0])
        super().tearDown()  # type: ignore[misc]

    def wait_until(self, condition: Any, what: str) -> Any:
        return WebDriverWait(self.driver, WAIT_SECONDS).until(condition, f"waiting for {what}")

    def open_room(self, room_name: str) -> None:
        self.driver.get(f"{self.live_server_url}/chat/{room_name}/")
        self.wait_until_connected()

    def wait_until_connected(self) -> None:
        status = self.driver.find_element(By.ID, "chat-status")
        self.wait_until(lambda _: status.text == "connected", "the room's socket to open")

    def send(self, text: str) -> None:
        self.driver.find_element(By.ID, "chat-message-input").send_keys(text, Keys.ENTER)

    def wait_for_log(self, expected: str) -> None:
        log = self.driver.find_element(By.ID, "chat-log")
        self.wait_until(
            lambda _: log.get_property("value") == expected, f"the chat log to be {expected!r}"
        )

    def test_a_message_typed_in_one_tab_appears_in_the_other(self) -> None:
        self.open_room("lobby")
        first = self.driver.current_window_handle
        self.driver.switch_to.new_window("tab")
        self.open_room("lobby")
        second = self.driver.current_window_handle

        self.driver.switch_to.window(first)
        self.send("hello from the first tab")
        self.wait_for_log("hello from the first tab\n")
        self.driver.switch_to.window(second)
        self.wait_for_log("hello from the first tab\n")

        self.send("and back")
        self.wait_for_log("hello from the first tab\nand back\n")
        self.driver.switch_to.window(first)
        self.wait_for_log("hello from the first tab\nand back\n")

    def test_the_index_page_goes_to_the_room_typed(self) -> None:
        self.driver.get(f"{self.live_server_url}/chat/")
        room_name = self.driver.find_element(By.ID, "room-name-input")
        # The browser itself refuses a name the server would refuse.
        room_name.send_keys("two words")
        mismatch = "return arguments[0].validity.patternMismatch"
        assert self.driver.execute_script(mismatch, room_name)
        room_name.clear()
        room_name.send_keys("kitchen", Keys.ENTER)
        self.wait_until(
            lambda driver: driver.current_url == f"{self.live_server_url}/chat/kitchen/",
            "the room page",
        )
        self.wait_until_connected()
        self.send("tea?")
        self.wait_for_log("tea?\n")

        # The room now has a message, so the index lists it and links to it.
        self.driver.get(f"{self.live_server_url}/chat/")
        self.driver.find_element(By.LINK_TEXT, "kitchen").click()
        self.wait_until_connected()
        self.wait_for_log("tea?\n")  # replayed from the database

    def test_an_empty_message_is_refused_with_an_error(self) -> None:
        self.open_room("lobby")
        self.send("   ")
        error = self.driver.find_element(By.ID, "chat-error")
        self.wait_until(lambda _: error.text == "Empty messages are not sent.", "the error")
        assert self.driver.find_element(By.ID, "chat-log").get_property("value") == ""


class ChatOnAsyncio(ChatInBrowser, ChannelsLiveServerTestCase):
    server_backend = "asyncio"


class ChatOnTrio(ChatInBrowser, ChannelsLiveServerTestCase):
    server_backend = "trio"
