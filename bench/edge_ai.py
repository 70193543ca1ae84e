"""Edge AI: joint inference throughput and accuracy, and incremental learning's drift recovery.

Real processes: the big model is our cloud worker (`python -m edgeai.workers.ji_cloud`, aiohttp on loopback), the
edge side is `JointInference` in this process. Models are trained here on generated data (edgeai.scenarios):
a linear edge model (~83%) and a boosted-trees cloud model (~94%). Printed in one run:

1. Inferences/s, unpaced and on a simulated 1 kHz sensor stream (latency p50/p99 from the sample's time to the
   answer, CPU of the edge and cloud processes, peak RSS), for edge-only, joint (CrossEntropy 0.5) and cloud-only.
   Baselines: the same cloud-only loop with a new HTTP connection per request (the pattern of Sedna's client),
   and Sedna's library as measured on this machine size (~116/s at 99% offload; quoted from ../shared/SEDNA.md:
   Sedna's library is not installable here).
2. Fraction sent to the cloud and accuracy for edge-only, joint across CrossEntropy thresholds, and cloud-only.
3. (with --drift) Incremental learning on the demo's drifting Modbus machine, end to end through the agent, the
   simulator, the Modbus mapper's REST API and `mapper ai`'s local controller: accuracy before the drift, after
   it, after the new model is deployed; samples labelled; seconds from the drift to the deployment.

    .venv/bin/python bench/edge_ai.py [--samples 5000] [--drift]
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._measure import CpuWindow, peak_rss_mb
from edgeai import samples, scenarios
from edgeai.config import WorkerEnv
from edgeai.joint_inference import JointInference
from edgeai.models import SklearnEstimator
from edgeai.runner import free_port

SEDNA_QUOTED_PER_S = 116.0


def start_cloud(model: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MODEL_URL": str(model), "BIG_MODEL_BIND_IP": "127.0.0.1", "BIG_MODEL_BIND_PORT": str(port),
           "SERVICE_NAME": "bench", "LOG_LEVEL": "WARNING"}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "edgeai.workers.ji_cloud"], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/bench")
            conn.getresponse().read()
            conn.close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the cloud worker did not start")


def make_ji(edge_model: Path, port: int, hem: str, params: dict[str, str] | None = None) -> JointInference:
    env = WorkerEnv(job_name="bench", service_name="bench", model_url=str(edge_model), big_model_port=port,
                    lc_server=f"http://127.0.0.1:{free_port()}", lc_period_s=3600.0, hem_name=hem,
                    hem_parameters=params or {})  # fmt: skip
    return JointInference(SklearnEstimator(), config=env)


def throughput(ji: JointInference, x: np.ndarray, cloud_pid: int, rate_hz: float | None) -> dict[str, Any]:
    me, cloud = CpuWindow(os.getpid()), CpuWindow(cloud_pid)
    lat: list[float] = []
    me.start()
    cloud.start()
    t0 = time.perf_counter()
    for i, row in enumerate(x):
        due = t0 + i / rate_hz if rate_hz else time.perf_counter()
        if rate_hz:
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        ji.inference(row)
        lat.append(time.perf_counter() - due)
    wall = time.perf_counter() - t0
    return {
        "per_s": len(x) / wall,
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "edge_cpu": me.stop(),
        "cloud_cpu": cloud.stop(),
        "to_cloud": ji.hard_example_number / max(1, ji.inference_number),
        "fallbacks": ji.fallback_number,
    }


def new_connection_per_request(x: np.ndarray, port: int) -> float:
    """Cloud-only with a fresh TCP connection for each request, as a session-less HTTP client does."""
    t0 = time.perf_counter()
    for row in x:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/bench/predict", json.dumps({"data": row.tolist()}), {"Content-Type": "application/json"})
        json.loads(conn.getresponse().read())
        conn.close()
    return len(x) / (time.perf_counter() - t0)


def accuracy_sweep(models: dict[str, Path], port: int, n: int) -> list[tuple[str, float, float]]:
    rng = np.random.default_rng(99)
    x, y = scenarios.bearing(n, rng)
    edge = SklearnEstimator()
    rows: list[tuple[str, float, float]] = []

    def run(name: str, hem: str, params: dict[str, str] | None = None) -> None:
        ji = make_ji(models["bearing-edge"], port, hem, params)
        right = 0
        for row, truth in zip(x, y, strict=True):
            _hard, final, _e, _c = ji.inference(row)
            right += int(np.argmax(final)) == int(truth)
        rows.append((name, ji.hard_example_number / n, right / n))
        ji.close()

    edge.load(str(models["bearing-edge"]))
    run("edge only", "EdgeOnly")
    for th in ("0.1", "0.3", "0.5", "0.7", "0.9"):
        run(f"joint, CrossEntropy {th}", "CrossEntropy", {"threshold_cross_entropy": th})
    run("cloud only", "CloudOnly")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--drift", action="store_true", help="also run the drift-recovery part (about 2 minutes)")
    args = ap.parse_args()
    # The edge side here has no local controller to report to; its "unreachable" warnings would drown the figures.
    logging.getLogger("edgeai.lc_client").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="edge-ai-bench-"))
    models = samples.train_models(work / "models")
    port = free_port()
    cloud = start_cloud(models["bearing-cloud"], port)
    try:
        x, _ = scenarios.bearing(args.samples, np.random.default_rng(5))
        print(f"1. Inferences/s ({args.samples} samples of 3 features; edge LogisticRegression, cloud GBT 150 trees)")
        print(
            f"   {'mode':<34} {'inf/s':>8} {'to cloud':>9} {'p50 ms':>8} {'p99 ms':>8} {'edge CPU':>9} {'cloud CPU':>9}"
        )
        for label, hem, params in (
            ("edge only", "EdgeOnly", None),
            ("joint, CrossEntropy 0.5", "CrossEntropy", {"threshold_cross_entropy": "0.5"}),
            ("cloud only", "CloudOnly", None),
        ):
            for rate in (None, 1000.0):
                ji = make_ji(models["bearing-edge"], port, hem, params)
                r = throughput(ji, x, cloud.pid, rate)
                ji.close()
                mode = f"{label} ({'1 kHz stream' if rate else 'unpaced'})"
                print(f"   {mode:<34} {r['per_s']:8.0f} {r['to_cloud']:8.0%} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}"
                      f" {r['edge_cpu']:8.0f}% {r['cloud_cpu']:8.0f}%")  # fmt: skip
        base = new_connection_per_request(x[: min(2000, len(x))], port)
        print(f"   {'baseline: new connection/request':<34} {base:8.0f} {1:8.0%}   (cloud only, unpaced)")
        print(
            f"   {'baseline: Sedna lib (quoted)':<34} {SEDNA_QUOTED_PER_S:8.0f} {0.99:8.0%}   (SEDNA.md, 99% offload)"
        )
        print(f"   peak RSS: edge (this process) {peak_rss_mb(os.getpid()):.0f} MB,"
              f" cloud worker {peak_rss_mb(cloud.pid):.0f} MB")  # fmt: skip
        print("\n2. Cloud share and accuracy (4000 samples)")
        print(f"   {'mode':<30} {'to cloud':>9} {'accuracy':>9}")
        for name, share, acc in accuracy_sweep(models, port, 4000):
            print(f"   {name:<30} {share:8.1%} {acc:9.1%}")
    finally:
        cloud.terminate()
        cloud.wait(10)
    if args.drift:
        from bench._edge_ai_drift import drift_recovery

        drift_recovery(work)


if __name__ == "__main__":
    main()
