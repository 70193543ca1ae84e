"""``mapper ai demo``: a Modbus machine drifts mid-run; joint inference and incremental learning react, live.

The machine is a device of our own stack: the agent, the Modbus simulator replaying a recording of the machine
(temperature, vibration and the true fault state, one sample every 0.1 s; the drift comes after ``drift_after``
seconds) and the Modbus mapper. The AI jobs read the machine through the mapper's REST API:

- joint inference ``machine-monitor``: a small edge model trained before the drift, a big cloud model that knows
  both regimes; after the drift the edge model is unsure, so more examples go to the cloud and the final accuracy
  holds while the edge accuracy falls;
- incremental learning ``machine-retrain``: hard examples with their true labels go to the Dataset; training,
  evaluation against the deployed model and a hot deployment follow, and the edge accuracy recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from edgeai import samples
from edgeai.runner import JobRunner, RunOptions, free_port, run_job
from mapper_cli.cmd_agent import Children, stack_plan

DEVICE = "drifting-machine"
SAMPLE_PERIOD_S = 0.1


def device_docs(port: int, replay: str, mqtt: str | None = None) -> list[dict[str, Any]]:
    """The drifting machine's DeviceModel and Device; with ``mqtt`` (``host:port``) every property is also pushed
    to ``kubeedge/drifting-machine/<property>`` on that broker."""

    def prop(name: str, offset: int, scale: float, data_type: str) -> dict[str, Any]:
        push = {"mqtt": {"address": f"tcp://{mqtt}", "topic": f"kubeedge/{DEVICE}/{name}", "qos": 0}} if mqtt else None
        doc = {
            "name": name,
            "collectCycle": 50,
            "reportCycle": 1000,
            "reportToCloud": True,
            "visitors": {
                "protocolName": "modbus",
                "configData": {"register": "HoldingRegister", "offset": offset, "limit": 1, "scale": scale,
                               "isSwap": False, "isRegisterSwap": False, "dataType": data_type},
            },
        }  # fmt: skip
        if push:
            doc["pushMethod"] = push
        return doc

    motion = ",".join(
        f"{p}=replay:{replay}:{column}:{SAMPLE_PERIOD_S}"
        for p, column in (("temperature", "temperature"), ("vibration", "vibration"), ("fault", "fault"))
    )
    return [
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": "drifting-machine-model", "namespace": "default"},
            "spec": {
                "protocol": "modbus",
                "properties": [
                    {"name": "temperature", "type": "FLOAT", "accessMode": "ReadOnly", "unit": "celsius"},
                    {"name": "vibration", "type": "FLOAT", "accessMode": "ReadOnly", "unit": "mm/s"},
                    {"name": "fault", "type": "INT", "accessMode": "ReadOnly",
                     "description": "ground truth of the simulation: 1 when the machine is in fault"},
                ],
            },
        },
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": DEVICE, "namespace": "default",
                         "annotations": {"simulator.kubeedge-mapper.io/motion": motion}},
            "spec": {
                "deviceModelRef": {"name": "drifting-machine-model"},
                "nodeName": "edge-node-1",
                "protocol": {"protocolName": "modbus", "configData": {"ip": "127.0.0.1", "port": port, "slaveID": 1}},
                "properties": [prop("temperature", 0, 0.01, "float"), prop("vibration", 1, 0.01, "float"),
                               prop("fault", 2, 1, "int")],
            },
        },
    ]  # fmt: skip


def prepare(
    root: Path,
    drift_after: float,
    http_port: int,
    train_when: int = 100,
    jobs: str = "ji,il",
    mqtt: str | None = None,
    idle_seconds: float = 10.0,
) -> Path:
    """Write the demo's devices, recording, models and job file under ``root``; return the job file."""
    for sub in ("devices", "jobs", "state", "ai"):
        shutil.rmtree(root / sub, ignore_errors=True)
    wanted = set(jobs.split(","))
    devices, jobs_dir = root / "devices", root / "jobs"
    samples.machine_replay(devices / "machine-replay.csv", drift_after, 3600.0, SAMPLE_PERIOD_S)
    samples.write_docs(devices / "drifting-machine.yaml", device_docs(free_port(), "machine-replay.csv", mqtt))
    models = samples.train_models(jobs_dir / "models")
    samples.write_dataset(jobs_dir / "data" / "machine.csv", ("temperature", "vibration"))
    dev = f"default/{DEVICE}"
    stream = samples.StreamParams(
        url=f"mqtt://{mqtt}/kubeedge/{DEVICE}/#" if mqtt else f"http://127.0.0.1:{http_port}",
        properties=f"{dev}/temperature,{dev}/vibration",
        label=f"{dev}/fault",
        poll_seconds=0.05,
        idle_seconds=idle_seconds,
    )
    docs: list[dict[str, Any]] = []
    if "ji" in wanted:
        docs += samples.joint_inference_docs(
            "machine-monitor", stream, str(models["machine-initial"]), str(models["machine-cloud"])
        )
    if "il" in wanted:
        docs += samples.incremental_learning_docs(
            "machine-retrain", stream, str(models["machine-initial"]), "models/machine-deployed.pkl",
            "data/machine.csv", train_when=train_when,
        )  # fmt: skip
    return samples.write_docs(jobs_dir / "machine.yaml", docs)


@contextlib.asynccontextmanager
async def machine_stack(
    root: Path,
    drift_after: float,
    http_port: int,
    log_level: str = "warning",
    train_when: int = 100,
    jobs: str = "ji,il",
    mqtt: str | None = None,
    idle_seconds: float = 10.0,
) -> AsyncIterator[tuple[Path, Children]]:
    """The drifting machine served by the agent, the Modbus simulator and mapper; yields the job file (and the
    child processes) once the mapper answers with fresh values. With ``mqtt`` (``host:port``) the workers read
    the mapper's MQTT push on that broker instead of its REST API."""
    job_file = prepare(root, drift_after, http_port, train_when, jobs, mqtt, idle_seconds)
    runtime = root / "state"
    me = [sys.executable, "-m", "mapper_cli.main"]
    agent = [*me, "agent", "--devices", str(root / "devices"), "--socket", str(runtime / "dmi.sock"),
             "--state-dir", str(runtime), "--log-level", log_level]  # fmt: skip
    plan = [("agent", agent), *stack_plan(root / "devices", runtime, http_port, log_level)]
    children = Children(runtime / "logs")
    try:
        for name, argv in plan:
            await children.start(name, argv)
            await asyncio.sleep(0.5)
        started = time.monotonic()
        while not await asyncio.to_thread(_device_ready, http_port):
            if time.monotonic() - started > 60:
                raise RuntimeError(f"the demo's Modbus mapper did not answer on port {http_port}; see {runtime}/logs")
            await asyncio.sleep(0.3)
        yield job_file, children
    finally:
        await children.stop()


def _device_ready(http_port: int) -> bool:
    url = f"http://127.0.0.1:{http_port}/api/v1/device/default/{DEVICE}/fault"
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return not json.loads(resp.read()).get("stale", True)
    except (OSError, ValueError):
        return False


def _metric(doc: dict[str, Any] | None, key: str) -> str:
    for m in ((doc or {}).get("status") or {}).get("metrics") or []:
        if m.get("key") == key:
            return str(m.get("value"))
    return "-"


def _pct(text: str) -> str:
    try:
        return f"{float(text) * 100:5.1f}%"
    except ValueError:
        return "    -"


def run_demo(root: Path, drift_after: float, duration: float, http_port: int, log_level: str) -> None:
    root = root.resolve()
    print(f"demo files in {root}; logs in {root / 'state' / 'logs'} and {root / 'ai' / 'logs'}")
    print(f"the machine drifts {drift_after:.0f} s after the simulator starts; Ctrl-C stops")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with machine_stack(root, drift_after, http_port, log_level) as (job_file, _children):
            t0 = time.monotonic()
            if duration > 0:
                loop.call_later(duration, stop.set)
            print("   time | phase  | JI edge acc  final acc  to cloud | IL accuracy  hard saved  stage")
            deployed = [0]

            def tick(runner: JobRunner) -> None:
                assert runner.store is not None
                ji = runner.store.get("JointInferenceService", "default", "machine-monitor")
                il = runner.store.get("IncrementalLearningJob", "default", "machine-retrain")
                conds = ((il or {}).get("status") or {}).get("conditions") or [{}]
                n = sum(1 for c in conds if c.get("reason") == "Deployed")
                note = "  << new model deployed" if n > deployed[0] else ""
                deployed[0] = n
                t = time.monotonic() - t0
                phase = "before" if t < drift_after else "DRIFT "
                cur = conds[-1]
                print(
                    f"{t:6.0f} s | {phase} | {_pct(_metric(ji, 'edgeAccuracy'))}      {_pct(_metric(ji, 'accuracy'))}"
                    f"     {_pct(_metric(ji, 'uploadCloudRatio'))} | {_pct(_metric(il, 'accuracy'))}"
                    f"       {_metric(il, 'hardExamplesSaved'):>5}  {cur.get('stage', '')}/{cur.get('type', '')}"
                    f" (deployed {n}){note}",
                    flush=True,
                )

            options = RunOptions(state_dir=root / "ai", lc_port=0, report_period_s=1.0)
            await run_job(job_file, options, stop, tick, tick_s=2.0)

    try:
        asyncio.run(main())
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print("stopped. Status stays readable: mapper ai get il machine-retrain -o yaml --state-dir", root / "ai")
