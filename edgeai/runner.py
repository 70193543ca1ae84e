"""``mapper ai run``: a job file's services and jobs on this machine, with a local controller, until stopped.

Relative paths in the job file (Model and Dataset urls, ``outputDir``) are taken from the job file's folder, and
workers run there, so a job folder can be moved as a whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeai.controller import LocalController
from edgeai.crs import Dataset, IncrementalLearningJob, JobFile, JointInferenceService, Model, load_job_file
from edgeai.il_runtime import IncrementalLearningRuntime
from edgeai.ji_runtime import JointInferenceRuntime, LocalSettings
from edgeai.status_store import StatusStore

log = logging.getLogger(__name__)

STATUS_FILE = "status.db"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class RunOptions:
    state_dir: Path
    lc_bind: str = "127.0.0.1"
    lc_port: int = 9100
    report_period_s: float = 2.0
    cloud_port: int | None = None


@dataclass
class JobRunner:
    job: JobFile
    options: RunOptions
    store: StatusStore | None = None
    controller: LocalController | None = None
    runtimes: list[JointInferenceRuntime | IncrementalLearningRuntime] = field(default_factory=list)

    def resolve(self, url: str) -> str:
        path = Path(url.removeprefix("file://"))
        if not path.is_absolute():
            path = self.job.path.parent.resolve() / path
        return str(path)

    async def start(self) -> None:
        opts = self.options
        self.store = StatusStore(opts.state_dir / STATUS_FILE)
        for obj in self.job.objects:
            self.store.put(obj.model_dump(mode="json", exclude_none=True, exclude={"status"}))
        self.controller = LocalController(opts.lc_bind, opts.lc_port)
        await self.controller.start()
        settings = LocalSettings(
            base_dir=self.job.path.parent.resolve(),
            state_dir=opts.state_dir,
            lc_server=self.controller.url,
            lc_period_s=opts.report_period_s,
            resolve=self.resolve,
        )
        models = {m.metadata.name: m for m in self.job.of(Model)}
        for ji in self.job.of(JointInferenceService):
            ns_models = {n: m for n, m in models.items() if m.metadata.namespace == ji.metadata.namespace}
            port = opts.cloud_port or free_port()
            rt: JointInferenceRuntime | IncrementalLearningRuntime = JointInferenceRuntime(
                ji, ns_models, self.store, settings, port
            )
            self._add(rt, ji.metadata.namespace, ji.metadata.name)
        for il in self.job.of(IncrementalLearningJob):
            ns = il.metadata.namespace
            dataset = self.job.find(Dataset, ns, il.spec.dataset.name)
            ns_models = {n: m for n, m in models.items() if m.metadata.namespace == ns}
            rt = IncrementalLearningRuntime(il, dataset, ns_models, self.store, settings)
            self._add(rt, ns, il.metadata.name)
        for rt in self.runtimes:
            await rt.start()

    def _add(self, rt: JointInferenceRuntime | IncrementalLearningRuntime, ns: str, name: str) -> None:
        assert self.controller is not None
        self.controller.register(rt.kind, ns, name, rt.on_report)
        self.runtimes.append(rt)

    async def stop(self) -> None:
        for rt in self.runtimes:
            await rt.stop()
        if self.controller is not None:
            await self.controller.stop()
        if self.store is not None:
            self.store.close()


async def run_job(
    path: Path,
    options: RunOptions,
    stop: asyncio.Event,
    on_tick: Callable[[JobRunner], Awaitable[None] | None] | None = None,
    tick_s: float = 2.0,
) -> None:
    """Run until ``stop`` is set; ``on_tick`` is called every ``tick_s`` (to show progress)."""
    runner = JobRunner(load_job_file(path), options)
    try:
        await runner.start()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick_s)
            if on_tick is not None:
                res: Any = on_tick(runner)
                if asyncio.iscoroutine(res):
                    await res
    finally:
        await runner.stop()
