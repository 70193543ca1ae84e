"""Eval worker of an incremental learning job: every model of ``MODEL_URLS`` on ``TEST_DATASET_URL``."""

from __future__ import annotations

from edgeai.config import Context
from edgeai.estimator import EstimatorError
from edgeai.incremental_learning import IncrementalLearning
from edgeai.models import SklearnEstimator
from edgeai.workers.common import fatal, setup


def main() -> None:
    log = setup("eval-worker")
    data = Context.get_parameters("TEST_DATASET_URL")
    if not data:
        fatal("TEST_DATASET_URL is not set")
    try:
        results = IncrementalLearning(SklearnEstimator()).evaluate(data)
    except EstimatorError as exc:
        fatal(str(exc), 1)
    for r in results:
        log.info("%s: %s", r["url"], r["metrics"])


if __name__ == "__main__":
    main()
