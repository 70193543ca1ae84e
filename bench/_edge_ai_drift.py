"""Drift recovery for bench/edge_ai.py: the demo's drifting Modbus machine and the incremental learning job, end to
end (agent, Modbus simulator and mapper, `mapper ai`'s local controller and our workers, all real processes)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeai import scenarios
from edgeai.crs import load_job_file
from edgeai.il_runtime import IncrementalLearningRuntime
from edgeai.models import SklearnEstimator
from edgeai.runner import JobRunner, RunOptions, free_port
from mapper_cli.ai_demo import machine_stack

DRIFT_AFTER_S = 20.0
TRAIN_WHEN = 100


def _metric(runner: JobRunner, key: str) -> Any:
    assert runner.store is not None
    doc = runner.store.get("IncrementalLearningJob", "default", "machine-retrain") or {}
    for m in (doc.get("status") or {}).get("metrics") or []:
        if m["key"] == key:
            return json.loads(m["value"])
    return None


async def _run(work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with machine_stack(work / "drift", DRIFT_AFTER_S, free_port(), jobs="il", train_when=TRAIN_WHEN) as (
        job_file,
        _children,
    ):
        runner = JobRunner(load_job_file(job_file), RunOptions(state_dir=work / "drift-ai", lc_port=0,
                                                               report_period_s=0.5))  # fmt: skip
        await runner.start()
        rt = runner.runtimes[0]
        assert isinstance(rt, IncrementalLearningRuntime)
        t0 = time.monotonic()
        before: list[float] = []
        low = 1.0
        deployed_at = None
        try:
            while time.monotonic() - t0 < 240:
                await asyncio.sleep(0.5)
                t = time.monotonic() - t0
                acc = _metric(runner, "accuracy")
                if not isinstance(acc, float):
                    continue
                if t < DRIFT_AFTER_S - 1:
                    before.append(acc)
                elif deployed_at is None:
                    low = min(low, acc)
                if deployed_at is None and rt.deployments:
                    deployed_at = t
                    out["labelled"] = _metric(runner, "hardExamplesSaved")
                if deployed_at is not None and t > deployed_at + 25:
                    out["after"] = acc
                    break
        finally:
            await runner.stop()
        out["before"] = before[-1] if before else None
        out["low"] = low
        out["deploy_s"] = (deployed_at - DRIFT_AFTER_S) if deployed_at is not None else None
        x, y = scenarios.drifting_machine(3000, np.random.default_rng(21), drifted=True)
        for key, path in (("model_before", rt.initial_model), ("model_after", rt.deploy_model)):
            est = SklearnEstimator()
            est.load(path)
            out[key] = est.evaluate((x, y))["accuracy"]
    return out


def drift_recovery(work: Path) -> None:
    print(f"\n3. Drift recovery (machine at 10 samples/s, drift after {DRIFT_AFTER_S:.0f} s, train when"
          f" num_of_samples > {TRAIN_WHEN}, deploy when accuracy_delta > 0.05)")  # fmt: skip
    r = asyncio.run(_run(work))

    def pct(v: Any) -> str:
        return f"{v:.1%}" if isinstance(v, float) else "-"

    print(f"   live accuracy (last 200 labelled): before the drift {pct(r.get('before'))}, lowest after it"
          f" {pct(r.get('low'))}, 25 s after the deployment {pct(r.get('after'))}")  # fmt: skip
    print(f"   on 3000 drifted samples: initial model {pct(r['model_before'])}, deployed model {pct(r['model_after'])}")
    print(f"   hard examples labelled into the Dataset by the deployment: {r.get('labelled')}")
    deploy = r.get("deploy_s")
    print(f"   seconds from the drift to the deployment: {deploy:.1f}" if deploy is not None else "   no deployment")
