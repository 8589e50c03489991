"""channels.js in a real headless Chromium against a live server, on asyncio and trio:
streams over one socket through the demultiplexer, request/reply, the offline buffer and
reconnection after the server is killed and started again on the same port.

Skipped only when Chromium is missing and CHANNELS_REQUIRE_BROWSER is unset.
"""

from __future__ import annotations

import time
import unittest
from typing import Any

from channels.testing import ChannelsLiveServerTestCase

from .browser import BROWSER_MISSING, BROWSER_REQUIRED, chromium, run_js, wait_for

OPEN_LAB = """
  const channels = await import("/static/channels/channels.js");
  window.channels = channels;
  window.events = [];
  const socket = new channels.Socket("/ws/lab/", args[0]);
  window.socket = socket;
  for (const name of ["open", "close", "reconnect", "error"]) {
    socket.on(name, (info) => window.events.push([name, info, performance.now()]));
  }
  window.received = {lab: [], other: []};
  for (const name of ["lab", "other"]) {
    socket.stream(name).on((payload) => window.received[name].push(payload));
  }
  await new Promise((resolve) => socket.on("open", resolve));
  return socket.state;
"""


@unittest.skipIf(
    BROWSER_MISSING and not BROWSER_REQUIRED,
    "Chromium is not installed (set CHANNELS_REQUIRE_BROWSER=1 to fail instead)",
)
class ClientInBrowser:
    """Run once per backend by the subclasses below."""

    live_server_url: str
    driver: Any
    _browser: Any

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # type: ignore[misc]
        cls._browser = chromium()
        try:
            cls.driver = cls._browser.__enter__()
        except BaseException:
            super().tearDownClass()  # type: ignore[misc]
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls._browser.__exit__(None, None, None)
        super().tearDownClass()  # type: ignore[misc]

    def open_lab(self, **options: Any) -> None:
        self.driver.get(f"{self.live_server_url}/hello/")
        assert run_js(self.driver, OPEN_LAB, options) == "open"

    def js(self, body: str, *args: Any) -> Any:
        return run_js(self.driver, body, *args)

    def test_request_reply_by_ref_and_timeout(self) -> None:
        self.open_lab()
        reply = self.js('return await socket.stream("lab").request({do: "reply", value: 42});')
        assert reply == {"echo": 42, "stream": "lab"}
        # Several in flight on two streams: each resolves with its own reply.
        replies = self.js(
            "return await Promise.all([1, 2, 3].map((n) => "
            'socket.stream(n % 2 ? "lab" : "other").request({do: "reply", value: n})));'
        )
        assert replies == [
            {"echo": 1, "stream": "lab"},
            {"echo": 2, "stream": "other"},
            {"echo": 3, "stream": "lab"},
        ]
        silent = self.js(
            'return await socket.stream("lab").request({do: "silent"}, {timeout: 300});'
        )
        assert silent == {"error": "timeout"}

    def test_a_crashing_stream_ends_alone_and_comes_back(self) -> None:
        self.open_lab()
        outcome = self.js('return await socket.stream("lab").request({do: "crash"});')
        assert outcome == {"error": "stream_error"}
        # The other stream, on the same socket, never noticed.
        assert self.js(
            'return await socket.stream("other").request({do: "reply", value: 1});'
        ) == {
            "echo": 1,
            "stream": "other",
        }
        assert self.js("return socket.state;") == "open"
        assert self.js("return window.events.filter((e) => e[0] === 'close').length;") == 0
        errors = self.js("return window.events.filter((e) => e[0] === 'error').map((e) => e[1]);")
        assert errors[0]["stream"] == "lab"
        assert "crashed (RuntimeError)" in errors[0]["error"]
        # The next frame to it starts it again.
        assert self.js('return await socket.stream("lab").request({do: "reply", value: 2});') == {
            "echo": 2,
            "stream": "lab",
        }

    def test_sends_while_offline_are_buffered_and_delivered_on_reconnect(self) -> None:
        self.open_lab(minDelay=1500, maxDelay=1500, jitter=0)
        states = self.js(
            """
            socket.ws.close();  // the connection drops (from the page's side)
            const results = [socket.ws.readyState];  // CLOSING: sends wait
            results.push(socket.stream("lab").send({n: 1}));
            results.push(socket.stream("lab").send({n: 2}));
            const answer = socket.stream("lab").request({do: "reply", value: "late"});
            results.push(socket.buffer.size);
            results.push(await answer);
            return results;
            """
        )
        assert states == [2, "buffered", "buffered", 3, {"echo": "late", "stream": "lab"}]
        wait_for(self.driver, "window.received.lab.length === 2", "the buffered frames")
        assert self.js("return window.received.lab;") == [{"got": {"n": 1}}, {"got": {"n": 2}}]

    def test_reconnects_after_the_server_is_killed_and_restarted(self) -> None:
        self.open_lab(minDelay=200, maxDelay=2000)
        self.stop_live_server(kill=True)  # type: ignore[attr-defined]
        wait_for(self.driver, "socket.state === 'reconnecting'", "the drop to be seen")
        time.sleep(1)  # the client retries against a port nobody listens on
        self.start_live_server()  # type: ignore[attr-defined]
        ready = self.js("return performance.now();")
        wait_for(self.driver, "socket.state === 'open'", "the reconnection")
        opened = self.js("return window.events.filter((e) => e[0] === 'open').at(-1);")
        assert opened[1]["reconnected"] is True
        reconnect_ms = opened[2] - ready
        print(f"\nreconnect after restart ({self.server_backend}): {reconnect_ms:.0f} ms")  # type: ignore[attr-defined]
        assert self.js(
            'return await socket.stream("lab").request({do: "reply", value: "back"});'
        ) == {
            "echo": "back",
            "stream": "lab",
        }


class ClientOnAsyncio(ClientInBrowser, ChannelsLiveServerTestCase):
    server_backend = "asyncio"


class ClientOnTrio(ClientInBrowser, ChannelsLiveServerTestCase):
    server_backend = "trio"
