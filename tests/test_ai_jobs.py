"""Sedna job objects and wire formats: triggers, CR validation, the local controller's route, the big model's route."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edgeai.big_model import BigModelService
from edgeai.config import WorkerEnv
from edgeai.controller import LocalController
from edgeai.crs import CRError, Trigger, load_job_file
from edgeai.lc_client import WorkerMessage
from edgeai.model_client import CloudUnavailable, ModelClient
from edgeai.trigger import TriggerState, compare, in_window, metric_value
from tests.brokers import free_port


# -- triggers -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "op", "threshold", "expected"),
    [
        (501, "gt", 500, True), (500, ">", 500, False), (500, "ge", 500, True), (499.9, ">=", 500, False),
        (0.1 + 0.2, "eq", 0.3, True), (0.3000001, "=", 0.3, True), (0.31, "==", 0.3, False),
        (0.3000001, "ne", 0.3, False), (0.4, "!=", 0.3, True), (0.3, "le", 0.3, True), (0.31, "<=", 0.3, False),
        (0.2999999, "lt", 0.3, False), (0.29, "<", 0.3, True),
    ],
)  # fmt: skip
def test_operators_with_sedna_epsilon(value: float, op: str, threshold: float, expected: bool) -> None:
    assert compare(value, op, threshold) is expected


def test_metric_indexing_and_lists() -> None:
    metrics = {"num_of_samples": 12, "precision_delta": [0.2, 0.05], "recall_delta": [0.15]}
    assert metric_value(metrics, "num_of_samples") == 12
    assert metric_value(metrics, "precision_delta[1]") == 0.05
    assert metric_value(metrics, "recall_delta") == 0.15  # Sedna reads a list without index as 0
    with pytest.raises(ValueError, match=r"precision_delta has 2 values; name one, e.g. precision_delta\[0\]"):
        metric_value(metrics, "precision_delta")
    with pytest.raises(ValueError, match=r"precision_delta\[2\]: precision_delta has 2 values"):
        metric_value(metrics, "precision_delta[2]")
    with pytest.raises(ValueError, match=r"metric 'f1' is not among the job's metrics \(num_of_samples"):
        metric_value(metrics, "f1")


def test_timer_windows_wrap_midnight() -> None:
    assert in_window("02:00", "24:00", "23:59") and not in_window("02:00", "24:00", "01:59")
    assert in_window("22:00", "02:00", "23:30") and in_window("22:00", "02:00", "01:00")
    assert not in_window("22:00", "02:00", "03:00") and not in_window("22:00", "02:00", "21:59")


def test_trigger_honours_check_period_and_timer() -> None:
    now = [1000.0]
    wall = [datetime(2026, 11, 25, 23, 30)]
    spec = Trigger.model_validate(
        {
            "checkPeriodSeconds": 30,
            "timer": {"start": "22:00", "end": "02:00"},
            "condition": {"operator": "gt", "threshold": 100, "metric": "num_of_samples"},
        }
    )
    trig = TriggerState(spec, clock=lambda: now[0], wall=lambda: wall[0])
    assert trig.evaluate({"num_of_samples": 50}) is False  # checked: condition false
    assert trig.evaluate({"num_of_samples": 150}) is False  # not checked again within 30 s
    now[0] += 29.9
    assert trig.evaluate({"num_of_samples": 150}) is False
    now[0] += 0.1
    assert trig.evaluate({"num_of_samples": 150}) is True  # 30 s later
    now[0] += 30
    wall[0] = datetime(2026, 11, 26, 3, 0)
    assert trig.evaluate({"num_of_samples": 150}) is False  # outside the window
    now[0] += 30
    wall[0] = datetime(2026, 11, 26, 1, 59)
    assert trig.evaluate({"num_of_samples": 150}) is True  # inside, after midnight
    now[0] += 30
    assert trig.evaluate({"precision": 1}) is False
    assert trig.last_error is not None and "num_of_samples" in trig.last_error


# -- CR validation ----------------------------------------------------------------------------------------------
def _template(module: str) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "w", "image": "x", "command": ["python", "-m", module]}]}}


def ji_doc() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "sedna.io/v1alpha1", "kind": "Model", "metadata": {"name": "edge"},
         "spec": {"url": "edge.pkl", "format": "pkl"}},
        {"apiVersion": "sedna.io/v1alpha1", "kind": "Model", "metadata": {"name": "cloud"},
         "spec": {"url": "cloud.pkl", "format": "pkl"}},
        {"apiVersion": "sedna.io/v1alpha1", "kind": "JointInferenceService", "metadata": {"name": "ji"},
         "spec": {
             "edgeWorker": {"model": {"name": "edge"},
                            "hardExampleMining": {"name": "IBT",
                                                  "parameters": [{"key": "threshold_img", "value": 0.9}]},
                            "template": _template("edgeai.workers.ji_edge"),
                            "hpa": {"maxReplicas": 3, "metrics": [{"type": "Resource"}]}},
             "cloudWorker": {"model": {"name": "cloud"}, "template": _template("edgeai.workers.ji_cloud")}}},
    ]  # fmt: skip


def write(tmp_path: Path, docs: list[dict[str, Any]]) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    return path


def test_valid_job_keeps_hpa_untouched_and_hem_parameters_as_strings(tmp_path: Path) -> None:
    job = load_job_file(write(tmp_path, ji_doc()))
    ji = job.objects[2]
    assert ji.kind == "JointInferenceService"
    assert ji.spec.edgeWorker.hardExampleMining.params() == {"threshold_img": "0.9"}  # type: ignore[union-attr]
    dumped = ji.model_dump(mode="json", exclude_none=True)
    assert dumped["spec"]["edgeWorker"]["hpa"] == {"maxReplicas": 3, "metrics": [{"type": "Resource"}]}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d[2]["spec"].pop("cloudWorker"), r"JointInferenceService ji: spec.cloudWorker: Field required"),
        (lambda d: d[2]["spec"]["edgeWorker"]["hardExampleMining"].pop("name"),
         r"spec.edgeWorker.hardExampleMining.name: Field required"),
        (lambda d: d[2]["spec"]["edgeWorker"].update(hardExampleMinning={}),
         r"spec.edgeWorker.hardExampleMinning: unknown field"),
        (lambda d: d[2]["spec"]["cloudWorker"]["template"]["spec"].update(containers=[]),
         r"spec.cloudWorker.template.spec.containers: List should have at least 1 item"),
        (lambda d: d[2]["spec"]["edgeWorker"]["hpa"].pop("maxReplicas"),
         r"spec.edgeWorker.hpa.maxReplicas: Field required"),
        (lambda d: d[2].update(apiVersion="sedna.io/v1"), r"apiVersion: must be sedna.io/v1alpha1"),
        (lambda d: d[2]["metadata"].update(name="Bad_Name"),
         r"metadata.name: Value error, must be a lowercase DNS name"),
        (lambda d: d[0]["spec"].pop("url"), r"\(document 1\): Model edge: spec.url: Field required"),
        (lambda d: d[2]["spec"]["edgeWorker"]["model"].update(name="nope"),
         r"no Model default/nope in this file \(it is referenced\)"),
        (lambda d: d[1].update(kind="Modle"), r"\(document 2\): kind 'Modle' is not one of"),
    ],
)  # fmt: skip
def test_malformed_ji_is_refused_with_the_field_named(tmp_path: Path, edit: Any, message: str) -> None:
    docs = ji_doc()
    edit(docs)
    with pytest.raises(CRError, match=message) as info:
        load_job_file(write(tmp_path, docs))
    assert str(tmp_path / "job.yaml") in str(info.value)


def il_trigger(**over: Any) -> dict[str, Any]:
    return {"condition": {"operator": "gt", "threshold": 100, "metric": "num_of_samples", **over}}


def test_malformed_il_fields(tmp_path: Path) -> None:
    base = [
        {"apiVersion": "sedna.io/v1alpha1", "kind": "Dataset", "metadata": {"name": "d"},
         "spec": {"url": "d.csv", "format": "csv", "nodeName": "edge"}},
        {"apiVersion": "sedna.io/v1alpha1", "kind": "Model", "metadata": {"name": "m"},
         "spec": {"url": "m.pkl", "format": "pkl"}},
        {"apiVersion": "sedna.io/v1alpha1", "kind": "IncrementalLearningJob", "metadata": {"name": "il"},
         "spec": {"dataset": {"name": "d", "trainProb": 0.8}, "initialModel": {"name": "m"}, "outputDir": "out",
                  "trainSpec": {"template": _template("edgeai.workers.il_train"), "trigger": il_trigger()},
                  "evalSpec": {"template": _template("edgeai.workers.il_eval")},
                  "deploySpec": {"model": {"name": "m", "hotUpdateEnabled": True, "pollPeriodSeconds": 1},
                                 "trigger": il_trigger(metric="accuracy_delta", threshold=0.1),
                                 "hardExampleMining": {"name": "CrossEntropy"},
                                 "template": _template("edgeai.workers.il_infer")}}},
    ]  # fmt: skip
    load_job_file(write(tmp_path, base))
    cases = [
        (("trainSpec", "trigger", "condition", "operator"), "bigger",
         r"trainSpec.trigger.condition.operator: .*unknown operator 'bigger'"),
        (("trainSpec", "trigger", "condition", "metric"), "precision[x]", r"condition.metric: .*not a metric name"),
        (("trainSpec", "trigger", "timer"), {"start": "25:00", "end": "02:00"},
         r"trainSpec.trigger.timer.start: .*'25:00' is not a time of day"),
        (("deploySpec", "model", "pollPeriodSeconds"), 0,
         r"deploySpec.model.pollPeriodSeconds: Input should be greater than or equal to 1"),
        (("dataset", "trainProb"), 1.5, r"spec.dataset.trainProb: Input should be less than or equal to 1"),
        (("trainSpec", "trigger", "checkPeriodSeconds"), "soon",
         r"trainSpec.trigger.checkPeriodSeconds: Input should be a valid integer"),
    ]  # fmt: skip
    for path, value, message in cases:
        docs = json.loads(json.dumps(base))
        target = docs[2]["spec"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(CRError, match=message):
            load_job_file(write(tmp_path, docs))
    bad = tmp_path / "job.yaml"
    bad.write_text("kind: [unclosed\n", encoding="utf-8")
    with pytest.raises(CRError, match=r"job.yaml: line 2 column 1: invalid YAML"):
        load_job_file(bad)


# -- the local controller's route (Sedna's body, answered as Sedna's LC answers) ----------------------------------
async def test_local_controller_route_and_refusals() -> None:
    lc = LocalController("127.0.0.1", 0)
    got: list[WorkerMessage] = []
    lc.register("jointinferenceservice", "default", "helmet", got.append)
    await lc.start()
    body = {  # the body Sedna's library posts (SEDNA.md 2.5), with the real service name
        "name": "edgeworker-abcde", "namespace": "default", "ownerName": "helmet",
        "ownerKind": "jointinferenceservice", "kind": "inference", "results": [],
        "ownerInfo": {"startTime": "2026-11-25T10:00:00Z", "updateTime": "2026-11-25T10:00:02Z",
                      "inferenceNumber": 200, "hardExampleNumber": 198, "uploadCloudRatio": 0.99},
    }  # fmt: skip

    def post(path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            f"{lc.url}{path}", json.dumps(payload).encode(), {"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        status, answer = await asyncio.to_thread(post, "/sedna/workers/edgeworker-abcde/info", body)
        assert (status, answer) == (200, {"Status": 200, "Message": "OK"})
        assert got[0].owner_info["uploadCloudRatio"] == 0.99 and got[0].owner_name == "helmet"
        status, answer = await asyncio.to_thread(post, "/sedna/workers/other/info", body)
        assert status == 400 and "differs from the body's name" in answer["Message"]
        status, answer = await asyncio.to_thread(
            post, "/sedna/workers/edgeworker-abcde/info", {**body, "ownerName": "sedna"}
        )
        assert status == 404 and answer["Message"] == "no jointinferenceservice default/sedna runs here"
        status, answer = await asyncio.to_thread(
            post, "/sedna/workers/edgeworker-abcde/info", {"name": "edgeworker-abcde"}
        )
        assert status == 400 and "body.ownerName: required string" in answer["Message"]
    finally:
        await lc.stop()
    assert len(got) == 1


# -- the big model's route ------------------------------------------------------------------------------------------
class Doubler:
    def __init__(self) -> None:
        self.loaded: str | None = None

    def load(self, model_url: str) -> None:
        self.loaded = model_url

    def predict(self, data: Any, **kwargs: Any) -> Any:
        return np.asarray(data) * 2


def test_big_model_service_wire_format_and_client() -> None:
    port = free_port()
    env = WorkerEnv(job_name="helmet", big_model_bind_ip="127.0.0.1", big_model_bind_port=port, model_url="m.pkl")
    service = BigModelService(Doubler(), env)
    ready = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(service.serve(ready)), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        assert service.estimator.instance.loaded == "m.pkl"
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/helmet/predict", json.dumps({"data": [1, 2.5]}).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read()) == {"result": [2, 5.0]}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/helmet", timeout=5) as resp:
            assert json.loads(resp.read())["infos"][0]["path"] == "/helmet/predict"
        client = ModelClient("helmet", "127.0.0.1", port)
        assert client.inference(np.array([[1, 2], [3, 4]])) == {"result": [[2, 4], [6, 8]]}
        sedna_client = ModelClient("sedna", "127.0.0.1", port)  # Sedna's edge posts to /sedna/predict
        assert sedna_client.inference([3])["result"] == [6]
        client.close()
        sedna_client.close()
    finally:
        service.stop()
        thread.join(10)
    dead = ModelClient("helmet", "127.0.0.1", port, timeout_s=1.0)
    with pytest.raises(CloudUnavailable, match=f"big model at http://127.0.0.1:{port}/helmet/predict: .*refused"):
        dead.inference([1])
    with pytest.raises(CloudUnavailable, match="backing off"):
        dead.inference([1])
    assert (dead.stats.failed, dead.stats.skipped) == (1, 1)
