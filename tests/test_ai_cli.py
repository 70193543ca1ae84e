"""`mapper ai` on files: init writes a runnable sample, validate names bad fields, manifests are what Sedna runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from typer.testing import CliRunner

from edgeai import scenarios
from edgeai.models import SklearnEstimator
from mapper_cli.main import app

runner = CliRunner()


def test_init_writes_a_valid_runnable_sample_with_trained_models(tmp_path: Path) -> None:
    res = runner.invoke(app, ["ai", "init", str(tmp_path), "--stream", "mqtt://127.0.0.1:1883/plant/#"])
    assert res.exit_code == 0, res.output
    for name in ("joint-inference.yaml", "incremental-learning.yaml"):
        res = runner.invoke(app, ["ai", "validate", "-f", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
    assert "ok  IncrementalLearningJob default/machine-retrain" in res.output
    assert (tmp_path / "data" / "machine.csv").read_text() == "temperature,vibration,label\n"
    # The generated models do what the scenarios promise.
    rng = np.random.default_rng(3)
    est = SklearnEstimator()
    est.load(str(tmp_path / "models" / "machine-initial.pkl"))
    assert est.evaluate(scenarios.drifting_machine(2000, rng))["accuracy"] > 0.9
    assert est.evaluate(scenarios.drifting_machine(2000, rng, drifted=True))["accuracy"] < 0.5
    edge, cloud = SklearnEstimator(), SklearnEstimator()
    edge.load(str(tmp_path / "models" / "bearing-edge.pkl"))
    cloud.load(str(tmp_path / "models" / "bearing-cloud.pkl"))
    x, y = scenarios.bearing(3000, rng)
    assert cloud.evaluate((x, y))["accuracy"] > edge.evaluate((x, y))["accuracy"] + 0.05
    res = runner.invoke(app, ["ai", "init", str(tmp_path)])
    assert res.exit_code == 1 and "already holds a sample job; give --force" in res.output


def test_validate_reports_file_object_and_field(tmp_path: Path) -> None:
    runner.invoke(app, ["ai", "init", str(tmp_path)])
    path = tmp_path / "incremental-learning.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    docs[-1]["spec"]["trainSpec"]["trigger"]["condition"]["operator"] = "more"
    path.write_text(yaml.safe_dump_all(docs))
    res = runner.invoke(app, ["ai", "validate", "-f", str(path)])
    assert res.exit_code == 1
    assert (
        f"{path} (document 4): IncrementalLearningJob machine-retrain: spec.trainSpec.trigger.condition.operator"
        in (res.output)
    )
    assert "unknown operator 'more'" in res.output and "hint:" in res.output


def _container(doc: dict[str, Any], *path: str) -> dict[str, Any]:
    node: Any = doc["spec"]
    for key in path:
        node = node[key]
    return node["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def test_manifests_for_a_real_sedna(tmp_path: Path) -> None:
    runner.invoke(app, ["ai", "init", str(tmp_path), "--stream", "http://127.0.0.1:7777"])
    path = tmp_path / "joint-inference.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    target = {"type": "Utilization", "averageUtilization": 50}
    hpa = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
    }
    docs[-1]["spec"]["edgeWorker"]["hpa"] = hpa
    path.write_text(yaml.safe_dump_all(docs))
    res = runner.invoke(
        app, ["ai", "manifests", "-f", str(path), "--image", "registry.local/kubeedge-mapper:0.1", "--node", "edge0"]
    )
    assert res.exit_code == 0, res.output
    assert f"#   {tmp_path.resolve() / 'models' / 'machine-initial.pkl'}" in res.output
    out = [d for d in yaml.safe_load_all(res.output) if d]
    ji = out[-1]
    assert ji["spec"]["edgeWorker"]["hpa"] == hpa  # passed through untouched
    edge = ji["spec"]["edgeWorker"]["template"]["spec"]
    assert edge["nodeName"] == "edge0" and edge["hostNetwork"] is True  # its stream is the node's loopback REST
    c = _container(ji, "edgeWorker")
    assert c["image"] == "registry.local/kubeedge-mapper:0.1"
    assert c["command"] == ["python", "-m", "edgeai.workers.ji_edge"]
    assert {e["name"] for e in c["env"]} >= {"STREAM_URL", "STREAM_PROPERTIES", "STREAM_LABEL"}
    assert "nodeName" not in ji["spec"]["cloudWorker"]["template"]["spec"]
    assert out[0]["spec"]["url"] == str(tmp_path.resolve() / "models" / "machine-initial.pkl")

    il_path = tmp_path / "incremental-learning.yaml"
    res = runner.invoke(app, ["ai", "manifests", "-f", str(il_path), "--node", "edge0", "--host-dir", "/srv/ai"])
    assert res.exit_code == 0, res.output
    out = [d for d in yaml.safe_load_all(res.output) if d]
    dataset, il = out[0], out[-1]
    assert dataset["spec"] == {"url": "/srv/ai/data/machine.csv", "format": "csv", "nodeName": "edge0"}
    assert il["spec"]["outputDir"] == "/srv/ai/output"
    infer = il["spec"]["deploySpec"]["template"]["spec"]
    c = infer["containers"][0]
    assert {"name": "HE_SAVED_URL", "value": "/srv/ai/data/machine.csv"} in c["env"]
    assert {"name": "hard-examples", "mountPath": "/srv/ai/data"} in c["volumeMounts"]
    assert infer["volumes"] == [{"name": "hard-examples", "hostPath": {"path": "/srv/ai/data",
                                                                        "type": "DirectoryOrCreate"}}]  # fmt: skip


def test_run_refuses_a_malformed_job_before_starting_anything(tmp_path: Path) -> None:
    runner.invoke(app, ["ai", "init", str(tmp_path)])
    path = tmp_path / "joint-inference.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    del docs[-1]["spec"]["edgeWorker"]["hardExampleMining"]
    path.write_text(yaml.safe_dump_all(docs))
    res = runner.invoke(app, ["ai", "run", "-f", str(path), "--state-dir", str(tmp_path / "state")])
    assert res.exit_code == 1
    assert "JointInferenceService machine-monitor: spec.edgeWorker.hardExampleMining: Field required" in res.output
    assert not (tmp_path / "state").exists()
    res = runner.invoke(app, ["ai", "get", "ji", "--state-dir", str(tmp_path / "state")])
    assert res.exit_code == 1 and "no AI job status here; start a job with `mapper ai run -f JOB.yaml`" in res.output
