"""``ModelObserver``: committed model changes become group messages, by 1.x binding's rule."""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal, cast

from django.apps import apps
from django.core import serializers
from django.db import models, router
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

from .. import DEFAULT_CHANNEL_LAYER
from ..types import Message
from ._sending import Send, queue_after_commit, resolve_layer, validate_message

__all__ = ["ACTIONS", "Action", "ModelObserver", "registered_observers"]

Action = Literal["created", "updated", "deleted"]
ACTIONS: tuple[Action, ...] = ("created", "updated", "deleted")

_DEFAULT_TYPES: Mapping[Action, str] = MappingProxyType(
    {"created": "model.created", "updated": "model.updated", "deleted": "model.deleted"}
)

# Where an instance carries what its pre_* signals saw until the post_* signal, per observer.
_OLD_GROUPS = "_channels_observer_old_groups"
_M2M_BEFORE = "_channels_observer_m2m_before"

_lock = threading.Lock()
_registry: dict[str, ModelObserver] = {}


def registered_observers() -> list[ModelObserver]:
    """The observers listening now, in registration order."""
    with _lock:
        return list(_registry.values())


class ModelObserver(abc.ABC):
    """Turns committed changes of :attr:`model` into messages to the groups that care.

    Subclass it, set :attr:`model` and define :meth:`groups`; defining the class
    registers it (import the module from your app's ``AppConfig.ready()``). After each
    commit, groups the instance *left* get ``deleted``, groups it *stayed in* get
    ``updated``, and groups it *joined* get ``created``; a new instance joins all its
    groups, a deleted one leaves them. Each message is ``{"type": message_types[action],
    "model": "app_label.modelname", "pk": pk, "data": serialize(instance, action)}``.

    Only the class that sets ``model`` in its own body registers: a subclass that merely
    inherits it does not (it would send every message twice).
    """

    #: The model observed: a model class, or ``"app_label.ModelName"`` (resolved lazily,
    #: so an observer module may be imported before the app registry is ready).
    model: ClassVar[type[models.Model] | str | None] = None
    #: The ``type`` of each action's messages; a consumer handles ``model.created`` with
    #: its ``model_created`` method. Override all three to tell observers apart.
    message_types: ClassVar[Mapping[Action, str]] = _DEFAULT_TYPES
    #: The channel layer messages go to.
    channel_layer_alias: ClassVar[str] = DEFAULT_CHANNEL_LAYER

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("model") is not None:
            cls.register()

    # -- what subclasses define ------------------------------------------------------------

    @abc.abstractmethod
    def groups(self, instance: Any) -> Iterable[str]:
        """The groups that care about ``instance`` as it is now (in the database's view
        inside the current transaction). Called before and after each change."""

    def serialize(self, instance: Any, action: Action) -> Any:
        """What the groups receive as ``data``: JSON-ready values. By default every
        concrete field, as Django's JSON serializer writes them (override for speed and
        to choose what clients may see)."""
        import json

        fields: dict[str, Any] = json.loads(serializers.serialize("json", [instance]))[0]["fields"]
        return fields

    def subscription_groups(self, **filters: Any) -> Iterable[str]:
        """The groups a consumer joins to follow the set of instances ``filters`` describe
        (``subscribe(observer, room="lobby")``): override it to match :meth:`groups`.

        :raises TypeError: by default, naming this method.
        """
        raise TypeError(
            f"{type(self).__qualname__} cannot subscribe by filters {sorted(filters)}: define "
            "subscription_groups(**filters) to name the groups such a subscriber joins"
        )

    def has_permission(self, user: Any, action: str, instance: Any) -> bool:
        """Whether ``user`` may see ``instance``: asked with ``action`` ``"subscribe"`` when
        a consumer subscribes (``instance`` is ``None`` for a subscription by filters), and
        with ``"created"``, ``"updated"`` or ``"deleted"`` for each event it would forward
        (``instance`` from :meth:`event_instance`). Runs in a thread; may query."""
        return True

    def event_instance(self, event: Message) -> Any:
        """The instance :meth:`has_permission` judges an event by: for ``created`` and
        ``updated`` the row as it is now (or an unsaved stand-in with just the pk if it is
        gone), for ``deleted`` the stand-in. Override to build it from ``event["data"]``
        without a query. Only called when :meth:`has_permission` is overridden."""
        model = self.model_class()
        if event["type"] != self.message_types["deleted"]:
            found = model._default_manager.filter(pk=event["pk"]).first()
            if found is not None:
                return found
        return model(pk=event["pk"])

    # -- registration ----------------------------------------------------------------------

    @classmethod
    def register(cls) -> None:
        """Start listening (done when the class is defined; again after :meth:`unregister`).

        A class of the same module and name registered before is unregistered first, so
        reloading a module never doubles the messages.

        :raises TypeError: if ``model``, ``message_types`` or the class is malformed.
        """
        _check_model(cls, cls.model)
        _check_message_types(cls)
        # Not left to ABCMeta: it marks the class abstract only after __init_subclass__.
        if cls.groups is ModelObserver.groups:
            raise TypeError(
                f"{cls.__qualname__} is abstract: define groups(self, instance) to name the "
                "groups that care about an instance"
            )
        observer = cls()
        key = _key(cls)
        with _lock:
            previous = _registry.pop(key, None)
        if previous is not None:
            previous._disconnect()
        observer._connect()
        with _lock:
            _registry[key] = observer

    @classmethod
    def unregister(cls) -> None:
        """Stop listening (for tests, or to swap an observer out). Does nothing if the
        class is not registered."""
        with _lock:
            observer = _registry.pop(_key(cls), None)
        if observer is not None:
            observer._disconnect()

    @classmethod
    def registered(cls) -> ModelObserver:
        """The listening instance of this class.

        :raises LookupError: if the class is not registered.
        """
        with _lock:
            observer = _registry.get(_key(cls))
        if observer is None:
            raise LookupError(
                f"{cls.__qualname__} is not registered: set model in its class body, or call "
                f"{cls.__qualname__}.register()"
            )
        return observer

    @classmethod
    def notify(
        cls, instance_or_queryset: models.Model | Iterable[models.Model], action: Action
    ) -> None:
        """Announce ``action`` for instances changed where no signal fires
        (``QuerySet.update()``, ``bulk_create()``, raw SQL): each instance's current
        :meth:`groups` get the message, after the transaction commits.

        For ``deleted``, pass the instances as they were before the delete.

        :raises ValueError: for an unknown ``action``.
        :raises TypeError: for an instance of another model.
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        observer = cls.registered()
        model = observer.model_class()
        if isinstance(instance_or_queryset, models.Model):
            instances: Iterable[models.Model] = [instance_or_queryset]
        else:
            instances = instance_or_queryset
        by_alias: dict[str, list[Send]] = {}
        for instance in instances:
            if not isinstance(instance, model):
                raise TypeError(
                    f"{cls.__qualname__} observes {model._meta.label}, got "
                    f"{type(instance).__name__}"
                )
            using = instance._state.db or router.db_for_write(model, instance=instance)
            groups = set(observer.groups(instance))
            by_alias.setdefault(using, []).extend(
                observer._sends(instance, action, groups, observer._layer())
            )
        layer = observer._layer()
        for using, sends in by_alias.items():
            queue_after_commit(layer, sends, using)

    def model_class(self) -> type[models.Model]:
        """:attr:`model` as a class (a ``"app_label.ModelName"`` string looked up)."""
        model = type(self).model
        if isinstance(model, str):
            return apps.get_model(model)
        assert model is not None
        return model

    # -- signal receivers ------------------------------------------------------------------

    def _connect(self) -> None:
        sender = type(self).model
        uid = _key(type(self))
        pre_save.connect(self._pre_save, sender=sender, weak=False, dispatch_uid=uid)
        post_save.connect(self._post_save, sender=sender, weak=False, dispatch_uid=uid)
        pre_delete.connect(self._pre_delete, sender=sender, weak=False, dispatch_uid=uid)
        post_delete.connect(self._post_delete, sender=sender, weak=False, dispatch_uid=uid)
        # m2m_changed comes from the through model, of this model's relations or of another
        # model's relation to this one: one receiver for all, filtered in _m2m_changed.
        m2m_changed.connect(self._m2m_changed, weak=False, dispatch_uid=uid)

    def _disconnect(self) -> None:
        sender = type(self).model
        uid = _key(type(self))
        pre_save.disconnect(sender=sender, dispatch_uid=uid)
        post_save.disconnect(sender=sender, dispatch_uid=uid)
        pre_delete.disconnect(sender=sender, dispatch_uid=uid)
        post_delete.disconnect(sender=sender, dispatch_uid=uid)
        m2m_changed.disconnect(dispatch_uid=uid)

    def _stash(self, instance: models.Model, name: str) -> dict[str, Any]:
        stash: dict[str, Any] = instance.__dict__.setdefault(name, {})
        return stash

    def _pre_save(
        self, sender: Any, instance: models.Model, raw: bool, using: str, **_: Any
    ) -> None:
        if raw:
            return
        old: set[str] = set()
        if instance.pk is not None:
            # The row as committed so far, not the edited instance: its groups are the ones
            # the instance is leaving or staying in.
            stored = type(instance)._base_manager.using(using).filter(pk=instance.pk).first()
            if stored is not None:
                old = set(self.groups(stored))
        self._stash(instance, _OLD_GROUPS)[_key(type(self))] = old

    def _post_save(
        self, sender: Any, instance: models.Model, created: bool, raw: bool, using: str, **_: Any
    ) -> None:
        if raw:
            return
        old: set[str] = self._stash(instance, _OLD_GROUPS).pop(_key(type(self)), set())
        if created:
            old = set()
        self._queue(instance, old, set(self.groups(instance)), using)

    def _pre_delete(self, sender: Any, instance: models.Model, using: str, **_: Any) -> None:
        self._stash(instance, _OLD_GROUPS)[_key(type(self))] = set(self.groups(instance))

    def _post_delete(self, sender: Any, instance: models.Model, using: str, **_: Any) -> None:
        old: set[str] = self._stash(instance, _OLD_GROUPS).pop(_key(type(self)), set())
        self._queue(instance, old, set(), using)

    def _m2m_changed(
        self,
        sender: Any,
        instance: models.Model,
        action: str,
        model: type[models.Model],
        pk_set: set[Any] | None,
        using: str,
        **_: Any,
    ) -> None:
        observed = self.model_class()
        mine = isinstance(instance, observed)
        theirs = issubclass(model, observed)
        if not (mine or theirs):
            return
        key = _key(type(self))
        if action.startswith("pre_"):
            affected: list[models.Model] = [instance] if mine else []
            if theirs:
                pks = (
                    pk_set if pk_set is not None else _related_pks(sender, instance, model, using)
                )
                affected.extend(model._base_manager.using(using).filter(pk__in=pks))
            self._stash(instance, _M2M_BEFORE)[key] = [
                (obj, set(self.groups(obj))) for obj in affected
            ]
            return
        before: list[tuple[models.Model, set[str]]] = self._stash(instance, _M2M_BEFORE).pop(
            key, []
        )
        for obj, old in before:
            self._queue(obj, old, set(self.groups(obj)), using)

    # -- messages --------------------------------------------------------------------------

    def _layer(self) -> Any:
        return resolve_layer(type(self).channel_layer_alias, type(self).__qualname__)

    def _queue(self, instance: models.Model, old: set[str], new: set[str], using: str) -> None:
        layer = self._layer()
        sends: list[Send] = []
        for action, groups in (
            ("deleted", old - new),
            ("updated", old & new),
            ("created", new - old),
        ):
            sends.extend(self._sends(instance, cast(Action, action), groups, layer))
        queue_after_commit(layer, sends, using)

    def _sends(
        self, instance: models.Model, action: Action, groups: set[str], layer: Any
    ) -> list[Send]:
        if not groups:
            return []
        message: Message = {
            "type": type(self).message_types[action],
            "model": instance._meta.label_lower,
            "pk": _pk_value(instance.pk),
            "data": self.serialize(instance, action),
        }
        ordered = sorted(groups)
        name = type(self).__qualname__
        for group in ordered:
            validate_message(layer, group, message, name)
        return [(group, message) for group in ordered]


def _key(cls: type[ModelObserver]) -> str:
    return f"channels.observers:{cls.__module__}.{cls.__qualname__}"


def _pk_value(pk: Any) -> Any:
    # Integers and strings travel as they are; anything else (UUIDs...) as its str().
    if pk is None or isinstance(pk, (int, str)):
        return pk
    return str(pk)


def _related_pks(
    through: type[models.Model], instance: models.Model, model: type[models.Model], using: str
) -> list[Any]:
    """Before a reverse ``clear()`` (Django gives no pk set): the pks of ``model`` rows
    related to ``instance`` through ``through``."""
    source = [
        f for f in through._meta.fields if f.is_relation and f.related_model is type(instance)
    ]
    target = [f for f in through._meta.fields if f.is_relation and f.related_model is model]
    if len(source) != 1 or len(target) != 1:
        return []
    rows = through._base_manager.using(using).filter(**{source[0].name: instance.pk})
    return list(rows.values_list(target[0].attname, flat=True))


def _check_model(cls: type[ModelObserver], model: object) -> None:
    if isinstance(model, str):
        if model.count(".") != 1:
            raise TypeError(
                f"{cls.__qualname__}.model must be a model class or 'app_label.ModelName', "
                f"got {model!r}"
            )
        return
    if not (isinstance(model, type) and issubclass(model, models.Model)):
        raise TypeError(
            f"{cls.__qualname__}.model must be a model class or 'app_label.ModelName', got "
            f"{model!r}"
        )
    if model._meta.abstract:
        raise TypeError(
            f"{cls.__qualname__}.model is abstract ({model.__name__}): no rows to observe"
        )


def _check_message_types(cls: type[ModelObserver]) -> None:
    types = cls.message_types
    if not isinstance(types, Mapping) or set(types) != set(ACTIONS):
        raise TypeError(
            f"{cls.__qualname__}.message_types must map exactly {list(ACTIONS)} to message "
            f"types, got {types!r}"
        )
    values = [types[action] for action in ACTIONS]
    if any(not isinstance(v, str) or not v for v in values) or len(set(values)) != 3:
        raise TypeError(
            f"{cls.__qualname__}.message_types must be three different non-empty strings, got "
            f"{dict(types)!r}"
        )
