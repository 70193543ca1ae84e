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
        deployed: list[float] = []
        after: list[float | None] = []
        labelled: list[Any] = []
        try:
            while time.monotonic() - t0 < 300 and len(after) < 2:
                await asyncio.sleep(0.5)
                t = time.monotonic() - t0
                acc = _metric(runner, "accuracy")
                if not isinstance(acc, float):
                    continue
                if t < DRIFT_AFTER_S - 1:
                    before.append(acc)
                elif not deployed:
                    low = min(low, acc)
                if rt.deployments > len(deployed):
                    deployed.append(t)
                    labelled.append(_metric(runner, "hardExamplesSaved"))
                    if len(after) < len(deployed) - 1:
                        after.append(None)  # deployed again before 25 s passed
                if len(deployed) > len(after) and t > deployed[len(after)] + 25:
                    after.append(acc)
        finally:
            await runner.stop()
        out["after"] = after
        out["labelled"] = labelled
        out["deploy_s"] = [d - DRIFT_AFTER_S for d in deployed]
        out["before"] = before[-1] if before else None
        out["low"] = low
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

    after = r.get("after") or []
    print(f"   live accuracy (last 200 labelled): before the drift {pct(r.get('before'))}, lowest after it"
          f" {pct(r.get('low'))}")  # fmt: skip
    for i, (at, acc, n) in enumerate(zip(r["deploy_s"], after, r["labelled"], strict=False), start=1):
        later = pct(acc) if acc is not None else "- (the next deployment came sooner)"
        print(f"   deployment {i}: {at:.1f} s after the drift, {n} hard examples labelled by then;"
              f" live accuracy 25 s later {later}")  # fmt: skip
    if not r["deploy_s"]:
        print("   no deployment")
    print(f"   on 3000 drifted samples: initial model {pct(r['model_before'])}, deployed model at the end"
          f" {pct(r['model_after'])}")  # fmt: skip
