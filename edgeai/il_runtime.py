"""An IncrementalLearningJob run on this machine: Sedna's train -> eval -> deploy loop with its inference worker.

- The inference worker (``deploySpec.template``) runs all along with the deploy model and hot update; it appends
  the hard examples it finds, labelled when its stream gives labels, to the Dataset's file.
- The Dataset file is re-read as it grows (``csv`` with a header line, or ``txt``, one sample a line); new samples
  are split ``trainProb`` to training, the rest to evaluation (the last 5 batches of eval samples are kept).
- Train: when ``trainSpec.trigger`` holds for ``num_of_samples`` (the training samples gathered since the last
  round), within its timer, checked every ``checkPeriodSeconds``; the train worker trains from the last model.
- Eval: the new model and the deployed one on the eval samples; ``deploySpec.trigger`` is checked on the metrics
  and their ``<name>_delta`` (new - deployed).
- Deploy: the trained model is copied over the deploy Model's file and the hot-update config is rewritten; the
  inference worker reloads it without a restart (or, with ``hotUpdateEnabled: false``, is restarted on it).

Every step is a condition in the job's status (``stage``, ``type``, ``data`` as JSON), as Sedna writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeai.crs import Dataset, IncrementalLearningJob, Model
from edgeai.incremental_learning import model_format
from edgeai.ji_runtime import LocalSettings, hem_parameters_json
from edgeai.job_status import Conditions, metrics_list
from edgeai.launcher import WorkerProcess, build_command, worker_name
from edgeai.lc_client import KIND_INCREMENTAL_LEARNING, WorkerMessage, now_iso
from edgeai.status_store import StatusStore
from edgeai.trigger import TriggerState, compare, in_window, metric_value

log = logging.getLogger(__name__)

EVAL_BATCHES_KEPT = 5
TICK_S = 0.25


@dataclass
class DatasetReader:
    """Complete new lines of a dataset index file, its csv header kept apart."""

    path: Path
    fmt: str
    header: str | None = None
    offset: int = 0
    count: int = 0
    error: str | None = None

    def read_new(self) -> list[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError as exc:
            self.error = f"dataset file {self.path}: {exc.strerror}"
            return []
        self.error = None
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        lines = [ln for ln in chunk[: end + 1].decode(errors="replace").splitlines() if ln.strip()]
        if self.fmt == "csv" and self.header is None and lines:
            self.header = lines.pop(0)
        self.count += len(lines)
        return lines


@dataclass
class StageRun:
    stage: str
    worker: WorkerProcess
    round: int
    data: dict[str, Any]
    results: list[dict[str, Any]] | None = None
    failed: str | None = None


@dataclass
class ILState:
    train_samples: list[str] = field(default_factory=list)
    eval_batches: list[list[str]] = field(default_factory=list)
    rounds: int = 0
    trained_url: str | None = None
    deploy_wait: dict[str, Any] | None = None


class IncrementalLearningRuntime:
    def __init__(
        self,
        job: IncrementalLearningJob,
        dataset: Dataset,
        models: dict[str, Model],
        store: StatusStore,
        settings: LocalSettings,
    ) -> None:
        self.job = job
        self.dataset = dataset
        self.models = models
        self.store = store
        self.settings = settings
        spec = job.spec
        self.output_dir = Path(settings.resolve(spec.outputDir))
        self.reader = DatasetReader(Path(settings.resolve(dataset.spec.url)), dataset.spec.format.lower())
        self.initial_model = settings.resolve(models[spec.initialModel.name].spec.url)
        self.deploy_model = settings.resolve(models[spec.deploySpec.model.name].spec.url)
        eval_ref = spec.evalSpec.initialEvalModel
        self.eval_baseline = settings.resolve(models[eval_ref.name].spec.url) if eval_ref else self.deploy_model
        self.hot_update_config = self.output_dir / "deploy" / "model_config.json"
        self.train_trigger = TriggerState(spec.trainSpec.trigger)
        self.deploy_trigger = TriggerState(spec.deploySpec.trigger)
        self.state = ILState()
        self.conditions = Conditions()
        self.metrics: list[dict[str, str]] = []
        self.start_time = now_iso()
        self.run: StageRun | None = None
        self.inference: WorkerProcess | None = None
        self.deployments = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._wake = asyncio.Event()
        self._redeploying = False

    @property
    def kind(self) -> str:
        return KIND_INCREMENTAL_LEARNING

    @property
    def ns(self) -> str:
        return self.job.metadata.namespace

    @property
    def where(self) -> str:
        return f"IncrementalLearningJob {self.ns}/{self.job.metadata.name} spec"

    def _logs(self) -> Path:
        return self.settings.state_dir / "logs" / self.ns / self.job.metadata.name

    def _base_env(self, worker: str) -> dict[str, str]:
        return {
            "NAMESPACE": self.ns,
            "JOB_NAME": self.job.metadata.name,
            "WORKER_NAME": worker,
            "LC_SERVER": self.settings.lc_server,
            "LC_PERIOD": str(self.settings.lc_period_s),
        }

    # -- status ------------------------------------------------------------------------------------------------
    def write_status(self) -> None:
        status = {"conditions": self.conditions.items, "startTime": self.start_time, "metrics": self.metrics}
        self.store.set_status("IncrementalLearningJob", self.ns, self.job.metadata.name, status)
        self.store.set_status(
            "Dataset",
            self.dataset.metadata.namespace,
            self.dataset.metadata.name,
            {"updateTime": now_iso(), "numberOfSamples": self.reader.count},
        )

    def _condition(self, stage: str, ctype: str, reason: str = "", message: str = "", data: Any = None) -> None:
        extra: dict[str, Any] = {"stage": stage}
        if data is not None:
            extra["data"] = json.dumps(data)
        if self.conditions.set(ctype, reason, message, **extra):
            log.info("%s: %s %s %s", self.job.key, stage, ctype, message or reason)
        self.write_status()

    # -- reports -----------------------------------------------------------------------------------------------
    def on_report(self, msg: WorkerMessage) -> None:
        run = self.run
        if msg.kind == "inference" or (self.inference is not None and msg.name == self.inference.name):
            self.metrics = metrics_list(msg.owner_info)
            self.write_status()
            return
        if run is None or msg.name != run.worker.name:
            log.warning("%s: report from %s, which is not this job's current worker", self.job.key, msg.name)
            return
        if msg.status == "completed":
            run.results = msg.results
        elif msg.status == "failed":
            run.failed = str(msg.owner_info.get("error") or "the worker reported a failure")
        self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if not Path(self.deploy_model).exists() and Path(self.initial_model).exists():
            # Nothing deployed yet: the initial model serves until the first deployment.
            _copy_model(self.initial_model, self.deploy_model)
        self._write_hot_update(self.deploy_model)
        self._condition("Train", "Waiting", "WaitingForTrigger", "waiting for the train trigger")
        self._tasks.append(asyncio.create_task(self._supervise_inference()))
        self._tasks.append(asyncio.create_task(self._loop()))

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for w in (self.inference, self.run.worker if self.run else None):
            if w is not None:
                await w.stop()
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self.write_status()

    async def _supervise_inference(self) -> None:
        spec = self.job.spec.deploySpec
        name = worker_name("inferworker")
        hem = spec.hardExampleMining
        injected = {
            **self._base_env(name),
            "MODEL_URL": self.deploy_model,
            "HEM_NAME": hem.name,
            "HEM_PARAMETERS": hem_parameters_json(hem.params()),
        }
        if spec.model.hotUpdateEnabled:
            injected.update(
                {
                    "MODEL_HOT_UPDATE": "true",
                    "MODEL_POLL_PERIOD_SECONDS": str(spec.model.pollPeriodSeconds),
                    "MODEL_HOT_UPDATE_CONFIG": str(self.hot_update_config),
                }
            )
        cmd = build_command(spec.template, f"{self.where}.deploySpec.template", injected, self.settings.base_dir)
        worker = self.inference = WorkerProcess(name, cmd, self._logs() / f"{name}.log")
        backoff = 1.0
        while not self._stopping:
            await worker.start()
            await worker.wait()
            if self._stopping:
                return
            if self._redeploying:
                # Stopped on purpose to pick up a new model (no hot update): start again at once.
                self._redeploying = False
                worker.returncode = None
                continue
            self._condition("Deploy", "Failed", "InferenceWorkerFailed", worker.reason())
            await asyncio.sleep(backoff)
            backoff = min(30.0, backoff * 2)
            worker.returncode = None

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self._step()
            except Exception as exc:  # a bad step must not end the job; say what happened
                log.exception("%s: step failed", self.job.key)
                self._condition(self.run.stage if self.run else "Train", "Failed", "ControllerError", str(exc))
                self.run = None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)

    def _read_dataset(self) -> None:
        new = self.reader.read_new()
        if self.reader.error:
            self._condition("Train", "Waiting", "DatasetUnreadable", self.reader.error)
        if not new:
            return
        n_train = int(self.job.spec.dataset.trainProb * len(new))
        self.state.train_samples.extend(new[:n_train])
        if new[n_train:]:
            self.state.eval_batches.append(new[n_train:])
        self.write_status()

    async def _step(self) -> None:
        self._read_dataset()
        run = self.run
        if run is not None:
            await self._follow(run)
            return
        if self.state.deploy_wait is not None:
            self._deploy(self.state.deploy_wait)
            return
        stats = {"num_of_samples": len(self.state.train_samples)}
        if self.train_trigger.evaluate(stats):
            await self._start_train()

    # -- train ---------------------------------------------------------------------------------------------------
    def _write_samples(self, kind: str, round_: int, samples: list[str]) -> Path:
        ext = "csv" if self.reader.fmt == "csv" else "txt"
        path = self.output_dir / "data" / kind / str(round_) / f"data.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ([self.reader.header] if self.reader.header else []) + samples
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    async def _start_train(self) -> None:
        st = self.state
        st.rounds += 1
        # Each round trains on from the model that serves now.
        base = self.deploy_model
        data_url = self._write_samples("train", st.rounds, st.train_samples)
        out_dir = self.output_dir / "train" / str(st.rounds)
        name = worker_name("train-worker")
        data = {
            "input": {
                "models": [{"format": model_format(base), "url": base}],
                "dataURL": str(data_url),
                "outputDir": str(out_dir),
            }
        }
        injected = {
            **self._base_env(name),
            "BASE_MODEL_URL": base,
            "TRAIN_DATASET_URL": str(data_url),
            "ORIGINAL_DATASET_URL": str(self.reader.path),
            "MODEL_URL": str(out_dir),
        }
        self._condition("Train", "Ready", "TriggerFired", f"round {st.rounds}: {len(st.train_samples)} samples", data)
        cmd = build_command(
            self.job.spec.trainSpec.template, f"{self.where}.trainSpec.template", injected, self.settings.base_dir
        )
        worker = WorkerProcess(name, cmd, self._logs() / f"{name}.log")
        self.run = StageRun("Train", worker, st.rounds, data)
        self._condition("Train", "Starting", "", f"starting {name}", data)
        await worker.start()
        self._condition("Train", "Running", "", f"{name} is training", data)

    async def _follow(self, run: StageRun) -> None:
        worker = run.worker
        if run.results is None and run.failed is None:
            if worker.running and worker.proc is not None and worker.proc.returncode is None:
                return
            await worker.wait()
            if run.results is None and run.failed is None:
                run.failed = worker.reason()
        if worker.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.wait(), 10.0)
        self.run = None
        if run.failed is not None:
            self._condition(run.stage, "Failed", f"{run.stage}Failed", run.failed, run.data)
            if run.stage == "Eval":
                self._condition("Train", "Waiting", "WaitingForTrigger", "waiting for the train trigger")
            return
        results = run.results or []
        if run.stage == "Train":
            await self._train_done(run, results)
        else:
            self._eval_done(run, results)

    async def _train_done(self, run: StageRun, results: list[dict[str, Any]]) -> None:
        if not results or not results[0].get("url"):
            self._condition("Train", "Failed", "NoModel", "the train worker reported no model", run.data)
            return
        st = self.state
        st.trained_url = str(results[0]["url"])
        st.train_samples = []
        self._condition("Train", "Completed", "", f"round {run.round} trained", {**run.data, "output": {
            "models": results}})
        samples = [s for batch in st.eval_batches for s in batch]
        if not samples:
            self._condition("Eval", "Failed", "NoEvalSamples",
                            "no eval samples yet: the dataset's trainProb sent every new sample to training")
            self._condition("Train", "Waiting", "WaitingForTrigger", "waiting for the train trigger")
            return
        data_url = self._write_samples("eval", run.round, samples)
        del st.eval_batches[:-EVAL_BATCHES_KEPT]
        baseline = self.deploy_model if self.deployments else self.eval_baseline
        urls = [st.trained_url, baseline]
        name = worker_name("eval-worker")
        data = {"input": {"models": [{"format": model_format(u), "url": u} for u in urls], "dataURL": str(data_url)}}
        injected = {**self._base_env(name), "MODEL_URLS": ";".join(urls), "TEST_DATASET_URL": str(data_url),
                    "MODEL_URL": st.trained_url}
        cmd = build_command(
            self.job.spec.evalSpec.template, f"{self.where}.evalSpec.template", injected, self.settings.base_dir
        )
        worker = WorkerProcess(name, cmd, self._logs() / f"{name}.log")
        self.run = StageRun("Eval", worker, run.round, data)
        self._condition("Eval", "Starting", "", f"starting {name}", data)
        await worker.start()
        self._condition("Eval", "Running", "", f"{name} is evaluating {len(samples)} samples", data)

    def _eval_done(self, run: StageRun, results: list[dict[str, Any]]) -> None:
        if len(results) != 2:
            self._condition("Eval", "Failed", "EvalResults", f"expected 2 evaluation results, got {len(results)}")
            self._condition("Train", "Waiting", "WaitingForTrigger", "waiting for the train trigger")
            return
        new, old = (r.get("metrics") or {} for r in results)
        metrics: dict[str, Any] = {}
        for key, values in new.items():
            metrics[key] = values
            if key in old:
                metrics[f"{key}_delta"] = [a - b for a, b in zip(values, old[key], strict=False)]
        self._condition("Eval", "Completed", "", f"round {run.round} evaluated",
                        {**run.data, "output": {"models": results}, "metrics": metrics})
        self.state.deploy_wait = {"round": run.round, "metrics": metrics, "results": results}
        self.deploy_trigger.last_check = None
        self._deploy(self.state.deploy_wait)

    # -- deploy --------------------------------------------------------------------------------------------------
    def _deploy(self, pending: dict[str, Any]) -> None:
        trig = self.deploy_trigger
        if not trig.due():
            return
        trig.last_check = trig.clock()
        spec = trig.spec
        cond = spec.condition
        if spec.timer is not None and not in_window(spec.timer.start, spec.timer.end, trig.wall().strftime("%H:%M")):
            self._condition("Deploy", "Waiting", "OutsideTimer",
                            f"deploy waits for its window {spec.timer.start}-{spec.timer.end}")
            return
        try:
            value = metric_value(pending["metrics"], cond.metric)
        except ValueError as exc:
            self.state.deploy_wait = None
            self._condition("Deploy", "Completed", "NotDeployed", f"deploy trigger: {exc}")
            self._condition("Train", "Waiting", "WaitingForTrigger", "waiting for the train trigger")
            return
        self.state.deploy_wait = None
        verdict = f"{cond.metric}={value:.4g} {cond.operator} {cond.threshold:g}"
        if not compare(value, cond.operator, cond.threshold):
            self._condition("Deploy", "Completed", "NotDeployed", f"kept the deployed model: {verdict} is false")
            self._condition("Train", "Waiting", "WaitingForTrigger", "waiting for the train trigger")
            return
        trained = self.state.trained_url
        assert trained is not None
        _copy_model(trained, self.deploy_model)
        self._write_hot_update(self.deploy_model)
        self.deployments += 1
        if not self.job.spec.deploySpec.model.hotUpdateEnabled and self.inference is not None:
            # Without hot update Sedna replaces the inference worker; here it is restarted on the new model.
            self._redeploying = True
            self._tasks.append(asyncio.create_task(self.inference.stop()))
        new_metrics = pending["results"][0].get("metrics") or {}
        model = self.models[self.job.spec.deploySpec.model.name]
        self.store.set_status(
            "Model", model.metadata.namespace, model.metadata.name,
            {"updateTime": now_iso(), "metrics": metrics_list(new_metrics)},
        )
        data = {"output": {"models": [{"format": model_format(self.deploy_model), "url": self.deploy_model,
                                       "metrics": new_metrics}]}, "trainedModel": trained}
        self._condition("Deploy", "Completed", "Deployed", f"round {pending['round']} deployed: {verdict}", data)
        self._condition("Train", "Waiting", "WaitingForTrigger", "waiting for the train trigger")

    def _write_hot_update(self, model_path: str) -> None:
        self.hot_update_config.parent.mkdir(parents=True, exist_ok=True)
        body = {"model_config": {"model_path": model_path, "model_update_time": f"{time.time():.6f}"}}
        tmp = self.hot_update_config.with_suffix(".tmp")
        tmp.write_text(json.dumps(body), encoding="utf-8")
        os.replace(tmp, self.hot_update_config)


def _copy_model(src: str, dst: str) -> None:
    """Copy a model file (or a model folder's single file) over ``dst`` atomically."""
    source = Path(src)
    if source.is_dir():
        files = [p for p in source.iterdir() if p.is_file()]
        if len(files) != 1:
            raise FileNotFoundError(f"model folder {source} holds {len(files)} files; cannot tell which to deploy")
        source = files[0]
    target = Path(dst)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
