"""Edge AI end to end with real processes: the drifting machine is served by the agent, the Modbus simulator and
the Modbus mapper; `mapper ai`'s local controller runs the Sedna jobs with our workers as child processes.

- joint inference reads the mapper's MQTT push through a real mosquitto broker; its big model hangs (SIGSTOP) and
  dies (SIGKILL) mid-run: fallbacks are counted, no inference waits longer than the timeout, the cloud answers
  again when it is back; a non-numeric value is rejected and said; a stopped stream is reported and recovers;
- incremental learning reads the mapper's REST API: hard examples with their labels reach the Dataset, the train
  trigger fires when its condition holds and not before, the deployed model changes and is hot-loaded, accuracy
  recovers;
- a missing model file: the worker's own words land in the job's status and the rest keeps running.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from edgeai import samples, scenarios
from edgeai.crs import load_job_file
from edgeai.il_runtime import IncrementalLearningRuntime
from edgeai.ji_runtime import JointInferenceRuntime
from edgeai.models import SklearnEstimator
from edgeai.runner import JobRunner, RunOptions
from mapper_cli.ai_demo import DEVICE, machine_stack
from mapper_cli.cmd_agent import stack_plan
from mapper_cli.main import app
from tests.brokers import free_port, mosquitto

TIMEOUT_MS = 1000.0  # BIG_MODEL_TIMEOUT's default


def status_of(runner: JobRunner, kind: str, name: str) -> dict[str, Any]:
    assert runner.store is not None
    doc = runner.store.get(kind, "default", name)
    return (doc or {}).get("status") or {}


def metric(status: dict[str, Any], key: str, default: float = 0.0) -> Any:
    for m in status.get("metrics") or []:
        if m["key"] == key:
            try:
                return json.loads(m["value"])
            except ValueError:  # a plain string (the status keeps strings as they are)
                return m["value"]
    return default


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)


async def start_runner(job_file: Path, state: Path, period: float = 0.5) -> JobRunner:
    runner = JobRunner(load_job_file(job_file), RunOptions(state_dir=state, lc_port=0, report_period_s=period))
    await runner.start()
    return runner


@pytest.mark.timeout(300)
async def test_joint_inference_on_a_mapper_mqtt_stream_with_a_failing_big_model(tmp_path: Path) -> None:
    (tmp_path / "mqtt").mkdir()
    with mosquitto(tmp_path / "mqtt") as broker:
        address = f"127.0.0.1:{broker.plain_port}"
        http_port = free_port()
        stack = machine_stack(tmp_path / "stack", 2.0, http_port, jobs="ji", mqtt=address, idle_seconds=3.0)
        async with stack as (job_file, children):
            runner = await start_runner(job_file, tmp_path / "ai")
            rt = runner.runtimes[0]
            assert isinstance(rt, JointInferenceRuntime)

            def st() -> dict[str, Any]:
                return status_of(runner, "JointInferenceService", "machine-monitor")

            try:
                await until(lambda: metric(st(), "cloudInferenceNumber") > 5, 60, "answers from the big model")
                assert st()["conditions"][-1]["type"] == "Running" and st()["active"] == 2

                # The big model hangs: every inference still ends within the timeout, on the edge result.
                cloud = rt.workers["cloud"].proc
                assert cloud is not None
                os.kill(cloud.pid, signal.SIGSTOP)
                n0, f0 = metric(st(), "inferenceNumber"), metric(st(), "cloudFallbackNumber")
                await until(lambda: metric(st(), "cloudFallbackNumber") >= f0 + 2, 30, "fallbacks while hung")
                await until(lambda: metric(st(), "inferenceNumber") >= n0 + 30, 30, "inferences while hung")
                assert metric(st(), "inferenceMaxMs") < TIMEOUT_MS + 500, st()["metrics"]
                os.kill(cloud.pid, signal.SIGCONT)
                c0 = metric(st(), "cloudInferenceNumber")
                await until(lambda: metric(st(), "cloudInferenceNumber") > c0 + 3, 30, "the big model back")

                # The big model dies: the status says so, the worker is restarted, answers resume.
                cloud.kill()
                await until(
                    lambda: any(c["reason"] == "CloudWorkerFailed" for c in st()["conditions"]), 20, "Failed condition"
                )
                failed = next(c for c in st()["conditions"] if c["reason"] == "CloudWorkerFailed")
                assert "cloudworker-" in failed["message"] and "signal 9" in failed["message"]
                # Restarted after the backoff: a new process, and the condition back to Running.
                await until(lambda: st()["conditions"][-1]["type"] == "Running", 20, "the Running condition again")
                restarted = rt.workers["cloud"].proc
                assert restarted is not None and restarted.pid != cloud.pid and st()["failed"] >= 1
                # Metrics arrive in the edge worker's periodic reports, so the count is taken from a report sent
                # after the restart: one sent earlier may still be counting answers from before the kill.
                r0 = rt.reports
                await until(lambda: rt.reports >= r0 + 2, 20, "an edge report after the restart")
                c1 = metric(st(), "cloudInferenceNumber")
                await until(lambda: metric(st(), "cloudInferenceNumber") > c1 + 3, 40, "the restarted big model")
                assert st()["conditions"][-1]["type"] == "Running"

                # A non-numeric value in the numeric window: rejected, said, and inference goes on.
                pub = mqtt.Client(CallbackAPIVersion.VERSION2)
                pub.connect("127.0.0.1", broker.plain_port)
                pub.loop_start()
                bad = {"namespace": "default", "device": DEVICE, "property": "temperature", "value": "abc",
                       "type": "float", "timestamp": int(time.time() * 1000)}  # fmt: skip
                pub.publish(f"kubeedge/{DEVICE}/temperature", json.dumps(bad), qos=1).wait_for_publish(5)
                pub.loop_stop()
                pub.disconnect()
                await until(lambda: metric(st(), "streamRejected") >= 1, 20, "the rejected value")
                assert "temperature: value 'abc' is not a number" in metric(st(), "streamLastError", "")
                n1 = metric(st(), "inferenceNumber")
                await until(lambda: metric(st(), "inferenceNumber") > n1 + 10, 20, "inference after a bad value")

                # The stream stops (the simulated machine goes away): reported, then it comes back.
                sim = children.find("modbus-simulator")
                assert sim is not None
                sim.kill()
                await until(lambda: "no sample" in str(metric(st(), "streamError", "")), 40, "the stalled stream")
                argv = dict(
                    stack_plan(tmp_path / "stack" / "devices", tmp_path / "stack" / "state", http_port, "warning")
                )
                await children.start("modbus-simulator-2", argv["modbus-simulator"])
                n2 = metric(st(), "inferenceNumber")
                await until(lambda: metric(st(), "inferenceNumber") > n2 + 10, 60, "the stream back")
                await until(lambda: metric(st(), "streamError", None) is None, 20, "the stream error cleared")

                # With labels from the machine: after the drift the cloud lifts the final answer above the edge's.
                await until(lambda: metric(st(), "labelledNumber") > 250, 60, "labelled samples")
                assert metric(st(), "accuracy") > metric(st(), "edgeAccuracy")
            finally:
                await runner.stop()


@pytest.mark.timeout(300)
async def test_incremental_learning_retrains_and_hot_deploys_on_drift(tmp_path: Path) -> None:
    http_port = free_port()
    # The drift comes 1 s in, so the first round trains on drifted hard examples (pre-drift ones would conflict).
    async with machine_stack(tmp_path / "stack", 1.0, http_port, jobs="il", train_when=40) as (job_file, _children):
        runner = await start_runner(job_file, tmp_path / "ai")
        rt = runner.runtimes[0]
        assert isinstance(rt, IncrementalLearningRuntime)

        def st() -> dict[str, Any]:
            return status_of(runner, "IncrementalLearningJob", "machine-retrain")

        initial = Path(rt.initial_model).read_bytes()
        accuracies: list[float] = []
        try:
            await until(lambda: rt.inference is not None and rt.inference.running, 20, "the inference worker")
            assert rt.inference is not None and rt.inference.proc is not None
            pid = rt.inference.proc.pid

            def watch() -> bool:
                acc = metric(st(), "accuracy", None)
                if isinstance(acc, float):
                    accuracies.append(acc)
                return rt.deployments >= 1

            await until(watch, 180, "a deployment")
            # The train trigger fired when num_of_samples > 40 held, and not before.
            history = rt.train_trigger.history
            fired = [i for i, (_, f) in enumerate(history) if f]
            assert fired, history
            assert all(value <= 40 for value, _ in history[: fired[0]])
            assert history[fired[0]][0] > 40
            train_file = rt.output_dir / "data" / "train" / "1" / "data.csv"
            lines = train_file.read_text().splitlines()
            assert lines[0] == "temperature,vibration,label" and len(lines) - 1 == history[fired[0]][0]
            # Hard examples reached the Dataset with their labels from the machine's fault property.
            dataset = rt.reader.path.read_text().splitlines()
            assert len(dataset) > 40 and all(line.rsplit(",", 1)[1] in ("0", "1") for line in dataset[1:])

            # The deployed model changed, and it is better on the drifted machine by a wide margin.
            deployed = Path(rt.deploy_model).read_bytes()
            assert hashlib.sha256(deployed).digest() != hashlib.sha256(initial).digest()
            x, y = scenarios.drifting_machine(3000, np.random.default_rng(12), drifted=True)
            before, after = SklearnEstimator(), SklearnEstimator()
            before.load(rt.initial_model)
            after.load(rt.deploy_model)
            acc_before, acc_after = before.evaluate((x, y))["accuracy"], after.evaluate((x, y))["accuracy"]
            assert acc_after >= acc_before + 0.3, (acc_before, acc_after)  # stated margin: 30 points

            # Hot update: the same inference process reloaded the model, and its live accuracy recovers.
            await until(lambda: metric(st(), "modelReloads") >= 1, 30, "the hot reload")
            assert rt.inference.proc.pid == pid and rt.inference.running
            low = min(accuracies[-20:]) if accuracies else 0.0
            await until(lambda: watch() and accuracies[-1] >= low + 0.2, 90, f"accuracy above {low:.2f} + 0.2")

            stages = [(c["stage"], c["type"], c.get("reason", "")) for c in st()["conditions"]]
            for step in (("Train", "Running", ""), ("Train", "Completed", ""), ("Eval", "Completed", ""),
                         ("Deploy", "Completed", "Deployed")):  # fmt: skip
                assert step in stages, stages
            evaluated = next(c for c in st()["conditions"] if c["stage"] == "Eval" and c["type"] == "Completed")
            data = json.loads(evaluated["data"])
            assert data["metrics"]["accuracy_delta"][0] > 0.05
            assert len(data["output"]["models"]) == 2
            res = CliRunner().invoke(
                app, ["ai", "get", "il", "machine-retrain", "-o", "yaml", "--state-dir", str(tmp_path / "ai")]
            )
            assert res.exit_code == 0, res.output
            shown = yaml.safe_load(res.output)
            assert shown["kind"] == "IncrementalLearningJob" and shown["status"]["conditions"] == st()["conditions"]
        finally:
            await runner.stop()


@pytest.mark.timeout(120)
async def test_missing_model_file_is_said_in_the_status_and_nothing_else_stops(tmp_path: Path) -> None:
    models = samples.train_models(tmp_path / "models")
    stream = samples.StreamParams(url=f"mqtt://127.0.0.1:{free_port()}/x/#", properties="default/m/t")
    docs = samples.joint_inference_docs("broken", stream, "models/missing.pkl", str(models["bearing-cloud"]))
    job = samples.write_docs(tmp_path / "job.yaml", docs)
    runner = await start_runner(job, tmp_path / "ai")

    def st() -> dict[str, Any]:
        return status_of(runner, "JointInferenceService", "broken")

    try:
        await until(lambda: any(c["type"] == "Failed" for c in st().get("conditions", [])), 60, "the Failed condition")
        failed = next(c for c in st()["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == "EdgeWorkerFailed"
        assert f"model file {tmp_path / 'models' / 'missing.pkl'} does not exist" in failed["message"]
        assert "exit code 2" in failed["message"]
        rt = runner.runtimes[0]
        assert isinstance(rt, JointInferenceRuntime) and rt.workers["cloud"].running
    finally:
        await runner.stop()


@pytest.mark.timeout(120)
async def test_a_sedna_style_worker_script_runs_with_only_its_imports_changed(tmp_path: Path) -> None:
    (tmp_path / "edge.txt").write_text("0.5")
    (tmp_path / "cloud.txt").write_text("0.5")
    here = Path(__file__).parent / "sedna_style"
    stream = samples.StreamParams(url="mqtt://127.0.0.1:1/unused/#", properties="default/m/t")
    docs = samples.joint_inference_docs(
        "helmet", stream, "edge.txt", "cloud.txt", hem="CrossEntropy", hem_params={"threshold_cross_entropy": "0.1"}
    )
    edge = docs[-1]["spec"]["edgeWorker"]["template"]["spec"]["containers"][0]
    edge["command"] = ["python", str(here / "edge.py")]
    edge["env"] = [{"name": "samples", "value": "60"}]
    docs[-1]["spec"]["cloudWorker"]["template"]["spec"]["containers"][0]["command"] = ["python", str(here / "cloud.py")]
    job = samples.write_docs(tmp_path / "job.yaml", docs)
    runner = await start_runner(job, tmp_path / "ai")

    def st() -> dict[str, Any]:
        return status_of(runner, "JointInferenceService", "helmet")

    try:
        # The final report of the script lands under the real service name, each inference counted once.
        await until(lambda: metric(st(), "inferenceNumber") == 60, 60, "the script's 60 inferences")
        hard, cloud = metric(st(), "hardExampleNumber"), metric(st(), "cloudInferenceNumber")
        assert 0 < hard <= 60 and cloud == hard and metric(st(), "cloudFallbackNumber") == 0
        assert metric(st(), "uploadCloudRatio") == round(hard / 60, 4)
        rt = runner.runtimes[0]
        assert isinstance(rt, JointInferenceRuntime)
        log = rt.workers["edge"].log_path.read_text()
        # The script's override (threshold 0.9) beat the CR's 0.1: 39 of these 60 inputs are hard at 0.9, 6 at 0.1.
        lines = [line for line in log.splitlines() if line.startswith(("True ", "False "))]
        assert len(lines) == 60
        res = CliRunner().invoke(app, ["ai", "get", "ji", "helmet", "-o", "yaml", "--state-dir", str(tmp_path / "ai")])
        assert res.exit_code == 0, res.output
        shown = yaml.safe_load(res.output)
        assert shown["kind"] == "JointInferenceService" and shown["status"]["metrics"] == st()["metrics"]
        assert {"key": "inferenceNumber", "value": "60"} in shown["status"]["metrics"]
        table = CliRunner().invoke(app, ["ai", "get", "ji", "--state-dir", str(tmp_path / "ai")])
        assert "helmet" in table.output and "inferences 60" in table.output
        assert sum(1 for line in lines if line.startswith("True ['cloud',")) == hard and hard > 20
    finally:
        await runner.stop()


class DriftingPublisher:
    """Publishes the drifting machine as a mapper's MQTT push would (one message per property, the same timestamp
    for one reading), ``rate_hz`` readings a second, drifting after ``drift_after`` readings."""

    def __init__(self, port: int, rate_hz: float, drift_after: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.rate_hz, self.drift_after = rate_hz, drift_after
        self.sent = 0
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        rng = np.random.default_rng(8)
        t0 = time.monotonic()
        while not self._stop:
            x, y = scenarios.drifting_machine(1, rng, drifted=self.sent >= self.drift_after)
            stamp = int(time.time() * 1000)
            for prop, value in (
                ("temperature", f"{x[0][0]:.2f}"),
                ("vibration", f"{x[0][1]:.2f}"),
                ("fault", str(y[0])),
            ):
                body = {"namespace": "default", "device": "gen", "property": prop, "value": value, "type": "float",
                        "timestamp": stamp}  # fmt: skip
                self.client.publish(f"plant/gen/{prop}", json.dumps(body), qos=0)
            self.sent += 1
            await asyncio.sleep(max(0.0, t0 + self.sent / self.rate_hz - time.monotonic()))

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def close(self) -> None:
        self._stop = True
        if self._task is not None:
            await self._task
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.timeout(180)
async def test_incremental_learning_on_a_generated_drifting_stream_without_hot_update(tmp_path: Path) -> None:
    (tmp_path / "mqtt").mkdir()
    with mosquitto(tmp_path / "mqtt") as broker:
        models = samples.train_models(tmp_path / "models")
        samples.write_dataset(tmp_path / "data" / "gen.csv", ("temperature", "vibration"))
        stream = samples.StreamParams(
            url=f"mqtt://127.0.0.1:{broker.plain_port}/plant/gen/#",
            properties="default/gen/temperature,default/gen/vibration",
            label="default/gen/fault",
        )
        docs = samples.incremental_learning_docs(
            "gen", stream, str(models["machine-initial"]), "models/deployed.pkl", "data/gen.csv", train_when=60,
            check_period_s=1,
        )  # fmt: skip
        docs[-1]["spec"]["deploySpec"]["model"]["hotUpdateEnabled"] = False
        job = samples.write_docs(tmp_path / "job.yaml", docs)
        runner = await start_runner(job, tmp_path / "ai")
        rt = runner.runtimes[0]
        assert isinstance(rt, IncrementalLearningRuntime)
        publisher = DriftingPublisher(broker.plain_port, 40.0, drift_after=200)

        def st() -> dict[str, Any]:
            return status_of(runner, "IncrementalLearningJob", "gen")

        try:
            await until(lambda: rt.inference is not None and rt.inference.running, 20, "the inference worker")
            await asyncio.sleep(2)  # the worker subscribes before the first reading
            assert rt.inference is not None and rt.inference.proc is not None
            pid = rt.inference.proc.pid
            publisher.start()
            await until(lambda: publisher.sent >= 190 and metric(st(), "labelledNumber") > 150, 30, "pre-drift samples")
            before = metric(st(), "accuracy")
            assert before > 0.9, st()["metrics"]  # features and labels of one reading stay together
            await until(lambda: rt.deployments >= 1, 120, "a deployment")
            fired = next(v for v, f in rt.train_trigger.history if f)
            first = rt.train_trigger.history.index((fired, True))
            assert fired > 60 and all(v <= 60 for v, _ in rt.train_trigger.history[:first])

            # No hot update: the inference worker was restarted on the new model.
            def restarted() -> bool:
                w = rt.inference
                return w is not None and w.proc is not None and w.proc.pid != pid and w.running

            await until(restarted, 30, "the restarted worker")
            assert not any(c["reason"] == "InferenceWorkerFailed" for c in st()["conditions"])
            # The new process reports from zero: wait for it, then for 100 labelled readings on the new model.
            n0 = metric(st(), "labelledNumber", 0)
            await until(lambda: metric(st(), "labelledNumber", 0) < n0, 30, "the new worker's first report")
            await until(lambda: metric(st(), "labelledNumber", 0) >= 100, 30, "readings on the new model")
            # On drifted readings only, with a model trained on some 60 hard examples (the initial model: about 0.3).
            assert metric(st(), "accuracy") > 0.7, st()["metrics"]
        finally:
            await publisher.close()
            await runner.stop()


@pytest.mark.timeout(120)
async def test_joint_inference_on_an_rtsp_stream_encoded_by_ffmpeg(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from tests.rtsp_relay import RtspRelay

    # Frame models on 16x12 RGB images (576 features): "reddish" or not. Trained here on generated images.
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (400, 12, 16, 3)).astype(np.float64)
    labels = (images[..., 0].mean(axis=(1, 2)) > images[..., 2].mean(axis=(1, 2))).astype(int)
    flat = images.reshape(400, -1)
    for name, c in (("edge", 0.01), ("cloud", 1.0)):
        (tmp_path / f"{name}.pkl").write_bytes(pickle.dumps(LogisticRegression(C=c, max_iter=300).fit(flat, labels)))
    relay = RtspRelay()
    try:
        await asyncio.to_thread(relay.start_server)
        stream = samples.StreamParams(url=relay.url, properties="default/camera/frames", window="count:1")
        docs = samples.joint_inference_docs("camera", stream, "edge.pkl", "cloud.pkl", hem="CloudOnly", hem_params={})
        edge = docs[-1]["spec"]["edgeWorker"]["template"]["spec"]["containers"][0]
        edge["env"] += [
            {"name": "STREAM_FRAME_SIZE", "value": "16x12"},
            {"name": "STREAM_EVERY_NTH_FRAME", "value": "5"},
        ]
        runner = await start_runner(samples.write_docs(tmp_path / "job.yaml", docs), tmp_path / "ai")

        def st() -> dict[str, Any]:
            return status_of(runner, "JointInferenceService", "camera")

        try:
            # 25 fps, every 5th frame: about 5 inferences a second, each answered by the big model.
            await until(lambda: metric(st(), "inferenceNumber") >= 20, 60, "inferences on frames")
            info = st()
            assert metric(info, "cloudInferenceNumber") >= metric(info, "inferenceNumber") - 1
            assert metric(info, "uploadCloudRatio") == 1.0 and metric(info, "cloudFallbackNumber") == 0
            assert metric(info, "streamError", None) is None
        finally:
            await runner.stop()
    finally:
        await asyncio.to_thread(relay.close)


@pytest.mark.timeout(120)
async def test_hard_examples_labelled_by_a_callback_reach_the_dataset(tmp_path: Path) -> None:
    (tmp_path / "mqtt").mkdir()
    with mosquitto(tmp_path / "mqtt") as broker:
        models = samples.train_models(tmp_path / "models")
        dataset = tmp_path / "data.csv"
        samples.write_dataset(dataset, ("temperature", "vibration"))
        env = {
            **os.environ,
            "MODEL_URL": str(models["machine-initial"]),
            "HEM_NAME": "CloudOnly",  # every example is hard: each one is labelled
            "STREAM_URL": f"mqtt://127.0.0.1:{broker.plain_port}/plant/gen/#",
            "STREAM_PROPERTIES": "default/gen/temperature,default/gen/vibration",
            "HE_SAVED_URL": str(dataset),
            "HE_LABEL_CALLBACK": "tests.sedna_style.labeller:label",
            "LC_SERVER": f"http://127.0.0.1:{free_port()}",
            "PYTHONPATH": str(Path(__file__).parent.parent),
        }
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edgeai.workers.il_infer", env=env, stderr=asyncio.subprocess.DEVNULL
        )
        publisher = DriftingPublisher(broker.plain_port, 50.0, drift_after=0)
        try:
            await asyncio.sleep(3)  # the worker loads its model and subscribes
            publisher.start()
            await until(lambda: len(dataset.read_text().splitlines()) > 60, 30, "labelled hard examples")
        finally:
            await publisher.close()
            worker.terminate()
            await worker.wait()
        rows = [line.split(",") for line in dataset.read_text().splitlines()[1:]]
        assert rows and all(r[2] == ("1" if float(r[1]) < 3.5 else "0") for r in rows)
        assert {r[2] for r in rows} == {"0", "1"}
