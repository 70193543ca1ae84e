"""Ready-to-run sample jobs: generated models, datasets and Sedna CRs wired to a device stream.

``write_sample(folder, stream_url, ...)`` writes a job folder that ``mapper ai run -f`` runs as it is:

- ``models/``: a linear edge model and a boosted-trees cloud model for the bearing scenario, and a machine model
  trained before the drift (see :mod:`edgeai.scenarios`); trained here from generated data, nothing downloaded;
- ``data/machine.csv``: the incremental learning Dataset, a header line to start with;
- ``joint-inference.yaml`` and ``incremental-learning.yaml``: the CRs.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgeai import scenarios

API = "sedna.io/v1alpha1"


@dataclass(frozen=True)
class StreamParams:
    """Where a worker's device stream comes from (the ``STREAM_*`` parameters)."""

    url: str
    properties: str
    label: str | None = None
    window: str = "count:1"
    poll_seconds: float = 0.1
    idle_seconds: float = 10.0

    def env(self) -> list[dict[str, str]]:
        env = [
            {"name": "STREAM_URL", "value": self.url},
            {"name": "STREAM_PROPERTIES", "value": self.properties},
            {"name": "STREAM_WINDOW", "value": self.window},
            {"name": "STREAM_POLL_SECONDS", "value": str(self.poll_seconds)},
            {"name": "STREAM_IDLE_SECONDS", "value": str(self.idle_seconds)},
        ]
        if self.label:
            env.append({"name": "STREAM_LABEL", "value": self.label})
        return env


def train_models(folder: Path, seed: int = 7) -> dict[str, Path]:
    """Train the sample models on generated data and pickle them into ``folder``."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out: dict[str, Path] = {}

    def save(name: str, model: Any) -> None:
        path = folder / f"{name}.pkl"
        path.write_bytes(pickle.dumps(model))
        out[name] = path

    x, y = scenarios.bearing(4000, rng)
    save("bearing-edge", LogisticRegression(max_iter=500).fit(x, y))
    save("bearing-cloud", GradientBoostingClassifier(n_estimators=150, max_depth=3, random_state=seed).fit(x, y))
    x, y = scenarios.drifting_machine(3000, rng)
    save("machine-initial", LogisticRegression(max_iter=500).fit(x, y))
    # The big model of the machine has seen both halls.
    xd, yd = scenarios.drifting_machine(3000, rng, drifted=True)
    big = GradientBoostingClassifier(n_estimators=150, max_depth=3, random_state=seed)
    save("machine-cloud", big.fit(np.r_[x, xd], np.r_[y, yd]))
    return out


def _container(name: str, module: str, env: list[dict[str, str]], image: str) -> dict[str, Any]:
    return {
        "spec": {
            "containers": [
                {"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
                 "command": ["python", "-m", module], "env": env}
            ]
        }
    }  # fmt: skip


def model_doc(name: str, url: str, namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Model", "metadata": {"name": name, "namespace": namespace},
            "spec": {"url": url, "format": "pkl"}}  # fmt: skip


def joint_inference_docs(
    name: str,
    stream: StreamParams,
    edge_model: str,
    cloud_model: str,
    hem: str = "CrossEntropy",
    hem_params: dict[str, str] | None = None,
    image: str = "kubeedge-mapper:latest",
    namespace: str = "default",
) -> list[dict[str, Any]]:
    params = hem_params if hem_params is not None else {"threshold_cross_entropy": "0.5"}
    return [
        model_doc(f"{name}-edge", edge_model, namespace),
        model_doc(f"{name}-cloud", cloud_model, namespace),
        {
            "apiVersion": API,
            "kind": "JointInferenceService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "edgeWorker": {
                    "model": {"name": f"{name}-edge"},
                    "hardExampleMining": {
                        "name": hem, "parameters": [{"key": k, "value": v} for k, v in params.items()]},
                    "template": _container("edge", "edgeai.workers.ji_edge", stream.env(), image),
                },
                "cloudWorker": {
                    "model": {"name": f"{name}-cloud"},
                    "template": _container("cloud", "edgeai.workers.ji_cloud", [], image),
                },
            },
        },
    ]  # fmt: skip


def incremental_learning_docs(
    name: str,
    stream: StreamParams,
    initial_model: str,
    deployed_model: str,
    dataset_url: str,
    train_when: int = 100,
    deploy_delta: float = 0.05,
    check_period_s: int = 2,
    image: str = "kubeedge-mapper:latest",
    namespace: str = "default",
) -> list[dict[str, Any]]:
    infer_env = [*stream.env(), {"name": "HE_SAVED_URL", "value": dataset_url}]
    return [
        {"apiVersion": API, "kind": "Dataset", "metadata": {"name": f"{name}-data", "namespace": namespace},
         "spec": {"url": dataset_url, "format": "csv", "nodeName": "edge-node"}},
        model_doc(f"{name}-initial", initial_model, namespace),
        model_doc(f"{name}-deployed", deployed_model, namespace),
        {
            "apiVersion": API,
            "kind": "IncrementalLearningJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "dataset": {"name": f"{name}-data", "trainProb": 0.8},
                "initialModel": {"name": f"{name}-initial"},
                "outputDir": "output",
                "trainSpec": {
                    "template": _container("train", "edgeai.workers.il_train", [], image),
                    "trigger": {"checkPeriodSeconds": check_period_s,
                                "condition": {"operator": ">", "threshold": train_when, "metric": "num_of_samples"}},
                },
                "evalSpec": {"template": _container("eval", "edgeai.workers.il_eval", [], image)},
                "deploySpec": {
                    "model": {"name": f"{name}-deployed", "hotUpdateEnabled": True, "pollPeriodSeconds": 1},
                    "trigger": {"condition": {"operator": ">", "threshold": deploy_delta,
                                              "metric": "accuracy_delta"}},
                    "hardExampleMining": {"name": "CrossEntropy",
                                          "parameters": [{"key": "threshold_cross_entropy", "value": "0.5"}]},
                    "template": _container("infer", "edgeai.workers.il_infer", infer_env, image),
                },
            },
        },
    ]  # fmt: skip


def write_dataset(path: Path, features: tuple[str, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",".join([*features, "label"]) + "\n", encoding="utf-8")


def write_docs(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return path


def machine_replay(path: Path, before_s: float, after_s: float, period_s: float = 0.1, seed: int = 11) -> Path:
    """A recording of the drifting machine: ``before_s`` seconds before the drift, ``after_s`` after."""
    rng = np.random.default_rng(seed)
    n0, n1 = round(before_s / period_s), round(after_s / period_s)
    x0, y0 = scenarios.drifting_machine(n0, rng)
    x1, y1 = scenarios.drifting_machine(n1, rng, drifted=True)
    x, y = np.r_[x0, x1], np.r_[y0, y1]
    lines = ["temperature,vibration,fault"] + [f"{a:.2f},{b:.2f},{int(c)}" for (a, b), c in zip(x, y, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
