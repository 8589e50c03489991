"""Model observers: committed database changes pushed to channel-layer groups.

Channels 0.17 to 1.1 had data binding; this is it rebuilt. A :class:`ModelObserver`
subclass names a model and the groups that care about each instance; after a change
commits, the groups the instance left get ``model.deleted``, the groups it stayed in
``model.updated``, and the groups it joined ``model.created``. :class:`AsyncObserverMixin`
and :class:`ObserverMixin` subscribe JSON WebSocket consumers to those groups and forward
the events to the browser.

When messages are built and when they are sent
    The receivers of ``pre_save``/``pre_delete`` record the groups the instance is in
    (for a save, of the row as stored, read in the same transaction); those of
    ``post_save``/``post_delete``/``m2m_changed`` work out the groups it is in now and
    build the messages then, while the transaction is open, so a failing ``groups()`` or
    ``serialize()``, a bad group name or data that is not JSON fail the save itself and
    lose nothing. The messages are queued with ``transaction.on_commit(..., using=alias)``
    on the alias that wrote the row: Django runs them after the outermost ``atomic`` block
    of that database commits (at once in autocommit mode), drops them with a rolled-back
    block or savepoint, and keeps each database's transactions apart.

How a commit in sync code reaches an event loop without blocking one
    The on-commit callback runs in the thread that committed. It calls
    :func:`channels.concurrency.async_to_sync` on the sends and waits; that thread waits,
    and the sends run on a loop. Which loop depends on the thread, and
    :func:`~channels.concurrency.async_to_sync` already knows every case:

    - a sync view served by :mod:`channels.http` (the admin included) runs in its
      request's thread, and a :class:`~channels.consumer.SyncConsumer` handler or a
      :func:`~channels.db.database_sync_to_async` call in the thread-sensitive worker:
      these threads are linked to the loop that started them, asyncio or trio, and the
      sends are posted to it;
    - Django's async ORM (``await Message.objects.acreate(...)``) runs the save on the
      thread-sensitive worker through asgiref's ``sync_to_async``: on asyncio the sends go
      back through asgiref to the running loop; on trio :mod:`channels._django_trio` has
      routed that call through our worker, which is linked to the trio loop;
    - a management command, a script, a sync test: no loop anywhere, so a short-lived one
      runs the sends in a helper thread (``anyio.from_thread.start_blocking_portal``) and
      ends with them. Reaching other processes needs a layer that does (Redis): the
      in-memory layer only reaches consumers of the same process.

    The only thread that cannot wait is one running an event loop; a sync save there
    (possible only with ``DJANGO_ALLOW_ASYNC_UNSAFE``) is refused with ``RuntimeError``
    before anything is queued. Nothing is sent from a task left running in the
    background: the sends are done when the commit call returns, which also gives
    per-thread order and backpressure from the layer. A send that fails after the commit
    (Redis down) cannot undo the change; it is logged on the ``channels.observers``
    logger and the saving code carries on.

Durable groups
    Observers send with the layer's ``group_send``, so a group matched by the layer's
    ``group_history`` setting stores each change with a position, and a reconnecting
    client can recover the changes it missed (or learn that it must reload).

Paths that fire no signals
    ``QuerySet.update()``, ``bulk_create()``, ``bulk_update()``, raw SQL and ``loaddata``
    (raw saves) are not seen; call :meth:`ModelObserver.notify` after them.
"""

from __future__ import annotations

from ._consumers import AsyncObserverMixin as AsyncObserverMixin
from ._consumers import ObserverMixin as ObserverMixin
from ._consumers import Subscription as Subscription
from ._observer import ACTIONS as ACTIONS
from ._observer import Action as Action
from ._observer import ModelObserver as ModelObserver
from ._observer import registered_observers as registered_observers

__all__ = [
    "ACTIONS",
    "Action",
    "AsyncObserverMixin",
    "ModelObserver",
    "ObserverMixin",
    "Subscription",
    "registered_observers",
]
