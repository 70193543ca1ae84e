"""``mapper ai manifests``: a job file as Sedna's controller needs it to run our workers on a real cluster.

What changes from the local job file, and why:
- Model and Dataset urls become absolute paths on the edge node (Sedna mounts a local url's folder into the pod
  with a hostPath and passes ``/home/data/<path>`` in ``MODEL_URL``); relative ones are taken from ``--host-dir``.
- Containers without an image get ``--image``; the command stays (``python -m edgeai.workers.<name>``).
- Edge-side templates get ``nodeName`` (``--node``) so they run where the devices are; a worker whose stream is a
  loopback URL (a mapper's REST API on the node) gets ``hostNetwork: true`` to reach it.
- A hard-example file (``HE_SAVED_URL``, the Dataset's file) is mounted into the inference worker with a hostPath,
  since Sedna mounts only models and datasets it knows of.
- Everything else, ``hpa`` blocks included, is passed through untouched.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgeai.crs import Dataset, IncrementalLearningJob, JobFile, JointInferenceService, Model

DEFAULT_IMAGE = "kubeedge-mapper:latest"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _abs(url: str, host_dir: Path) -> str:
    if "://" in url and not url.startswith("file://"):
        return url
    path = Path(url.removeprefix("file://"))
    return str(path if path.is_absolute() else host_dir / path)


def _env(container: dict[str, Any], name: str) -> str | None:
    for var in container.get("env") or []:
        if var.get("name") == name:
            value = var.get("value")
            return str(value) if value is not None else None
    return None


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    for var in container.get("env") or []:
        if var.get("name") == name:
            var["value"] = value
            return
    container.setdefault("env", []).append({"name": name, "value": value})


def _template(tmpl: dict[str, Any], image: str, node: str | None, host_dir: Path, edge: bool) -> None:
    spec = tmpl.setdefault("spec", {})
    for c in spec.get("containers") or []:
        if not c.get("image") or c.get("image") == DEFAULT_IMAGE:
            c["image"] = image
        stream = _env(c, "STREAM_URL")
        if stream and not stream.startswith(("mqtt://", "http://", "https://", "rtsp://")):
            _set_env(c, "STREAM_URL", _abs(stream, host_dir))
        elif stream and (urlsplit(stream).hostname or "") in LOOPBACK:
            spec["hostNetwork"] = True
            spec["dnsPolicy"] = "ClusterFirstWithHostNet"
        saved = _env(c, "HE_SAVED_URL")
        if saved:
            host_path = _abs(saved, host_dir)
            _set_env(c, "HE_SAVED_URL", host_path)
            folder = str(Path(host_path).parent)
            vol = {"name": "hard-examples", "hostPath": {"path": folder, "type": "DirectoryOrCreate"}}
            spec.setdefault("volumes", []).append(vol)
            c.setdefault("volumeMounts", []).append({"name": "hard-examples", "mountPath": folder})
    if edge and node:
        spec["nodeName"] = node


def manifests(
    job: JobFile, image: str = DEFAULT_IMAGE, node: str | None = None, host_dir: Path | None = None
) -> list[dict[str, Any]]:
    """The job's objects, ready for ``kubectl apply`` on a cluster running Sedna."""
    base = (host_dir or job.path.parent).resolve()
    out: list[dict[str, Any]] = []
    for obj in job.objects:
        doc = copy.deepcopy(obj.model_dump(mode="json", exclude_none=True, exclude={"status"}))
        spec = doc["spec"]
        if isinstance(obj, Model):
            spec["url"] = _abs(obj.spec.url, base)
        elif isinstance(obj, Dataset):
            spec["url"] = _abs(obj.spec.url, base)
            if node:
                spec["nodeName"] = node
        elif isinstance(obj, JointInferenceService):
            _template(spec["edgeWorker"]["template"], image, node, base, edge=True)
            _template(spec["cloudWorker"]["template"], image, None, base, edge=False)
        elif isinstance(obj, IncrementalLearningJob):
            spec["outputDir"] = _abs(obj.spec.outputDir, base)
            _template(spec["trainSpec"]["template"], image, node, base, edge=True)
            _template(spec["evalSpec"]["template"], image, node, base, edge=True)
            _template(spec["deploySpec"]["template"], image, node, base, edge=True)
        out.append(doc)
    return out


def host_files(job: JobFile, host_dir: Path | None = None) -> list[str]:
    """The files the edge node must hold at the paths the manifests name."""
    base = (host_dir or job.path.parent).resolve()
    files = [_abs(m.spec.url, base) for m in job.of(Model)] + [_abs(d.spec.url, base) for d in job.of(Dataset)]
    return list(dict.fromkeys(files))
