"""``mapper ai``: Sedna-compatible AI jobs on device streams, run here or exported for a cluster."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mapper_cli.common import RUNTIME_DIR, LogLevel, Output, dump, fail, setup_logging

ai_app = typer.Typer(
    help="Sedna-compatible AI jobs (joint inference, incremental learning) on device streams.",
    no_args_is_help=True,
)

AI_STATE_DIR = RUNTIME_DIR / "ai"
FileOpt = Annotated[Path, typer.Option("--file", "-f", help="Job file: Sedna CRs (sedna.io/v1alpha1) in YAML.")]
StateOpt = Annotated[Path, typer.Option("--state-dir", help="Where job status and worker logs are kept.")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="Output format.")]
LogOpt = Annotated[LogLevel, typer.Option("--log-level", help="Log level.")]

KINDS = {
    "ji": "JointInferenceService", "jointinferenceservice": "JointInferenceService",
    "jointinferenceservices": "JointInferenceService",
    "il": "IncrementalLearningJob", "incrementallearningjob": "IncrementalLearningJob",
    "incrementallearningjobs": "IncrementalLearningJob",
    "dataset": "Dataset", "datasets": "Dataset", "model": "Model", "models": "Model",
}  # fmt: skip


def register(app: typer.Typer) -> None:
    app.add_typer(ai_app, name="ai")


def _load(path: Path) -> Any:
    from edgeai.crs import CRError, load_job_file

    try:
        return load_job_file(path)
    except CRError as exc:
        fail(f"{exc}\nhint: compare with `mapper ai init DIR`'s files, or Sedna's CRDs (sedna.io/v1alpha1)")


@ai_app.command("validate")
def validate(file: FileOpt) -> None:
    """Check a job file against Sedna's CRD shapes; every error names the file, the object and the field."""
    job = _load(file)
    for obj in job.objects:
        typer.echo(f"ok  {obj.kind} {obj.key}")


def _metric(status: dict[str, Any], key: str) -> str:
    for m in status.get("metrics") or []:
        if m.get("key") == key:
            return str(m.get("value"))
    return "-"


def _summary(doc: dict[str, Any]) -> str:
    status = doc.get("status") or {}
    cond = (status.get("conditions") or [{}])[-1]
    name = f"{doc['metadata'].get('namespace', 'default')}/{doc['metadata']['name']}"
    if doc["kind"] == "JointInferenceService":
        return (
            f"ji {name}: {cond.get('type', '-')}  inferences {_metric(status, 'inferenceNumber')}"
            f"  hard {_metric(status, 'hardExampleNumber')}  upload {_metric(status, 'uploadCloudRatio')}"
            f"  edge acc {_metric(status, 'edgeAccuracy')}  final acc {_metric(status, 'accuracy')}"
            f"  fallbacks {_metric(status, 'cloudFallbackNumber')}"
        )
    msg = cond.get("message") or cond.get("reason") or ""
    return (
        f"il {name}: {cond.get('stage', '-')}/{cond.get('type', '-')}  accuracy {_metric(status, 'accuracy')}"
        f"  hard saved {_metric(status, 'hardExamplesSaved')}  reloads {_metric(status, 'modelReloads')}  {msg}"
    )


@ai_app.command("run")
def run(
    file: FileOpt,
    state_dir: StateOpt = AI_STATE_DIR,
    lc_port: Annotated[int, typer.Option("--lc-port", help="Local controller port (Sedna's LC: 9100; 0: any).")] = 9100,
    report_period: Annotated[
        float, typer.Option("--report-period", help="Seconds between worker reports (LC_PERIOD; Sedna's 30).")
    ] = 2.0,
    duration: Annotated[float, typer.Option("--duration", help="Stop after this many seconds (0: Ctrl-C).")] = 0.0,
    log_level: LogOpt = LogLevel.warning,
) -> None:
    """Run a job file's services and jobs here: workers, a local controller, status in the embedded store."""
    from edgeai.runner import JobRunner, RunOptions, run_job

    setup_logging(log_level)
    job = _load(file)
    for obj in job.objects:
        typer.echo(f"{obj.kind} {obj.key}")
    typer.echo(f"status: mapper ai get ji|il NAME --state-dir {state_dir}   logs: {state_dir / 'logs'}   Ctrl-C stops")
    options = RunOptions(state_dir=state_dir, lc_port=lc_port, report_period_s=report_period)
    last: dict[str, str] = {}

    def tick(runner: JobRunner) -> None:
        assert runner.store is not None
        for kind in ("JointInferenceService", "IncrementalLearningJob"):
            for doc in runner.store.list(kind):
                line = _summary(doc)
                key = f"{kind}/{doc['metadata']['name']}"
                if last.get(key) != line:
                    typer.echo(f"{time.strftime('%H:%M:%S')} {line}")
                    last[key] = line

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if duration > 0:
            loop.call_later(duration, stop.set)
        await run_job(file, options, stop, tick)

    try:
        asyncio.run(main())
    except OSError as exc:
        fail(f"{exc}\nhint: is another `mapper ai run` using port {lc_port}? Give --lc-port")


@ai_app.command("get")
def get(
    kind: Annotated[str, typer.Argument(help="ji, il, dataset or model (or their full names).")],
    name: Annotated[str | None, typer.Argument(help="Object name (all if omitted).")] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace.")] = "default",
    output: OutputOpt = Output.table,
    state_dir: StateOpt = AI_STATE_DIR,
) -> None:
    """Show AI jobs with the status the local controller wrote (Sedna's status fields)."""
    from edgeai.runner import STATUS_FILE
    from edgeai.status_store import StatusStore

    full = KINDS.get(kind.lower())
    if full is None:
        fail(f"unknown kind {kind!r}; use one of ji, il, dataset, model")
        return
    try:
        store = StatusStore(state_dir / STATUS_FILE, readonly=True)
    except FileNotFoundError as exc:
        fail(str(exc))
        return
    try:
        if name is not None:
            doc = store.get(full, namespace, name)
            if doc is None:
                fail(f"{full} {namespace}/{name} not found in {state_dir}; `mapper ai get {kind}` lists them")
                return
            docs = [doc]
        else:
            docs = [d for d in store.list(full) if d["metadata"].get("namespace", "default") == namespace]
    finally:
        store.close()
    if output is not Output.table:
        obj: Any = docs[0] if name is not None else {"apiVersion": "v1", "kind": "List", "items": docs}
        typer.echo(dump(obj, output), nl=False)
        return
    table = Table(box=None)
    for col in ("NAME", "STATUS", "DETAIL"):
        table.add_column(col)
    for d in docs:
        status = d.get("status") or {}
        cond = (status.get("conditions") or [{}])[-1]
        if full == "Dataset":
            table.add_row(d["metadata"]["name"], "-", f"samples {status.get('numberOfSamples', 0)}")
        elif full == "Model":
            table.add_row(d["metadata"]["name"], "-", d["spec"]["url"])
        else:
            state = f"{cond.get('stage', '')}/{cond.get('type', '-')}".lstrip("/")
            table.add_row(d["metadata"]["name"], state, _summary(d).split(": ", 1)[1])
    Console(width=200).print(table)


@ai_app.command("manifests")
def manifests_cmd(
    file: FileOpt,
    image: Annotated[str, typer.Option("--image", help="Container image holding kubeedge-mapper[ai].")] = (
        "kubeedge-mapper:latest"
    ),
    node: Annotated[str | None, typer.Option("--node", help="Edge node for the edge-side workers.")] = None,
    host_dir: Annotated[
        Path | None, typer.Option("--host-dir", help="Folder on the node for relative paths (default: job file's).")
    ] = None,
) -> None:
    """Print the job's CRs as Sedna's controller needs them to run our workers (kubectl apply -f -)."""
    import yaml

    from edgeai.manifests import host_files, manifests

    job = _load(file)
    docs = manifests(job, image, node, host_dir)
    files = host_files(job, host_dir)
    head = [
        "# Sedna objects for our workers; apply with: kubectl apply -f -",
        "# The edge node must hold these files at these paths (Sedna mounts them into the workers):",
        *[f"#   {f}" for f in files],
        "# Sedna injects MODEL_URL, SERVICE_NAME/JOB_NAME, WORKER_NAME, LC_SERVER, BIG_MODEL_IP/PORT, HEM_*;",
        "# the workers read them as Sedna's library does.",
    ]
    typer.echo("\n".join(head))
    typer.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)


@ai_app.command("init")
def init(
    folder: Annotated[Path, typer.Argument(help="Folder to write the sample job into.")],
    stream: Annotated[str, typer.Option("--stream", help="STREAM_URL of the workers.")] = "http://127.0.0.1:7777",
    device: Annotated[str, typer.Option("--device", help="namespace/device the features come from.")] = (
        "default/drifting-machine"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that exist.")] = False,
) -> None:
    """Write a runnable sample: trained models, a Dataset file, a joint inference and an incremental learning job."""
    from edgeai import samples

    targets = [folder / "joint-inference.yaml", folder / "incremental-learning.yaml"]
    if not force and any(t.exists() for t in targets):
        fail(f"{folder} already holds a sample job; give --force to overwrite it")
    models = samples.train_models(folder / "models")
    params = samples.StreamParams(
        url=stream, properties=f"{device}/temperature,{device}/vibration", label=f"{device}/fault"
    )
    rel = {k: str(v.relative_to(folder)) for k, v in models.items()}
    samples.write_dataset(folder / "data" / "machine.csv", ("temperature", "vibration"))
    samples.write_docs(
        targets[0],
        samples.joint_inference_docs("machine-monitor", params, rel["machine-initial"], rel["machine-cloud"]),
    )
    samples.write_docs(
        targets[1],
        samples.incremental_learning_docs(
            "machine-retrain", params, rel["machine-initial"], "models/machine-deployed.pkl", "data/machine.csv"
        ),
    )
    for path in [*targets, *models.values(), folder / "data" / "machine.csv"]:
        typer.echo(f"wrote {path}")
    typer.echo(f"run: mapper ai run -f {targets[1]}")


@ai_app.command("demo")
def demo(
    drift_after: Annotated[float, typer.Option("--drift-after", help="Seconds before the machine drifts.")] = 30.0,
    duration: Annotated[float, typer.Option("--duration", help="Stop after this many seconds (0: Ctrl-C).")] = 0.0,
    runtime_dir: Annotated[Path, typer.Option("--runtime-dir", help="Folder for the demo's files.")] = (
        RUNTIME_DIR / "ai-demo"
    ),
    http_port: Annotated[int, typer.Option("--http-port", help="REST port of the demo's Modbus mapper.")] = 7790,
    log_level: LogOpt = LogLevel.warning,
) -> None:
    """A drifting Modbus machine, a joint inference service and an incremental learning job, live."""
    from mapper_cli.ai_demo import run_demo

    setup_logging(log_level)
    run_demo(runtime_dir, drift_after, duration, http_port, log_level.value)
