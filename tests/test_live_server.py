"""ChannelsLiveServerTestCase: a hypercorn process per class, on asyncio and on trio,
sharing the test database with the test."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from django.core.exceptions import ImproperlyConfigured
from websockets.sync.client import connect

from channels.testing import ChannelsLiveServerTestCase
from channels.testing.live import TEST_DATABASE_PREFIX

from .server_process import ROOT
from .test_serving import get
from .test_serving_reliability import StuckClient
from .testapp.models import Note


class LiveServerTests:
    """Run once per backend, by the two test cases below."""

    server_backend: str
    live_server_url: str
    live_server_ws_url: str

    def test_the_server_runs_on_the_chosen_backend(self) -> None:
        assert get(f"{self.live_server_url}/hello/") == f"hello from {self.server_backend}"

    def test_rows_the_test_commits_are_served_over_http_and_websocket(self) -> None:
        Note.objects.create(text="written by the test")
        assert get(f"{self.live_server_url}/notes/") == "written by the test"
        with connect(f"{self.live_server_ws_url}/ws/echo/", open_timeout=30) as ws:
            ws.send("notes")
            assert ws.recv(timeout=30) == "written by the test"
            ws.send("hi")
            assert ws.recv(timeout=30) == "echo: hi"

    def test_django_views_see_the_test_database(self) -> None:
        Note.objects.create(text="first")
        Note.objects.create(text="second")
        assert get(f"{self.live_server_url}/django/notes/") == "sync view: first, second"
        # Django's async ORM, on the server's backend (trio included).
        assert get(f"{self.live_server_url}/django/async-notes/") == (
            "async view: 2 first, second"
        )

    def test_static_files_are_served(self) -> None:
        assert get(f"{self.live_server_url}/static/testapp/live.css") == (
            "body { color: teal; }\n"
        )

    def test_urls_name_the_host_and_the_same_port(self) -> None:
        assert self.live_server_url.startswith("http://localhost:")
        assert self.live_server_ws_url == "ws" + self.live_server_url.removeprefix("http")


class TestLiveServerOnAsyncio(LiveServerTests, ChannelsLiveServerTestCase):
    server_backend = "asyncio"


class TestLiveServerOnTrio(LiveServerTests, ChannelsLiveServerTestCase):
    server_backend = "trio"


class TestLiveServerKeepalive(ChannelsLiveServerTestCase):
    server_backend = "trio"
    ping_interval = 0.3
    ping_timeout = 0.7

    def test_a_frozen_peer_is_dropped_and_a_healthy_one_stays(self) -> None:
        with connect(
            f"{self.live_server_ws_url}/ws/echo/", open_timeout=30, ping_interval=None
        ) as ws:
            frozen = StuckClient(self.live_server_url, "/ws/echo/")
            try:
                frozen.wait_until_dropped()
            finally:
                frozen.close()
            ws.send("hi")
            assert ws.recv(timeout=30) == "echo: hi"

    def test_the_ping_settings_reach_the_server(self) -> None:
        arguments = self._server_arguments()
        assert arguments[arguments.index("--ping-interval") + 1] == "0.3"
        assert arguments[arguments.index("--ping-timeout") + 1] == "0.7"


def test_an_unknown_backend_is_refused() -> None:
    class OnCurio(ChannelsLiveServerTestCase):
        server_backend = "curio"  # type: ignore[assignment]

    with pytest.raises(ImproperlyConfigured, match="server_backend must be 'asyncio' or 'trio'"):
        OnCurio.setUpClass()


@pytest.mark.django_db(transaction=True)
def test_a_server_that_cannot_start_is_reported() -> None:
    class Broken(ChannelsLiveServerTestCase):
        static_wrapper = "tests.no_such_module.Wrapper"

    try:
        with pytest.raises(RuntimeError, match="exited with status 1 before it was ready"):
            Broken.setUpClass()
    finally:
        # Django registers undoing its database guards as a class cleanup, which only a
        # unittest runner calls: left in place, they refuse later tests' other databases.
        Broken.doClassCleanups()


def test_in_memory_databases_are_refused() -> None:
    script = textwrap.dedent(
        """
        import django
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            INSTALLED_APPS=["channels"],
        )
        django.setup()
        from channels.testing import ChannelsLiveServerTestCase

        class InMemory(ChannelsLiveServerTestCase):
            pass

        try:
            InMemory.setUpClass()
        except ImproperlyConfigured as exc:
            print("refused:", exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "refused: ChannelsLiveServerTestCase can not be used with in memory" in result.stdout, (
        result.stderr
    )


def test_the_test_database_prefix_is_djangos() -> None:
    assert TEST_DATABASE_PREFIX == "test_"


def test_set_database_connection_without_names_uses_test_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Started other than by the test case (no names passed), it follows Channels' rule."""
    from django.conf import settings

    from channels.testing.live import DATABASES_ENV, set_database_connection

    monkeypatch.delenv(DATABASES_ENV, raising=False)
    postgres = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "shop"}}
    monkeypatch.setattr(settings, "DATABASES", postgres)
    set_database_connection()
    assert postgres["default"]["NAME"] == "test_shop"

    sqlite = {"default": {"NAME": "a.sqlite3", "TEST": {"NAME": "test-a.sqlite3"}}}
    monkeypatch.setattr(settings, "DATABASES", sqlite)
    set_database_connection()
    assert sqlite["default"]["NAME"] == "test-a.sqlite3"
