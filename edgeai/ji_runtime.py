"""A JointInferenceService run on this machine: its cloud and edge workers, restarted when they die, and its status.

The cloud worker starts first (the edge worker's big model); each worker gets the variables Sedna's global
manager injects (see :func:`cloud_env` and :func:`edge_env`). Status follows Sedna's: ``Pending`` until both
workers run, ``Running``, ``Failed`` with the worker's own last words when one dies; ``metrics`` are the edge
worker's counters as reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeai.crs import JointInferenceService, Model
from edgeai.job_status import Conditions, metrics_list
from edgeai.launcher import WorkerProcess, build_command, worker_name
from edgeai.lc_client import KIND_JOINT_INFERENCE, WorkerMessage, now_iso
from edgeai.status_store import StatusStore

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 30.0)
# The edge worker starts once the cloud worker answers on its port, or after this long: hard examples it sends
# before then would all fall back to the edge's own answer.
CLOUD_READY_S = 30.0


def hem_parameters_json(params: dict[str, str]) -> str:
    return json.dumps([{"key": k, "value": v} for k, v in params.items()])


def cloud_env(ji: JointInferenceService, model_url: str, worker: str, bind_ip: str, port: int) -> dict[str, str]:
    return {
        "NAMESPACE": ji.metadata.namespace,
        "SERVICE_NAME": ji.metadata.name,
        "WORKER_NAME": worker,
        "MODEL_URL": model_url,
        "BIG_MODEL_BIND_IP": bind_ip,
        "BIG_MODEL_BIND_PORT": str(port),
    }


def edge_env(
    ji: JointInferenceService, model_url: str, worker: str, big_model_ip: str, port: int, lc_server: str
) -> dict[str, str]:
    hem = ji.spec.edgeWorker.hardExampleMining
    return {
        "NAMESPACE": ji.metadata.namespace,
        "SERVICE_NAME": ji.metadata.name,
        "WORKER_NAME": worker,
        "MODEL_URL": model_url,
        "BIG_MODEL_IP": big_model_ip,
        "BIG_MODEL_PORT": str(port),
        "HEM_NAME": hem.name,
        "HEM_PARAMETERS": hem_parameters_json(hem.params()),
        "LC_SERVER": lc_server,
    }


@dataclass
class LocalSettings:
    base_dir: Path
    state_dir: Path
    lc_server: str
    lc_period_s: float
    resolve: Callable[[str], str]


class JointInferenceRuntime:
    def __init__(
        self,
        ji: JointInferenceService,
        models: dict[str, Model],
        store: StatusStore,
        settings: LocalSettings,
        cloud_port: int,
    ) -> None:
        self.ji = ji
        self.models = models
        self.store = store
        self.settings = settings
        self.cloud_port = cloud_port
        self.conditions = Conditions()
        self.metrics: list[dict[str, str]] = []
        self.start_time = now_iso()
        self.workers: dict[str, WorkerProcess] = {}
        self.failed = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.reports = 0

    @property
    def kind(self) -> str:
        return KIND_JOINT_INFERENCE

    def _model_url(self, name: str) -> str:
        return self.settings.resolve(self.models[name].spec.url)

    def commands(self) -> dict[str, Any]:
        ji = self.ji
        ns = ji.metadata.namespace
        where = f"JointInferenceService {ns}/{ji.metadata.name} spec"
        cloud_name, edge_name = worker_name("cloudworker"), worker_name("edgeworker")
        extra = {"LC_PERIOD": str(self.settings.lc_period_s)}
        cloud = build_command(
            ji.spec.cloudWorker.template,
            f"{where}.cloudWorker.template",
            {
                **extra,
                **cloud_env(
                    ji, self._model_url(ji.spec.cloudWorker.model.name), cloud_name, "127.0.0.1", self.cloud_port
                ),
            },
            self.settings.base_dir,
        )
        edge_injected = edge_env(
            ji,
            self._model_url(ji.spec.edgeWorker.model.name),
            edge_name,
            "127.0.0.1",
            self.cloud_port,
            self.settings.lc_server,
        )
        edge = build_command(
            ji.spec.edgeWorker.template,
            f"{where}.edgeWorker.template",
            {**extra, **edge_injected},
            self.settings.base_dir,
        )
        # A user's LC_PERIOD in the template wins over ours.
        for cmd, tmpl in ((cloud, ji.spec.cloudWorker.template), (edge, ji.spec.edgeWorker.template)):
            for var in tmpl.spec.containers[0].env:
                if var.name == "LC_PERIOD" and var.value is not None:
                    cmd.env["LC_PERIOD"] = var.value
        logs = self.settings.state_dir / "logs" / ns / ji.metadata.name
        return {
            "cloud": WorkerProcess(cloud_name, cloud, logs / f"{cloud_name}.log"),
            "edge": WorkerProcess(edge_name, edge, logs / f"{edge_name}.log"),
        }

    def on_report(self, msg: WorkerMessage) -> None:
        self.reports += 1
        self.metrics = metrics_list(msg.owner_info)
        self.write_status()

    def write_status(self) -> None:
        running = sum(1 for w in self.workers.values() if w.running)
        status = {
            "conditions": self.conditions.items,
            "startTime": self.start_time,
            "active": running,
            "failed": self.failed,
            "metrics": self.metrics,
        }
        self.store.set_status("JointInferenceService", self.ji.metadata.namespace, self.ji.metadata.name, status)

    async def start(self) -> None:
        self.conditions.set("Pending", "Starting", "starting the cloud and edge workers")
        self.write_status()
        self.workers = self.commands()
        for role in ("cloud", "edge"):
            self._tasks.append(asyncio.create_task(self._supervise(role)))

    async def _cloud_ready(self) -> None:
        """Until the cloud worker accepts connections (it has loaded its model), it exits, or CLOUD_READY_S pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOUD_READY_S
        cloud = self.workers["cloud"]
        while loop.time() < deadline and not self._stopping:
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.cloud_port)
            except OSError:
                if cloud.returncode is not None:
                    return  # the cloud worker failed: its supervisor says why; the edge goes on without it
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        log.warning(
            "%s: the cloud worker does not answer on port %d; starting the edge worker", self.ji.key, self.cloud_port
        )

    async def _supervise(self, role: str) -> None:
        backoff = RESTART_BACKOFF_S[0]
        if role == "edge":
            await self._cloud_ready()
        while not self._stopping:
            worker = self.workers[role]
            try:
                await worker.start()
            except OSError as exc:
                self.failed += 1
                self.conditions.set("Failed", f"{role.capitalize()}WorkerFailed", f"{worker.name}: {exc}")
                self.write_status()
                return
            if all(w.running for w in self.workers.values()):
                self.conditions.set("Running", "WorkersRunning", "the cloud and edge workers are running")
            self.write_status()
            await worker.wait()
            if self._stopping:
                return
            self.failed += 1
            reason = worker.reason()
            log.error("%s worker of %s: %s", role, self.ji.key, reason)
            self.conditions.set("Failed", f"{role.capitalize()}WorkerFailed", reason)
            self.write_status()
            await asyncio.sleep(backoff)
            backoff = min(RESTART_BACKOFF_S[1], backoff * 2)
            worker.returncode = None
            worker.stderr_tail.clear()

    async def stop(self) -> None:
        self._stopping = True
        for w in self.workers.values():
            await w.stop()
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self.write_status()
