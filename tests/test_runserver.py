"""``manage.py runserver``: real server processes on both backends, real clients."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.error
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect

from .server_process import ROOT, ServerProcess
from .test_serving import BACKENDS, get, ws_url

RUNSERVER = ["-m", "django", "runserver"]


def started_url(server: ServerProcess) -> str:
    return url_in(server.wait_for_line("Starting ASGI development server"))


def url_in(banner: str) -> str:
    return banner.rsplit(" at ", 1)[1].rstrip("/")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_runserver_serves_http_and_websockets_and_logs_them(
    backend: str, signum: signal.Signals
) -> None:
    args = [*RUNSERVER, "127.0.0.1:0", "--noreload", "--backend", backend]
    with ServerProcess(args) as server:
        line = server.wait_for_line("Starting ASGI development server")
        assert f"(hypercorn on {backend})" in line
        url = url_in(line)
        assert get(f"{url}/hello/") == f"hello from {backend}"
        server.wait_for_line("HTTP GET /hello/ 200 [")
        # DEBUG and staticfiles: static files are served, and Django's views too.
        assert get(f"{url}/static/testapp/live.css") == "body { color: teal; }\n"
        assert get(f"{url}/django/hello/") == "django says hello"
        with connect(f"{ws_url(url)}/ws/echo/", open_timeout=30) as ws:
            ws.send("hi")
            assert ws.recv(timeout=30) == "echo: hi"
            server.wait_for_line("WebSocket CONNECT /ws/echo/ [127.0.0.1:")
            server.send_signal(signum)
            with pytest.raises(ConnectionClosedOK):
                ws.recv(timeout=30)
            assert ws.close_code == 1001
        assert server.wait() == 0
    output = server.output
    assert "WebSocket HANDSHAKING /ws/echo/ [127.0.0.1:" in output
    assert "WebSocket DISCONNECT /ws/echo/ [127.0.0.1:" in output
    assert "echo consumer disconnected with code 1001" in output
    assert "lifespan: shutdown" in output
    assert "Traceback" not in output


def test_runserver_nostatic_leaves_static_urls_to_the_application() -> None:
    args = [*RUNSERVER, "127.0.0.1:0", "--noreload", "--nostatic"]
    with ServerProcess(args) as server:
        url = started_url(server)
        with pytest.raises(urllib.error.HTTPError) as info:
            get(f"{url}/static/testapp/live.css")
        info.value.close()
        assert info.value.code == 404  # Django's URLconf answered, not the static files
        assert get(f"{url}/django/hello/") == "django says hello"
        server.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_runserver_reports_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with ServerProcess([*RUNSERVER, f"127.0.0.1:{port}", "--noreload"]) as server:
            assert server.wait() == 1
    assert "Error: That port is already in use." in server.output


@pytest.mark.timeout(90)
def test_runserver_restarts_when_a_project_file_changes(tmp_path: Path) -> None:
    """Django's autoreloader: a changed module restarts the server process."""
    settings_file = tmp_path / "reloaded_settings.py"
    settings_file.write_text("from tests.serverproject.settings import *  # noqa: F403\n")
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    args = [*RUNSERVER, "127.0.0.1:0", "--backend", "trio", "--skip-checks"]
    with ServerProcess(args, settings="reloaded_settings", env=env) as server:
        server.wait_for_line("Watching for file changes")
        first = started_url(server)
        assert get(f"{first}/hello/") == "hello from trio"
        # The reloader compares each file's mtime with the one it saw last, so a change
        # made while it takes its first look goes unseen: keep changing until it reloads.
        for bump in range(1, 60):
            later = time.time() + bump
            os.utime(settings_file, (later, later))
            if server.poll_for_line("changed, reloading", timeout=0.5) is not None:
                break
        else:
            raise AssertionError(f"the server never reloaded: {server.output}")
        second = started_url(server)
        assert get(f"{second}/hello/") == "hello from trio"
        server.send_signal(signal.SIGTERM)
        server.wait()


def test_runserver_needs_asgi_application() -> None:
    with override_settings():
        del settings.ASGI_APPLICATION
        with pytest.raises(CommandError, match="You have not set ASGI_APPLICATION"):
            call_command("runserver", "--noreload")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.no_such_module.application", "Cannot import ASGI_APPLICATION module"),
        ("tests.serverproject.asgi.missing", "Cannot find 'missing' in ASGI_APPLICATION"),
        ("application", "Cannot find ASGI_APPLICATION setting"),
    ],
)
def test_runserver_names_an_unimportable_application(path: str, message: str) -> None:
    with override_settings(ASGI_APPLICATION=path), pytest.raises(CommandError, match=message):
        call_command("runserver", "--noreload")


def test_runserver_refuses_an_unknown_backend() -> None:
    with (
        override_settings(ASGI_APPLICATION="tests.serverproject.asgi.application"),
        pytest.raises(CommandError, match="invalid choice: 'curio'"),
    ):
        call_command("runserver", "--noreload", "--backend", "curio")


def test_a_check_warns_when_staticfiles_would_shadow_runserver() -> None:
    from channels.checks import check_runserver_order

    assert check_runserver_order() == []  # the test settings list channels first
    apps_in_wrong_order = [
        "django.contrib.contenttypes",
        "django.contrib.staticfiles",
        "channels",
    ]
    with override_settings(INSTALLED_APPS=apps_in_wrong_order):
        warnings = check_runserver_order()
    assert [warning.id for warning in warnings] == ["channels.W001"]
    assert "Move 'channels' above 'django.contrib.staticfiles'" in str(warnings[0].hint)
