import sys

import pytest

# INTERIM, removed when channels.http lands on main: Django's own handler stands in.
try:
    import channels.http  # noqa: F401
except ImportError:
    import django.core.asgi

    sys.modules["channels.http"] = django.core.asgi


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs once on asyncio and once on trio."""
    return request.param  # type: ignore[no-any-return]
