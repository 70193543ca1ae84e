"""Cloud worker of a joint inference service: the big model behind Sedna's ``BigModelService``."""

from __future__ import annotations

from edgeai.big_model import BigModelService
from edgeai.estimator import EstimatorError
from edgeai.models import SklearnEstimator
from edgeai.workers.common import fatal, setup


def main() -> None:
    setup("cloudworker")
    try:
        BigModelService(SklearnEstimator()).start()
    except EstimatorError as exc:
        fatal(str(exc))
    except OSError as exc:
        fatal(f"cannot serve the big model: {exc}")


if __name__ == "__main__":
    main()
