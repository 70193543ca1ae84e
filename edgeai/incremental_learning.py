"""Sedna's ``IncrementalLearning``: the train, eval and inference workers of an incremental learning job.

- ``train(train_data, valid_data=None)``: train from ``BASE_MODEL_URL`` (if any), save to ``MODEL_URL``, report the
  model to the local controller (kind ``train``).
- ``evaluate(data)``: evaluate every model of ``MODEL_URLS`` (new first, then the deployed one), report the metrics
  as ``{name: [floats]}`` (kind ``eval``).
- ``inference(data)`` -> ``(infer_result, post_processed_result, is_hard_example)``; with hot update on, the model is
  reloaded in place when the controller points ``MODEL_HOT_UPDATE_CONFIG`` at a new one, without a restart.

Unlike Sedna's inference worker this one reports its counters (kind ``inference``), so the job's status shows
which model answers and how many hard examples it found.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from edgeai.config import WorkerEnv
from edgeai.estimator import Estimator, EstimatorError
from edgeai.hem import HemFilter, from_config
from edgeai.joint_inference import resolve_post_process
from edgeai.lc_client import KIND_INCREMENTAL_LEARNING, LCReporter, now_iso

log = logging.getLogger(__name__)


def model_format(url: str) -> str:
    suffix = Path(url).suffix.lstrip(".")
    return suffix or "dir"


def metrics_as_lists(metrics: Any) -> dict[str, list[float]]:
    """Metrics as Sedna's controller wants them: ``{name: [floats]}``."""
    if not isinstance(metrics, dict):
        raise EstimatorError(f"evaluate() must return a dict of metrics, got {type(metrics).__name__}")
    out: dict[str, list[float]] = {}
    for name, value in metrics.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        try:
            out[str(name)] = [float(v) for v in values]
        except (TypeError, ValueError):
            raise EstimatorError(f"metric {name!r}={value!r} is not a number or a list of numbers") from None
    return out


def read_hot_update_config(path: str) -> tuple[str, str] | None:
    """``(model_path, model_update_time)`` from a hot-update config file, or None if it is absent or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        model = cfg["model_config"]
        return str(model["model_path"]), str(model["model_update_time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class IncrementalLearning:
    """Worker API of an incremental learning job (one instance per worker process)."""

    def __init__(
        self,
        estimator: Any = None,
        hard_example_mining: dict[str, Any] | None = None,
        config: WorkerEnv | None = None,
    ) -> None:
        self.env = config or WorkerEnv.from_env()
        self.estimator = Estimator(estimator)
        hem = hard_example_mining if hard_example_mining is not None else self.env.hem_config()
        self.hard_example_mining_algorithm: HemFilter | None = from_config(hem)
        self._lock = threading.Lock()
        self.inference_number = 0
        self.hard_example_number = 0
        self.reloads = 0
        self.model_path: str | None = None
        self.model_update_time: str | None = None
        self.start_time = now_iso()
        self.extra_info: dict[str, Any] = {}
        self._reporter: LCReporter | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- train -------------------------------------------------------------------------------------------------
    def train(self, train_data: Any, valid_data: Any = None, post_process: Any = None, **kwargs: Any) -> Any:
        reporter = LCReporter(self.env, KIND_INCREMENTAL_LEARNING, "train", self._train_info)
        try:
            if self.env.base_model_url:
                self.estimator.load(self.env.base_model_url)
            res = self.estimator.train(train_data=train_data, valid_data=valid_data, **kwargs)
            callback = resolve_post_process(post_process)
            if callback is not None:
                res = callback(res)
            if not self.env.model_url:
                raise EstimatorError("MODEL_URL is not set: the train worker does not know where to save the model")
            os.makedirs(os.path.dirname(os.path.abspath(self.env.model_url)), exist_ok=True)
            self.estimator.save(self.env.model_url)
        except Exception as exc:
            self.extra_info["error"] = str(exc)
            reporter.report("failed")
            raise
        metrics = res if isinstance(res, dict) else {}
        result = {"format": model_format(self.env.model_url), "url": self.env.model_url, "metrics": metrics}
        reporter.report("completed", [result])
        return res

    def _train_info(self) -> dict[str, Any]:
        return {"startTime": self.start_time, "updateTime": now_iso(), **self.extra_info}

    # -- evaluate ----------------------------------------------------------------------------------------------
    def evaluate(self, data: Any, post_process: Any = None, **kwargs: Any) -> list[dict[str, Any]]:
        reporter = LCReporter(self.env, KIND_INCREMENTAL_LEARNING, "eval", self._train_info)
        urls = self.env.model_urls or ([self.env.model_url] if self.env.model_url else [])
        results: list[dict[str, Any]] = []
        try:
            if not urls:
                raise EstimatorError("MODEL_URLS is not set: nothing to evaluate")
            callback = resolve_post_process(post_process)
            for url in urls:
                self.estimator.load(url)
                metrics = self.estimator.evaluate(data, **kwargs)
                if callback is not None:
                    metrics = callback(metrics)
                results.append({"format": model_format(url), "url": url, "metrics": metrics_as_lists(metrics)})
        except Exception as exc:
            self.extra_info["error"] = str(exc)
            reporter.report("failed")
            raise
        reporter.report("completed", results)
        return results

    # -- inference ---------------------------------------------------------------------------------------------
    def start_inference(self) -> None:
        """Load the deployed model and start hot updates and reports (the first ``inference`` does it too)."""
        if self._reporter is not None:
            return
        self._reporter = LCReporter(self.env, KIND_INCREMENTAL_LEARNING, "inference", self.owner_info)
        first = None
        if self.env.model_hot_update and self.env.model_hot_update_config:
            first = read_hot_update_config(self.env.model_hot_update_config)
        if first is not None:
            self._load(*first)
        elif self.env.model_url:
            self._load(self.env.model_url, "")
        if self.env.model_hot_update and self.env.model_hot_update_config:
            self._poller = threading.Thread(target=self._poll, name="model-hot-update", daemon=True)
            self._poller.start()
        self._reporter.start()

    def _load(self, path: str, update_time: str) -> None:
        with self._lock:
            self.estimator.load(path)
            if self.model_path is not None:
                self.reloads += 1
            self.model_path, self.model_update_time = path, update_time
        log.info("model %s loaded (update time %s)", path, update_time or "-")

    def _poll(self) -> None:
        assert self.env.model_hot_update_config is not None
        while not self._stop.wait(self.env.model_poll_period_s):
            found = read_hot_update_config(self.env.model_hot_update_config)
            if found is None or found[1] == self.model_update_time:
                continue
            try:
                self._load(*found)
            except Exception as exc:  # keep answering with the model we have
                self.extra_info["error"] = f"hot update to {found[0]} failed: {exc}"
                log.error("hot update to %s failed, the current model stays: %s", found[0], exc)
                self.model_update_time = found[1]

    def owner_info(self) -> dict[str, Any]:
        with self._lock:
            n, hard = self.inference_number, self.hard_example_number
            info: dict[str, Any] = {
                "startTime": self.start_time,
                "updateTime": now_iso(),
                "inferenceNumber": n,
                "hardExampleNumber": hard,
                "modelUrl": self.model_path or "",
                "modelReloads": self.reloads,
            }
        info.update(self.extra_info)
        return info

    def inference(self, data: Any = None, post_process: Any = None, **kwargs: Any) -> tuple[Any, Any, bool]:
        """``(infer_result, post_processed_result, is_hard_example)`` with the currently deployed model."""
        self.start_inference()
        callback = resolve_post_process(post_process)
        with self._lock:
            infer_res = self.estimator.predict(data, **kwargs)
        res = callback(infer_res) if callback is not None else infer_res
        is_hard = bool(self.hard_example_mining_algorithm(res)) if self.hard_example_mining_algorithm else False
        with self._lock:
            self.inference_number += 1
            self.hard_example_number += is_hard
        return infer_res, res, is_hard

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        if self._reporter is not None:
            self._reporter.close()
