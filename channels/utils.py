"""Small helpers shared by consumers, routers and the testing tools."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio

__all__ = ["unwrap_exception_groups"]


@contextmanager
def unwrap_exception_groups() -> Iterator[None]:
    """Re-raise a task group's lone error as itself rather than inside an exception group.

    A consumer's handler error reaches its server as the original exception: that is
    what ASGI servers, test clients and ``except SomeError`` in user code expect.
    Cancellations that the error caused in sibling tasks are ignored. Only the task
    group's own level is looked at: an exception group raised by a handler is its error
    and is passed on whole. A group with several errors, or only cancellations, is
    re-raised untouched.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        errors = [exc for exc in group.exceptions if not _is_cancellation(exc)]
        if len(errors) != 1:
            raise
        error = errors[0]
    else:
        return
    # Raising here would record the group as the error's context and hide the error's own
    # ("During handling of the above exception..."): keep what the error had.
    context, suppress = error.__context__, error.__suppress_context__
    try:
        raise error
    finally:
        error.__context__, error.__suppress_context__ = context, suppress
        del error, errors


def _is_cancellation(exc: BaseException) -> bool:
    cancelled = anyio.get_cancelled_exc_class()
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_cancellation(inner) for inner in exc.exceptions)
    return isinstance(exc, cancelled)
