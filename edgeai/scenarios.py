"""Generated device data with known ground truth, for the shipped samples, the demo, tests and benchmarks.

Both scenarios are a machine watched by sensors; the label is whether it is in fault (1) or not (0).

- :func:`bearing`: temperature, vibration and motor current with a non-linear fault rule. A linear edge model
  reaches about 83%, a boosted-trees cloud model about 94%: joint inference has something to win.
- :func:`drifting_machine`: temperature and vibration; at the drift the machine moves to a warmer hall and its
  vibration sensor is re-mounted, so the two regimes swap their vibration levels and crowd into the old model's
  uncertain zone. A model trained before the drift drops from about 97% to about 30%, and about 40% of the new
  samples look hard to it: incremental learning has something to find.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

BEARING_FEATURES = ("temperature", "vibration", "current")
MACHINE_FEATURES = ("temperature", "vibration")

Arrays = tuple[NDArray[np.float64], NDArray[np.int64]]


def bearing(n: int, rng: np.random.Generator) -> Arrays:
    t = rng.normal(55.0, 6.0, n)
    v = rng.gamma(4.0, 0.75, n)
    c = rng.normal(10.0, 2.0, n)
    score = (t - 55.0) / 6.0 + (v - 3.0) / 1.5 + 0.8 * ((c - 10.0) / 2.0) ** 2 - 1.0
    y = (score + rng.normal(0.0, 0.3, n) > 0).astype(np.int64)
    return np.c_[t, v, c], y


def drifting_machine(n: int, rng: np.random.Generator, drifted: bool = False) -> Arrays:
    y = rng.integers(0, 2, n).astype(np.int64)
    if not drifted:
        t = np.where(y == 1, rng.normal(62.0, 4.0, n), rng.normal(50.0, 4.0, n))
        v = np.where(y == 1, rng.normal(4.0, 0.8, n), rng.normal(2.5, 0.8, n))
    else:
        t = np.where(y == 1, rng.normal(58.0, 4.0, n), rng.normal(57.0, 4.0, n))
        v = np.where(y == 1, rng.normal(2.6, 0.5, n), rng.normal(4.4, 0.5, n))
    return np.c_[t, v], y
