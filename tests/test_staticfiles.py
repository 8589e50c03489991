"""StaticFilesWrapper: STATIC_URL from the staticfiles finders, everything else passed on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from channels.staticfiles import StaticFilesWrapper
from channels.testing import HttpCommunicator, WebsocketCommunicator
from channels.types import Receive, Scope, Send


@pytest.fixture(autouse=True)
def static_dir(settings: Any, tmp_path: Path) -> Path:
    (tmp_path / "css").mkdir()
    (tmp_path / "css" / "site.css").write_text("body { color: teal; }")
    settings.STATIC_URL = "/static/"
    settings.STATICFILES_DIRS = [str(tmp_path)]
    settings.ROOT_URLCONF = "tests.httpviews"  # Django renders its 404 page with it
    settings.STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.FileSystemFinder"]
    return tmp_path


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    """The wrapped application: says which scope reached it."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.close", "code": 4321})
        return
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"inner {scope['path']}".encode()})


async def get(application: Any, path: str) -> dict[str, Any]:
    communicator = HttpCommunicator(application, "GET", path)
    response = await communicator.get_response()
    await communicator.wait()
    return response


async def test_static_files_are_served_from_the_finders() -> None:
    response = await get(StaticFilesWrapper(inner), "/static/css/site.css")
    assert response["status"] == 200
    assert response["body"] == b"body { color: teal; }"
    assert dict(response["headers"])[b"Content-Type"] == b"text/css"


async def test_a_missing_static_file_is_404() -> None:
    response = await get(StaticFilesWrapper(inner), "/static/css/missing.css")
    assert response["status"] == 404


async def test_other_paths_and_scope_types_reach_the_application() -> None:
    wrapper = StaticFilesWrapper(inner)
    assert (await get(wrapper, "/page/"))["body"] == b"inner /page/"
    socket = WebsocketCommunicator(wrapper, "/static/css/site.css")
    assert await socket.connect() == (False, 4321)


async def test_a_static_url_on_another_host_serves_nothing_here(settings: Any) -> None:
    settings.STATIC_URL = "https://cdn.example.com/static/"
    response = await get(StaticFilesWrapper(inner), "/static/css/site.css")
    assert response["body"] == b"inner /static/css/site.css"


def test_static_url_is_required(settings: Any) -> None:
    settings.STATIC_URL = None
    with pytest.raises(ImproperlyConfigured, match="STATIC_URL"):
        StaticFilesWrapper(inner)


async def test_the_browser_client_is_served_from_the_package(settings: Any) -> None:
    # The app directories finder finds it in channels/static/, as a project would.
    settings.STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.AppDirectoriesFinder"]
    for name, content_type in [("channels.js", b"text/javascript"), ("channels.d.ts", None)]:
        response = await get(StaticFilesWrapper(inner), f"/static/channels/{name}")
        assert response["status"] == 200, name
        assert b"export" in response["body"]
        if content_type:
            assert dict(response["headers"])[b"Content-Type"].startswith(content_type)


def test_the_browser_client_is_package_data() -> None:
    # pyproject's package-data ships it in the wheel (an editable install would hide a miss).
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["channels"]
    static = Path(__file__).parent.parent / "channels"
    shipped = {p.relative_to(static).as_posix() for pat in patterns for p in static.glob(pat)}
    assert {"static/channels/channels.js", "static/channels/channels.d.ts"} <= shipped
