"""Sedna's ``ClassFactory``: classes registered by type and alias, looked up by the name a CR gives.

Unlike Sedna's, registering a second class under a name already taken is an error (Sedna silently replaces the
first), unless ``replace=True`` says it is meant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")


class ClassType:
    """Registry types, with Sedna's names."""

    GENERAL = "general"
    HEM = "hard_example_mining"
    CALLBACK = "post_process_callback"
    STP = "self_taught_learning_plugin"


class ClassFactory:
    """Registry of classes by ``(type, alias)``."""

    __registry__: ClassVar[dict[str, dict[str, type[Any]]]] = {}

    @classmethod
    def register(
        cls, type_name: str = ClassType.GENERAL, alias: str | None = None, replace: bool = False
    ) -> Callable[[type[T]], type[T]]:
        """Class decorator: ``@ClassFactory.register(ClassType.HEM, alias="MyFilter")``."""

        def wrapper(t_cls: type[T]) -> type[T]:
            cls.register_cls(t_cls, type_name, alias, replace)
            return t_cls

        return wrapper

    @classmethod
    def register_cls(
        cls, t_cls: type[Any], type_name: str = ClassType.GENERAL, alias: str | None = None, replace: bool = False
    ) -> type[Any]:
        name = alias or t_cls.__name__
        table = cls.__registry__.setdefault(type_name, {})
        if name in table and table[name] is not t_cls and not replace:
            raise ValueError(
                f"{type_name} {name!r} is already registered ({table[name].__module__}.{table[name].__qualname__}); "
                "pick another alias or pass replace=True"
            )
        table[name] = t_cls
        return t_cls

    @classmethod
    def is_exists(cls, type_name: str, cls_name: str | None = None) -> bool:
        if cls_name is None:
            return type_name in cls.__registry__
        return cls_name in cls.__registry__.get(type_name, {})

    @classmethod
    def get_cls(cls, type_name: str, t_cls_name: str) -> type[Any]:
        table = cls.__registry__.get(type_name, {})
        if t_cls_name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise ValueError(f"no {type_name} named {t_cls_name!r}; known: {known}")
        return table[t_cls_name]

    @classmethod
    def names(cls, type_name: str) -> list[str]:
        return sorted(cls.__registry__.get(type_name, {}))
