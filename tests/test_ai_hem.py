"""Hard-example mining: Sedna's formulas against values computed by hand, and the inputs that crash Sedna."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgeai.class_factory import ClassFactory, ClassType
from edgeai.config import ConfigError
from edgeai.hem import CrossEntropyFilter, make_filter


def box(score: float) -> list[float]:
    return [0.0, 0.0, 10.0, 10.0, score, 1.0]


# Threshold: hard iff mean(score) < threshold.
@pytest.mark.parametrize(
    ("boxes", "threshold", "hard"),
    [
        ([box(0.3), box(0.6)], "0.5", True),  # mean 0.45
        ([box(0.3), box(0.6)], "0.4", False),
        ([box(0.45), box(0.45)], 0.45, False),  # equal is not below
        ([box(0.9)], 0.95, True),
    ],
)
def test_threshold(boxes: list[list[float]], threshold: Any, hard: bool) -> None:
    assert make_filter("Threshold", {"threshold": threshold})(boxes) is hard


def test_threshold_takes_a_flat_list_of_scores_where_sedna_raises_typeerror() -> None:
    th = make_filter("Threshold", {"threshold": "0.5"})
    assert th([0.1, 0.2]) is True  # mean 0.15
    assert th(np.array([0.7, 0.9])) is False
    assert th([]) is False
    assert th(["high", "low"]) is False
    assert th([[0, 0, 1]]) is False  # a box without a score


# CrossEntropy: confidence = 1 - H(p)/ln(n); hard iff confidence < threshold.
@pytest.mark.parametrize(
    ("probs", "confidence"),
    [
        ([0.9, 0.05, 0.05], 0.641004),  # H = 0.394398, ln 3 = 1.098612
        ([0.4, 0.3, 0.3], 0.008841),  # H = 1.088900
        ([0.5, 0.5], 0.0),
        ([0.5, 0.5, 0.0], 0.369070),  # a zero probability: Sedna's math domain error; H = ln 2
        ([1.0, 0.0], 1.0),
        ([1.0], 1.0),  # one class: Sedna's ZeroDivisionError; full confidence
    ],
)
def test_cross_entropy_confidence(probs: list[float], confidence: float) -> None:
    assert CrossEntropyFilter.confidence(probs) == pytest.approx(confidence, abs=1e-6)


def test_cross_entropy_decisions() -> None:
    ce = make_filter("CrossEntropy", {"threshold_cross_entropy": "0.5"})
    assert ce([0.9, 0.05, 0.05]) is False
    assert ce([0.4, 0.3, 0.3]) is True
    assert ce([0.5, 0.5, 0.0]) is True
    assert ce([1.0]) is False
    assert ce(np.array([0.97, 0.03])) is False  # 1 - H/ln2 = 0.8056
    assert make_filter("CrossEntropy", {"threshold_cross_entropy": 0.65})([0.9, 0.05, 0.05]) is True
    # Outside [0, 1], empty or not numbers: not hard (as Sedna).
    assert ce([1.2, -0.2]) is False
    assert ce([]) is False
    assert ce(["a", "b"]) is False
    assert ce(None) is False


# IBT: hard iff #(score <= threshold_box) / #boxes >= 1 - threshold_img.
def test_ibt() -> None:
    boxes = [box(0.9), box(0.3), box(0.2), box(0.8)]  # 2 of 4 at or below 0.5
    assert make_filter("IBT", {"threshold_img": "0.5", "threshold_box": "0.5"})(boxes) is True  # 0.5 >= 0.5
    assert make_filter("IBT", {"threshold_img": "0.4", "threshold_box": "0.5"})(boxes) is False  # 0.5 >= 0.6
    assert make_filter("IBT", {"threshold_img": "0.9", "threshold_box": "0.2"})(boxes) is True  # 0.25 >= 0.1
    assert make_filter("IBT", {"threshold_img": "0.5", "threshold_box": "0.3"})([box(0.3)]) is True  # equal counts
    assert make_filter("IBT")([box(1.5), box(0.1)]) is False  # a score outside [0, 1]
    assert make_filter("IBT")([]) is False


def test_random_cloud_only_edge_only() -> None:
    assert not any(make_filter("Random", {"random_ratio": "0"})(None) for _ in range(200))
    assert all(make_filter("Random", {"random_ratio": "1"})(None) for _ in range(200))
    a = make_filter("Random", {"random_ratio": "0.3", "seed": "7"})
    b = make_filter("Random", {"random_ratio": "0.3", "seed": "7"})
    draws = [a(None) for _ in range(2000)]
    assert draws == [b(None) for _ in range(2000)]
    assert 0.25 < sum(draws) / len(draws) < 0.35  # a string ratio works (Sedna compares str < float and fails)
    assert make_filter("CloudOnly")([0.99, 0.01]) is True
    assert make_filter("EdgeOnly")([0.5, 0.5]) is False


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("Threshold", {"threshold": "high"}, "Threshold: threshold='high' is not a number"),
        ("Random", {"random_ratio": "1.5"}, r"Random: random_ratio='1.5' is outside \[0.0, 1.0\]"),
        ("IBT", {"threshold_im": "0.5"}, "IBT: unknown parameter 'threshold_im'; known: threshold_img, threshold_box"),
        ("Entropy", {}, "no hard_example_mining named 'Entropy'; known: .*CrossEntropy"),
    ],
)
def test_bad_parameters_are_refused_with_the_filter_and_parameter_named(
    name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_filter(name, params)


def test_custom_filter_registered_by_alias_and_duplicates_refused() -> None:
    @ClassFactory.register(ClassType.HEM, alias="TestMaxBelow")
    class MaxBelow:
        def __init__(self, limit: str = "0.8") -> None:
            self.limit = float(limit)

        def __call__(self, result: Any = None) -> bool:
            return bool(max(result) < self.limit)

    assert make_filter("TestMaxBelow", {"limit": "0.7"})([0.6, 0.4]) is True
    assert make_filter("TestMaxBelow")([0.9, 0.1]) is False
    with pytest.raises(ConfigError, match="TestMaxBelow"):
        make_filter("TestMaxBelow", {"nope": 1})

    with pytest.raises(ValueError, match="'TestMaxBelow' is already registered"):

        @ClassFactory.register(ClassType.HEM, alias="TestMaxBelow")
        class Other:
            pass

    assert ClassFactory.get_cls(ClassType.HEM, "TestMaxBelow") is MaxBelow
