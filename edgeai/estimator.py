"""The duck-typed estimator contract of Sedna workers.

An estimator is a class or an instance with ``load(model_url)``, ``predict(data, **kw)``, ``train(...)`` or
``fit(...)``, ``evaluate(data, **kw)`` and ``save(model_path)``. Passing the class defers construction to the first
use, as Sedna does. Keyword arguments are filtered to what each method accepts, so a worker can pass extra context
to every estimator without breaking the ones that do not want it.
"""

from __future__ import annotations

import inspect
from typing import Any


class EstimatorError(RuntimeError):
    """The estimator lacks a method the job needs, or one of its methods failed; the message says which."""


class Estimator:
    """A wrapper that calls a duck-typed estimator with only the arguments it takes."""

    def __init__(self, estimator: Any) -> None:
        if estimator is None:
            raise EstimatorError("no estimator given")
        self._given = estimator
        self._instance: Any = None if inspect.isclass(estimator) else estimator

    @property
    def instance(self) -> Any:
        if self._instance is None:
            self._instance = self._given()
        return self._instance

    @property
    def name(self) -> str:
        target = self._given if inspect.isclass(self._given) else type(self._given)
        return f"{target.__module__}.{target.__qualname__}"

    def has(self, method: str) -> bool:
        return callable(getattr(self.instance, method, None))

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self.instance, method, None)
        if not callable(fn):
            raise EstimatorError(f"estimator {self.name} has no {method}() method")
        return fn(*args, **_accepted(fn, kwargs))

    def load(self, model_url: str) -> None:
        if not self.has("load"):
            raise EstimatorError(f"estimator {self.name} has no load() method; it cannot load {model_url}")
        fn = self.instance.load
        params = _parameters(fn)
        if params is None or "model_url" in params:
            fn(model_url=model_url)
        else:
            fn(model_url)

    def predict(self, data: Any, **kwargs: Any) -> Any:
        return self.call("predict", data, **kwargs)

    def train(self, train_data: Any, valid_data: Any = None, **kwargs: Any) -> Any:
        method = "train" if self.has("train") else "fit" if self.has("fit") else None
        if method is None:
            raise EstimatorError(f"estimator {self.name} has neither train() nor fit()")
        fn = getattr(self.instance, method)
        params = _parameters(fn)
        if params is not None and "valid_data" not in params and not _has_var_kw(fn):
            return fn(train_data, **_accepted(fn, kwargs))
        return fn(train_data, valid_data=valid_data, **_accepted(fn, kwargs))

    def evaluate(self, data: Any, **kwargs: Any) -> Any:
        return self.call("evaluate", data, **kwargs)

    def save(self, model_path: str) -> Any:
        return self.call("save", model_path)


def _parameters(fn: Any) -> dict[str, inspect.Parameter] | None:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


def _has_var_kw(fn: Any) -> bool:
    params = _parameters(fn)
    return params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _accepted(fn: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    if not kwargs or _has_var_kw(fn):
        return kwargs
    params = _parameters(fn) or {}
    return {k: v for k, v in kwargs.items() if k in params}
