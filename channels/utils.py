"""Small helpers shared by consumers, routers and the testing tools."""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager

import anyio

__all__ = ["name_that_thing", "unwrap_exception_groups"]


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@contextmanager
def unwrap_exception_groups() -> Iterator[None]:
    """Re-raise a task group's lone error as itself rather than inside an exception group.

    A consumer's handler error reaches its server as the original exception: that is
    what ASGI servers, test clients and ``except SomeError`` in user code expect.
    Cancellations that the error caused in sibling tasks are ignored; a group with
    several real errors, or only cancellations, is re-raised untouched.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        cancelled = anyio.get_cancelled_exc_class()
        errors = [exc for exc in _leaves(group) if not isinstance(exc, cancelled)]
        if len(errors) != 1:
            raise
        error = errors[0]
        try:
            raise error from error.__cause__
        finally:
            del error, errors


def name_that_thing(thing: object) -> str:
    """A dotted path for a function or class, else the name of the thing's class."""
    if isinstance(thing, types.MethodType):
        return f"{name_that_thing(thing.__self__)}.{thing.__func__.__name__}"
    if isinstance(thing, type | types.FunctionType | types.BuiltinFunctionType):
        return f"{thing.__module__}.{thing.__qualname__}"
    if hasattr(thing, "__class__"):
        return name_that_thing(type(thing))
    return repr(thing)  # pragma: no cover
