"""Consumer side: subscribe a JSON WebSocket connection to an observer's groups.

The mixins join groups with the consumer's ``group_join``, so a subscription is left when
the consumer ends, however it ends, and a group that keeps history (the layer's
``group_history`` setting) hands back its position, and with ``after`` the changes the
client missed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from django.core.exceptions import PermissionDenied
from django.db import models

from ..db import database_sync_to_async
from ..layers import GroupHistory
from ..types import Message, Scope
from ._observer import ModelObserver

__all__ = ["AsyncObserverMixin", "ObserverMixin", "Subscription"]

ObserverLike = ModelObserver | type[ModelObserver]


class Subscription(NamedTuple):
    """What :meth:`AsyncObserverMixin.subscribe` joined."""

    #: The groups joined, in order.
    groups: list[str]
    #: What ``group_join`` answered for each group: its position for a group that keeps
    #: history (``None`` otherwise) and, given ``after``, the missed changes replayed.
    histories: dict[str, GroupHistory]

    @property
    def recovered(self) -> bool:
        """Whether every group's missed changes were recovered (false: reload instead)."""
        return all(history.recovered for history in self.histories.values())


def _positions(groups: list[str], after: object) -> dict[str, object]:
    """``after`` per group: a mapping of group to position, or one position for a
    subscription of one group.

    :raises ValueError: for one position and several groups (which group is it from?).
    """
    if after is None:
        return {}
    if isinstance(after, Mapping) and not ({"epoch", "offset"} <= set(after)):
        return {str(group): position for group, position in after.items()}
    if len(groups) != 1:
        raise ValueError(
            f"after= is one position but the subscription joins {len(groups)} groups "
            f"({groups}); pass a mapping of group name to position"
        )
    return {groups[0]: after}


def _observer(observer: ObserverLike) -> ModelObserver:
    if isinstance(observer, ModelObserver):
        return observer
    if isinstance(observer, type) and issubclass(observer, ModelObserver):
        return observer.registered()
    raise TypeError(f"expected a ModelObserver class or instance, got {observer!r}")


def _subscription(
    observer: ModelObserver,
    user: Any,
    target: models.Model | Iterable[models.Model] | None,
    filters: dict[str, Any],
) -> list[str]:
    """The groups to join (sync: may query), after the permission checks.

    :raises PermissionDenied: if :meth:`ModelObserver.has_permission` refuses.
    :raises ValueError: if neither or both of a target and filters are given.
    """
    if (target is None) == (not filters):
        raise ValueError(
            "subscribe() takes an instance, a queryset (or other iterable of instances), or "
            "filters for the observer's subscription_groups(), exactly one of them"
        )
    name = type(observer).__qualname__
    if target is None:
        if not observer.has_permission(user, "subscribe", None):
            raise PermissionDenied(f"{name}: subscribing by {sorted(filters)} is not allowed")
        groups = list(observer.subscription_groups(**filters))
    else:
        instances = [target] if isinstance(target, models.Model) else list(target)
        groups = []
        for instance in instances:
            if not observer.has_permission(user, "subscribe", instance):
                raise PermissionDenied(f"{name}: subscribing to pk={instance.pk!r} is not allowed")
            groups.extend(observer.groups(instance))
    return list(dict.fromkeys(groups))


def _permitted(observer: ModelObserver, user: Any, event: Message) -> bool:
    """Sync: whether ``user`` may receive ``event`` (may query)."""
    actions = {value: key for key, value in type(observer).message_types.items()}
    action = actions.get(event.get("type", ""))
    if action is None:
        return False
    return observer.has_permission(user, action, observer.event_instance(event))


def _checks_events(observer: ModelObserver) -> bool:
    # The default permits everything: skip the per-event thread hop and query.
    return type(observer).has_permission is not ModelObserver.has_permission


class _Subscriptions:
    """State shared by both mixins: which observer judges events of which model."""

    scope: Scope

    def _observers(self) -> dict[str, ModelObserver]:
        found: dict[str, ModelObserver] | None = self.__dict__.get("_observed_models")
        if found is None:
            found = self.__dict__["_observed_models"] = {}
        return found

    def _remember(self, observer: ModelObserver) -> None:
        label = observer.model_class()._meta.label_lower
        known = self._observers().get(label)
        if known is not None and known is not observer:
            raise ValueError(
                f"this consumer already follows {label} through {type(known).__qualname__}; "
                f"one observer per model per connection (events carry the model, not the "
                f"observer, so {type(observer).__qualname__}'s permission could not be told apart)"
            )
        self._observers()[label] = observer

    def model_event_content(self, event: Message) -> dict[str, Any]:
        """What the client receives for an event: the message as sent (``type``,
        ``model``, ``pk``, ``data``, and ``__position__`` from a group with history).
        Override to reshape it."""
        return dict(event)


class AsyncObserverMixin(_Subscriptions):
    """For :class:`~channels.generic.websocket.AsyncJsonWebsocketConsumer`: follow an
    observer's changes and forward them to the client as JSON.

    ``await self.subscribe(MessageObserver, room)`` joins the groups of an instance (or of
    each instance of a queryset); ``await self.subscribe(MessageObserver, room="lobby")``
    joins ``subscription_groups(room="lobby")``. Events arrive at :meth:`model_created`,
    :meth:`model_updated` and :meth:`model_deleted`, which check the observer's
    ``has_permission`` (if overridden) and send :meth:`model_event_content` as JSON.
    An observer with other ``message_types`` needs handlers of those names: assign
    :meth:`forward_model_event` to them.
    """

    if TYPE_CHECKING:  # provided by the consumer class this is mixed into

        async def send_json(self, content: Any, close: bool | int = False) -> None: ...

        async def group_join(self, group: str, after: object = None) -> GroupHistory: ...

        async def group_leave(self, group: str) -> None: ...

    async def subscribe(
        self,
        observer: ObserverLike,
        target: models.Model | Iterable[models.Model] | None = None,
        /,
        *,
        after: object = None,
        **filters: Any,
    ) -> Subscription:
        """Join the groups for ``target`` or ``filters``.

        ``after``: the last position the client saw (the ``__position__`` of an event),
        or a mapping of group name to position; the changes since then are replayed
        first, when the group keeps history and still has them all (see
        :attr:`Subscription.recovered`).

        :raises ~django.core.exceptions.PermissionDenied: if the observer refuses (close
            the connection, or tell the client).
        :raises ValueError: for neither or both of ``target`` and ``filters``, a second
            observer of the same model, or one ``after`` position for several groups.
        :raises ~channels.exceptions.InvalidChannelLayerError: without a layer with groups.
        """
        resolved = _observer(observer)
        user = self.scope.get("user")
        groups = await database_sync_to_async(_subscription)(resolved, user, target, filters)
        positions = _positions(groups, after)
        self._remember(resolved)
        histories = {}
        for group in groups:
            histories[group] = await self.group_join(group, positions.get(group))
        return Subscription(groups, histories)

    async def unsubscribe(self, subscription: Subscription | Iterable[str]) -> None:
        """Leave the groups of a subscription (or the groups named)."""
        groups = subscription.groups if isinstance(subscription, Subscription) else subscription
        for group in list(groups):
            await self.group_leave(group)

    async def forward_model_event(self, event: Message) -> None:
        """Send ``event`` to the client if the observer of its model permits."""
        observer = self._observers().get(event.get("model", ""))
        if observer is not None and _checks_events(observer):
            user = self.scope.get("user")
            if not await database_sync_to_async(_permitted)(observer, user, event):
                return
        await self.send_json(self.model_event_content(event))

    async def model_created(self, event: Message) -> None:
        await self.forward_model_event(event)

    async def model_updated(self, event: Message) -> None:
        await self.forward_model_event(event)

    async def model_deleted(self, event: Message) -> None:
        await self.forward_model_event(event)


class ObserverMixin(_Subscriptions):
    """:class:`AsyncObserverMixin` for the sync
    :class:`~channels.generic.websocket.JsonWebsocketConsumer`: the same methods, plain
    functions, run in the consumer's worker thread."""

    if TYPE_CHECKING:  # provided by the consumer class this is mixed into

        def send_json(self, content: Any, close: bool | int = False) -> None: ...

        def group_join(self, group: str, after: object = None) -> GroupHistory: ...

        def group_leave(self, group: str) -> None: ...

    def subscribe(
        self,
        observer: ObserverLike,
        target: models.Model | Iterable[models.Model] | None = None,
        /,
        *,
        after: object = None,
        **filters: Any,
    ) -> Subscription:
        """Join the groups for ``target`` or ``filters`` (see
        :meth:`AsyncObserverMixin.subscribe`)."""
        resolved = _observer(observer)
        groups = _subscription(resolved, self.scope.get("user"), target, filters)
        positions = _positions(groups, after)
        self._remember(resolved)
        histories = {group: self.group_join(group, positions.get(group)) for group in groups}
        return Subscription(groups, histories)

    def unsubscribe(self, subscription: Subscription | Iterable[str]) -> None:
        """Leave the groups of a subscription (or the groups named)."""
        groups = subscription.groups if isinstance(subscription, Subscription) else subscription
        for group in list(groups):
            self.group_leave(group)

    def forward_model_event(self, event: Message) -> None:
        """Send ``event`` to the client if the observer of its model permits."""
        observer = self._observers().get(event.get("model", ""))
        if (
            observer is not None
            and _checks_events(observer)
            and not _permitted(observer, self.scope.get("user"), event)
        ):
            return
        self.send_json(self.model_event_content(event))

    def model_created(self, event: Message) -> None:
        self.forward_model_event(event)

    def model_updated(self, event: Message) -> None:
        self.forward_model_event(event)

    def model_deleted(self, event: Message) -> None:
        self.forward_model_event(event)
