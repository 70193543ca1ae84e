"""Hard-example mining: decide from an edge model's output whether the cloud model should answer.

Filters are registered in :class:`~edgeai.class_factory.ClassFactory` under ``ClassType.HEM`` with Sedna's
aliases, and a CR names one in ``hardExampleMining.name`` with string parameters. The formulas are Sedna's
(``../shared/SEDNA.md`` 2.3); where Sedna crashes we answer, and say so here:

- ``CrossEntropy``: a probability of 0 contributes 0 (the limit of p ln p), not a math domain error; a single class
  is full confidence (1.0), not a division by zero.
- ``Threshold``: a flat list of numbers is taken as a list of scores, not a TypeError.
- Every filter: parameters given as strings (as CRs give them) are converted, and a parameter that is not a number,
  out of range or unknown is refused when the filter is built, naming the filter and the parameter.
- Input a filter cannot judge (empty, not numbers, scores outside [0, 1]) is not a hard example, as in Sedna.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from edgeai.class_factory import ClassFactory, ClassType
from edgeai.config import ConfigError

HemFilter = Callable[[Any], bool]


class BaseFilter:
    """A hard-example filter: ``filter(edge_result) -> bool``."""

    #: parameter name -> (default, lowest, highest)
    PARAMS: ClassVar[dict[str, tuple[float, float, float]]] = {}
    alias: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            known = ", ".join(self.PARAMS) or "none"
            raise ConfigError(f"hard example mining {self.alias}: unknown parameter {unknown[0]!r}; known: {known}")
        self.params: dict[str, float] = {}
        for name, (default, low, high) in self.PARAMS.items():
            raw = params.get(name, default)
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ConfigError(f"hard example mining {self.alias}: {name}={raw!r} is not a number") from None
            if not (low <= value <= high) or math.isnan(value):
                raise ConfigError(f"hard example mining {self.alias}: {name}={raw!r} is outside [{low}, {high}]")
            self.params[name] = value

    def __call__(self, infer_result: Any = None) -> bool:
        raise NotImplementedError


def _numbers(values: Iterable[Any]) -> list[float] | None:
    out: list[float] = []
    for v in values:
        if isinstance(v, bool):
            return None
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        if math.isnan(f):
            return None
        out.append(f)
    return out


def _flat(result: Any) -> list[Any] | None:
    """A 1-D sequence of the result (a numpy array, a list, a tuple), or None."""
    tolist = getattr(result, "tolist", None)
    if callable(tolist):
        result = tolist()
    if isinstance(result, (list, tuple)):
        return list(result)
    return None


def _scores(result: Any) -> list[float] | None:
    """Box scores: index 4 of each ``[x1, y1, x2, y2, score, label]``, or the numbers of a flat list."""
    items = _flat(result)
    if not items:
        return None
    if all(isinstance(b, (list, tuple)) or hasattr(b, "tolist") for b in items):
        boxes = [_flat(b) for b in items]
        if any(b is None or len(b) < 5 for b in boxes):
            return None
        return _numbers(b[4] for b in boxes if b is not None)
    return _numbers(items)


@ClassFactory.register(ClassType.HEM, alias="Threshold")
class ThresholdFilter(BaseFilter):
    """Hard when the mean box score is below ``threshold``."""

    alias = "Threshold"
    PARAMS: ClassVar[dict[str, tuple[float, float, float]]] = {"threshold": (0.5, 0.0, 1.0)}

    def __call__(self, infer_result: Any = None) -> bool:
        scores = _scores(infer_result)
        if not scores:
            return False
        return sum(scores) / len(scores) < self.params["threshold"]


@ClassFactory.register(ClassType.HEM, alias="CrossEntropy")
class CrossEntropyFilter(BaseFilter):
    """Hard when the confidence ``1 - H(p) / ln n`` of class probabilities is below ``threshold_cross_entropy``."""

    alias = "CrossEntropy"
    PARAMS: ClassVar[dict[str, tuple[float, float, float]]] = {"threshold_cross_entropy": (0.5, 0.0, 1.0)}

    @staticmethod
    def confidence(probs: list[float]) -> float:
        n = len(probs)
        if n == 1:
            return 1.0
        entropy = -sum(p * math.log(p) for p in probs if p > 0.0)
        return 1.0 - entropy / math.log(n)

    def __call__(self, infer_result: Any = None) -> bool:
        items = _flat(infer_result)
        probs = _numbers(items) if items else None
        if not probs or any(p < 0.0 or p > 1.0 for p in probs):
            return False
        return self.confidence(probs) < self.params["threshold_cross_entropy"]


@ClassFactory.register(ClassType.HEM, alias="IBT")
class IBTFilter(BaseFilter):
    """Image-box threshold: hard when the share of boxes scoring at most ``threshold_box`` reaches
    ``1 - threshold_img``."""

    alias = "IBT"
    PARAMS: ClassVar[dict[str, tuple[float, float, float]]] = {
        "threshold_img": (0.5, 0.0, 1.0),
        "threshold_box": (0.5, 0.0, 1.0),
    }

    def __call__(self, infer_result: Any = None) -> bool:
        scores = _scores(infer_result)
        if not scores or any(s < 0.0 or s > 1.0 for s in scores):
            return False
        low = sum(1 for s in scores if s <= self.params["threshold_box"])
        return low / len(scores) >= 1.0 - self.params["threshold_img"]


@ClassFactory.register(ClassType.HEM, alias="Random")
class RandomFilter(BaseFilter):
    """Hard with probability ``random_ratio``; ``seed`` makes the choice repeatable."""

    alias = "Random"
    PARAMS: ClassVar[dict[str, tuple[float, float, float]]] = {
        "random_ratio": (0.3, 0.0, 1.0),
        "seed": (-1.0, -1.0, 2.0**32),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        seed = self.params["seed"]
        self._rng = random.Random(None if seed < 0 else int(seed))

    def __call__(self, infer_result: Any = None) -> bool:
        return self._rng.random() < self.params["random_ratio"]


@ClassFactory.register(ClassType.HEM, alias="CloudOnly")
class CloudOnlyFilter(BaseFilter):
    """Every example is hard: the cloud answers everything."""

    alias = "CloudOnly"

    def __call__(self, infer_result: Any = None) -> bool:
        return True


@ClassFactory.register(ClassType.HEM, alias="EdgeOnly")
class EdgeOnlyFilter(BaseFilter):
    """No example is hard: the edge answers everything."""

    alias = "EdgeOnly"

    def __call__(self, infer_result: Any = None) -> bool:
        return False


def make_filter(name: str, params: Mapping[str, Any] | None = None) -> HemFilter:
    """The filter registered as ``name``, built with ``params`` (strings allowed)."""
    try:
        cls = ClassFactory.get_cls(ClassType.HEM, name)
    except ValueError as exc:
        raise ConfigError(f"hard example mining: {exc}") from None
    try:
        filt = cls(**dict(params or {}))
    except TypeError as exc:
        raise ConfigError(f"hard example mining {name}: {exc}") from None
    if not callable(filt):
        raise ConfigError(f"hard example mining {name}: {cls.__qualname__} instances are not callable")
    return filt  # type: ignore[no-any-return]


def from_config(hem: Mapping[str, Any] | None) -> HemFilter | None:
    """A filter from Sedna's ``{"method": NAME, "param": {...}}`` form (or None for none)."""
    if not hem:
        return None
    method = hem.get("method")
    if not method:
        raise ConfigError(f"hard example mining: no 'method' in {dict(hem)!r}")
    return make_filter(str(method), hem.get("param") or {})
