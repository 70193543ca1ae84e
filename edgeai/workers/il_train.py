"""Train worker of an incremental learning job: train on ``TRAIN_DATASET_URL`` from ``BASE_MODEL_URL``."""

from __future__ import annotations

from edgeai.config import Context
from edgeai.estimator import EstimatorError
from edgeai.incremental_learning import IncrementalLearning
from edgeai.models import SklearnEstimator
from edgeai.workers.common import fatal, setup


def main() -> None:
    log = setup("train-worker")
    data = Context.get_parameters("TRAIN_DATASET_URL")
    if not data:
        fatal("TRAIN_DATASET_URL is not set")
    try:
        metrics = IncrementalLearning(SklearnEstimator()).train(data)
    except EstimatorError as exc:
        fatal(str(exc), 1)
    log.info("trained: %s", metrics)


if __name__ == "__main__":
    main()
