"""Sedna's ``JointInference``: the edge model answers, hard examples go to the big model.

``JointInference(estimator, hard_example_mining=None).inference(data)`` returns Sedna's
``[is_hard_example, final_result, edge_result, cloud_result]``. Counters go to the local controller every
``LC_PERIOD`` seconds (see :mod:`edgeai.lc_client`); a big model that is down or slow costs at most
``BIG_MODEL_TIMEOUT`` seconds (default 1) per attempt and the edge result stands in, counted as a fallback.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from typing import Any

from edgeai.big_model import BigModelService
from edgeai.class_factory import ClassFactory, ClassType
from edgeai.config import ConfigError, Context, WorkerEnv
from edgeai.estimator import Estimator
from edgeai.hem import HemFilter, from_config
from edgeai.lc_client import KIND_JOINT_INFERENCE, LCReporter, now_iso
from edgeai.model_client import CloudUnavailable, ModelClient

log = logging.getLogger(__name__)

__all__ = ["BigModelService", "JointInference"]


def resolve_post_process(post_process: Any) -> Callable[[Any], Any] | None:
    """A callable, or the alias of a class registered as ``ClassType.CALLBACK`` (as Sedna resolves strings)."""
    if post_process is None:
        return None
    if callable(post_process):
        return post_process  # type: ignore[no-any-return]
    if isinstance(post_process, str):
        cls = ClassFactory.get_cls(ClassType.CALLBACK, post_process)
        fn = cls()
        if callable(fn):
            return fn  # type: ignore[no-any-return]
    raise ConfigError(f"post_process {post_process!r}: expected a callable or a registered callback alias")


class JointInference:
    """Edge worker of a joint inference service."""

    def __init__(
        self,
        estimator: Any = None,
        hard_example_mining: dict[str, Any] | None = None,
        config: WorkerEnv | None = None,
    ) -> None:
        self.env = config or WorkerEnv.from_env()
        self.estimator = Estimator(estimator)
        if self.env.model_url:
            self.estimator.load(self.env.model_url)
        hem = hard_example_mining if hard_example_mining is not None else self.env.hem_config()
        self.hard_example_mining_algorithm: HemFilter | None = from_config(hem)
        self.cloud = ModelClient(
            self.env.job_name, self.env.big_model_ip, self.env.big_model_port, self.env.big_model_timeout_s
        )
        self._lock = threading.Lock()
        self.inference_number = 0
        self.hard_example_number = 0
        self.cloud_number = 0
        self.fallback_number = 0
        self.start_time = now_iso()
        #: extra ``ownerInfo`` entries a worker wants reported (e.g. its stream's state); shown as CR metrics.
        self.extra_info: dict[str, Any] = {}
        self.lc_reporter = LCReporter(self.env, KIND_JOINT_INFERENCE, "inference", self.owner_info)
        self.lc_reporter.start()

    @classmethod
    def get_hem_algorithm_from_config(cls, **param: Any) -> dict[str, Any] | None:
        """``{"method", "param"}`` from ``HEM_NAME``/``HEM_PARAMETERS``; keyword arguments override the CR's.

        A class method, as in Sedna, whose examples call it before building the worker.
        """
        return WorkerEnv.from_env().hem_config(**param)

    def owner_info(self) -> dict[str, Any]:
        with self._lock:
            n, hard = self.inference_number, self.hard_example_number
            info: dict[str, Any] = {
                "startTime": self.start_time,
                "updateTime": now_iso(),
                "inferenceNumber": n,
                "hardExampleNumber": hard,
                "uploadCloudRatio": round(hard / n, 4) if n else 0.0,
                "cloudInferenceNumber": self.cloud_number,
                "cloudFallbackNumber": self.fallback_number,
            }
        info.update(self.extra_info)
        return info

    def inference(self, data: Any = None, post_process: Any = None, **kwargs: Any) -> list[Any]:
        """``[is_hard_example, final_result, edge_result, cloud_result]`` for one input."""
        callback = resolve_post_process(post_process)
        res = self.estimator.predict(data, **kwargs)
        edge_result = copy.deepcopy(res)
        if callback is not None:
            res = callback(res)
        is_hard = bool(self.hard_example_mining_algorithm(res)) if self.hard_example_mining_algorithm else False
        cloud_result = None
        answered = fell_back = False
        if is_hard:
            try:
                cloud_result = self.cloud.inference(data, **kwargs)["result"]
            except CloudUnavailable as exc:
                fell_back = True
                log.debug("cloud inference failed, the edge result stands: %s", exc)
            else:
                answered = True
                res = cloud_result
        with self._lock:
            self.inference_number += 1
            self.hard_example_number += is_hard
            self.cloud_number += answered
            self.fallback_number += fell_back
        return [is_hard, res, edge_result, cloud_result]

    def close(self) -> None:
        """Send the final counters and release the connection to the big model."""
        self.lc_reporter.close()
        self.cloud.close()


# Sedna's scripts also read parameters through the job module.
get_parameters = Context.get_parameters
