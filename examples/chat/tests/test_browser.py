"""The chat in a real headless Chromium, served by hypercorn on asyncio and on trio.

The page uses channels.js: one socket with the chat and notifications streams, a presence
list, recovery after a reconnection and an offline buffer. Every test runs on the
in-memory layer and on the Redis layer (Redis on 127.0.0.1:6379, or CHAT_TEST_REDIS_URL),
whose history outlives a server restart. Skipped only when Chromium is not installed
and CHANNELS_REQUIRE_BROWSER is unset (CI sets it, so there a missing browser fails the
run instead of hiding it).
"""

import os
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

import anyio
from channels.testing import ChannelsLiveServerTestCase
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from chat.models import Message

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BROWSER_REQUIRED = bool(os.environ.get("CHANNELS_REQUIRE_BROWSER"))
# How long the browser may take to show what the test waits for before the test fails.
WAIT_SECONDS = 20

LOG_TEXTS = "return [...document.querySelectorAll('#chat-log .text')].map((e) => e.textContent);"
PRESENCE = "return [...document.querySelectorAll('#presence-list li')].map((e) => e.textContent);"


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
        self.driver.get("about:blank")
        super().tearDown()  # type: ignore[misc]

    def wait_until(self, condition: Any, what: str) -> Any:
        return WebDriverWait(self.driver, WAIT_SECONDS).until(condition, f"waiting for {what}")

    def open_room(self, room_name: str, name: str = "ann", new_tab: bool = False) -> str:
        if new_tab:
            self.driver.switch_to.new_window("tab")
        self.driver.get(f"{self.live_server_url}/chat/{room_name}/?name={name}")
        self.wait_until_connected()
        return self.driver.current_window_handle

    def wait_until_connected(self) -> None:
        status = self.driver.find_element(By.ID, "chat-status")
        self.wait_until(lambda _: status.text == "connected", "the room's socket to open")
        # The welcome (recovery status, history, presence) has arrived.
        self.wait_until(
            lambda driver: driver.execute_script("return window.chat.recoveries.length > 0"),
            "the room's state",
        )

    def send(self, text: str) -> None:
        self.driver.find_element(By.ID, "chat-message-input").send_keys(text, Keys.ENTER)

    def wait_for_log(self, expected: list[str]) -> None:
        self.wait_until(
            lambda driver: driver.execute_script(LOG_TEXTS) == expected,
            f"the chat log to be {expected!r}",
        )

    def wait_for_presence(self, expected: list[str]) -> None:
        try:
            self.wait_until(
                lambda driver: sorted(driver.execute_script(PRESENCE)) == sorted(expected),
                f"the presence list to be {expected!r}",
            )
        except Exception as error:
            members = self.js("return window.chat.presence.list()")
            raise AssertionError(f"the presence list is {members!r}") from error

    def js(self, script: str) -> Any:
        return self.driver.execute_script(script)

    def test_a_message_typed_in_one_tab_appears_in_the_other(self) -> None:
        first = self.open_room("lobby", "ann")
        second = self.open_room("lobby", "bob", new_tab=True)

        self.driver.switch_to.window(first)
        self.send("hello from the first tab")
        self.wait_for_log(["hello from the first tab"])
        self.driver.switch_to.window(second)
        self.wait_for_log(["hello from the first tab"])

        self.send("and back")
        self.wait_for_log(["hello from the first tab", "and back"])
        self.driver.switch_to.window(first)
        self.wait_for_log(["hello from the first tab", "and back"])

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
        self.wait_for_log(["tea?"])

        # The room now has a message, so the index lists it and links to it.
        self.driver.get(f"{self.live_server_url}/chat/")
        self.driver.find_element(By.LINK_TEXT, "kitchen").click()
        self.wait_until_connected()
        self.wait_for_log(["tea?"])  # from the database: a first visit is not a recovery

    def test_an_empty_message_is_refused_with_an_error(self) -> None:
        self.open_room("lobby")
        self.send("   ")
        error = self.driver.find_element(By.ID, "chat-error")
        self.wait_until(lambda _: error.text == "Empty messages are not sent.", "the error")
        assert self.js(LOG_TEXTS) == []

    def test_the_presence_list_follows_a_second_tab_joining_and_leaving(self) -> None:
        first = self.open_room("lobby", "ann")
        self.wait_for_presence(["ann"])
        second = self.open_room("lobby", "bob", new_tab=True)
        self.wait_for_presence(["ann", "bob"])  # bob's snapshot
        self.driver.switch_to.window(first)
        self.wait_for_presence(["ann", "bob"])  # ann's live presence.join
        self.driver.switch_to.window(second)
        self.driver.close()
        self.driver.switch_to.window(first)
        self.wait_for_presence(["ann"])  # presence.leave when bob's consumer ended

    def test_another_room_s_messages_arrive_as_notifications_on_the_same_socket(self) -> None:
        first = self.open_room("lobby", "ann")
        self.open_room("kitchen", "bob", new_tab=True)
        self.send("cake in the kitchen")
        self.driver.switch_to.window(first)
        notifications = self.driver.find_element(By.ID, "notifications-list")
        self.wait_until(
            lambda _: "#kitchen bob: cake in the kitchen" in notifications.text, "the notification"
        )
        assert self.js(LOG_TEXTS) == []  # not in ann's room
        assert self.js("return window.chat.socket.state") == "open"

    def test_after_a_cut_the_messages_sent_meanwhile_appear_once_in_order(self) -> None:
        first = self.open_room("lobby", "ann")
        self.send("before the cut")
        self.wait_for_log(["before the cut"])
        self.js("window.chat.socket.close();")  # the connection is cut from the page
        self.wait_until(lambda _: self.js("return window.chat.socket.state") == "closed", "cut")

        self.open_room("lobby", "bob", new_tab=True)
        for text in ("one", "two", "three"):
            self.send(text)
        self.wait_for_log(["before the cut", "one", "two", "three"])

        self.driver.switch_to.window(first)
        assert self.js(LOG_TEXTS) == ["before the cut"]
        self.js("window.chat.socket.connect();")
        self.wait_until(lambda _: self.js("return window.chat.recoveries.length") == 2, "recovery")
        assert self.js("return window.chat.recoveries[1].recovered") is True
        self.wait_for_log(["before the cut", "one", "two", "three"])
        self.send("after")
        self.wait_for_log(["before the cut", "one", "two", "three", "after"])
        time.sleep(0.3)  # nothing more trickles in: every message once
        assert self.js(LOG_TEXTS) == ["before the cut", "one", "two", "three", "after"]

    def test_a_message_typed_while_offline_is_sent_on_reconnect(self) -> None:
        first = self.open_room("lobby", "ann")
        second = self.open_room("lobby", "bob", new_tab=True)
        self.driver.switch_to.window(first)
        # The connection drops; the client waits 2 s before it reconnects.
        self.js(
            "const socket = window.chat.socket;"
            "Object.assign(socket.options, {minDelay: 2000, maxDelay: 2000, jitter: 0});"
            "socket.ws.close();"
        )
        status = self.driver.find_element(By.ID, "chat-status")
        self.wait_until(lambda _: status.text == "reconnecting", "the drop")
        self.send("typed while offline")
        assert self.js("return window.chat.socket.buffer.size") == 1
        self.wait_until_connected()
        self.wait_for_log(["typed while offline"])
        self.driver.switch_to.window(second)
        self.wait_for_log(["typed while offline"])


class ChatInMemoryInBrowser(ChatInBrowser):
    """The chat on the in-memory layer (the example's settings): a restart loses the
    groups' history, so the page is told to reload."""

    def test_reconnects_after_a_server_restart_and_loses_nothing(self) -> None:
        self.open_room("lobby", "ann")
        self.send("before the restart")
        self.wait_for_log(["before the restart"])

        self.stop_live_server(kill=True)  # type: ignore[attr-defined]
        status = self.driver.find_element(By.ID, "chat-status")
        self.wait_until(lambda _: status.text == "reconnecting", "the drop")
        # Written while the client was away (by another server process, say). With the
        # in-memory layer the restart loses the groups' history, so the client is told
        # recovered=false and reloads the room from the database.
        away = ["while", "the server", "was down"]
        Message.objects.bulk_create([Message(room="lobby", name="bob", text=t) for t in away])

        reconnect_ms = restart_and_wait_for_reconnect(self)
        self.wait_until(lambda _: self.js("return window.chat.recoveries.length") == 2, "reload")
        assert self.js("return window.chat.recoveries[1].recovered") is False
        expected = ["before the restart", *away]
        self.wait_for_log(expected)
        self.send("after")
        self.wait_for_log([*expected, "after"])
        shown = self.js(LOG_TEXTS)
        lost = len([text for text in [*expected, "after"] if text not in shown])
        backend = type(self).server_backend  # type: ignore[attr-defined]
        print(
            f"\n[{backend}] reconnect {reconnect_ms:.0f} ms after the server was "
            f"ready; messages lost: {lost}; shown twice: {len(shown) - len(set(shown))}"
        )
        assert lost == 0
        assert len(shown) == len(set(shown))


REDIS_URL = os.environ.get("CHAT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def restart_and_wait_for_reconnect(test: Any) -> float:
    """Start ``test``'s stopped live server again and wait for the page's socket to
    reconnect; how long after the server was ready it did (ms, 0 if before the clock was
    read). The page listens before the server is back: it may reconnect at once."""
    test.js(
        "window.chat.opened = null;"
        "window.chat.socket.on('open', () => (window.chat.opened = performance.now()));"
    )
    test.start_live_server()
    ready = test.js("return performance.now();")
    test.wait_until(lambda _: test.js("return window.chat.opened") is not None, "reconnect")
    return max(float(test.js("return window.chat.opened")) - float(ready), 0.0)


def publish_to_room(prefix: str, room: str, messages: list[dict[str, Any]]) -> None:
    """group_send through a Redis layer of our own, as another server process would."""
    from channels.layers.redis import RedisChannelLayer

    from mysite.settings import CHANNEL_LAYERS

    config = CHANNEL_LAYERS["default"]["CONFIG"]

    async def publish() -> None:
        layer = RedisChannelLayer(
            hosts=[REDIS_URL],
            prefix=prefix,
            group_history=config["group_history"],
            presence_events=config["presence_events"],
        )
        try:
            for message in messages:
                await layer.group_send(f"chat_{room}", {"type": "chat.message", **message})
        finally:
            await layer.close()

    anyio.run(publish)


def flush_redis(prefix: str) -> None:
    from channels.layers.redis import RedisChannelLayer

    async def flush() -> None:
        layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=prefix)
        try:
            await layer.flush()
        finally:
            await layer.close()

    anyio.run(flush)


@unittest.skipIf(
    not CHROMIUM.exists() and not BROWSER_REQUIRED,
    f"{CHROMIUM} is not installed (set CHANNELS_REQUIRE_BROWSER=1 to fail instead)",
)
class ChatOnRedisInBrowser(ChatInBrowser):
    """The chat on the Redis layer: its groups' history outlives a server restart, so the
    page recovers what it missed from the layer instead of reloading."""

    _prefix: str

    @classmethod
    def setUpClass(cls) -> None:
        # Server processes (the first, and those start_live_server() starts) read these
        # in the settings; this process has loaded its own settings already.
        cls._prefix = f"chat-browser-{os.getpid()}-{cls.__name__}"
        os.environ["CHAT_REDIS_URL"] = REDIS_URL
        os.environ["CHAT_REDIS_PREFIX"] = cls._prefix
        try:
            super().setUpClass()
        except BaseException:
            cls._forget_redis()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            super().tearDownClass()
        finally:
            cls._forget_redis()

    @classmethod
    def _forget_redis(cls) -> None:
        del os.environ["CHAT_REDIS_URL"], os.environ["CHAT_REDIS_PREFIX"]
        flush_redis(cls._prefix)

    def test_after_a_server_restart_what_was_published_meanwhile_is_recovered(self) -> None:
        # A room of its own: the killed server's presence entries stay in Redis until
        # presence_timeout, as they should, and would show in the other tests' lobby.
        self.open_room("restart", "ann")
        self.send("before the restart")
        self.wait_for_log(["before the restart"])

        self.stop_live_server(kill=True)  # type: ignore[attr-defined]
        status = self.driver.find_element(By.ID, "chat-status")
        self.wait_until(lambda _: status.text == "reconnecting", "the drop")
        # Published while the client was away (by another process on the same Redis):
        # in the group's history, not in the database.
        texts = [f"away {n}" for n in range(5)]
        away = [{"id": 10_000 + n, "name": "bob", "text": text} for n, text in enumerate(texts)]
        publish_to_room(self._prefix, "restart", away)

        reconnect_ms = restart_and_wait_for_reconnect(self)
        self.wait_until(lambda _: self.js("return window.chat.recoveries.length") == 2, "replay")
        assert self.js("return window.chat.recoveries[1].recovered") is True
        expected = ["before the restart", *texts]
        self.wait_for_log(expected)
        self.send("after")
        self.wait_for_log([*expected, "after"])
        shown = self.js(LOG_TEXTS)
        lost = len([text for text in [*expected, "after"] if text not in shown])
        backend = type(self).server_backend  # type: ignore[attr-defined]
        print(
            f"\n[{backend}, Redis] reconnect {reconnect_ms:.0f} ms after the server was "
            f"ready; recovered from the layer; messages lost: {lost}"
        )
        assert lost == 0


class ChatOnRedisAsyncio(ChatOnRedisInBrowser, ChannelsLiveServerTestCase):
    server_backend = "asyncio"


class ChatOnRedisTrio(ChatOnRedisInBrowser, ChannelsLiveServerTestCase):
    server_backend = "trio"


class ChatOnAsyncio(ChatInMemoryInBrowser, ChannelsLiveServerTestCase):
    server_backend = "asyncio"


class ChatOnTrio(ChatInMemoryInBrowser, ChannelsLiveServerTestCase):
    server_backend = "trio"
