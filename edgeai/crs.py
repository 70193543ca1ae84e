"""Sedna's ``sedna.io/v1alpha1`` custom resources, as typed objects validated like the upstream CRDs.

Covered kinds: ``JointInferenceService``, ``IncrementalLearningJob``, ``Dataset`` and ``Model``. Required fields
and types follow Sedna's CRD schemas (``build/crds/sedna.io_*.yaml``); unknown fields in the parts we model are
refused (kubectl's strict field validation refuses them too), while a worker's pod template and an ``hpa`` block
are kept as written and passed through untouched. Errors name the file, the object and the field path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

API_VERSION = "sedna.io/v1alpha1"


class CRError(ValueError):
    """A job file or object is invalid; the message names the file, the object and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Metadata(_Open):
    name: str = Field(min_length=1)
    namespace: str = "default"
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", v) or len(v) > 253:
            raise ValueError("must be a lowercase DNS name (a-z, 0-9, '-', '.')")
        return v


class EnvVar(_Open):
    name: str = Field(min_length=1)
    value: str | None = None


class Container(_Open):
    name: str = Field(min_length=1)
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    workingDir: str | None = None


class PodSpec(_Open):
    containers: list[Container] = Field(min_length=1)


class PodTemplate(_Open):
    spec: PodSpec


class ModelRef(_Strict):
    name: str = Field(min_length=1)


class KeyValue(_Strict):
    key: str
    value: str

    @field_validator("value", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        # The CRD says string; YAML turns 0.9 into a float. Accept it as the string it was meant to be.
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


class HardExampleMining(_Strict):
    name: str = Field(min_length=1)
    parameters: list[KeyValue] = Field(default_factory=list)

    def params(self) -> dict[str, str]:
        return {p.key: p.value for p in self.parameters}


class HPA(_Open):
    maxReplicas: int = Field(ge=1)
    minReplicas: int | None = Field(default=None, ge=0)


class EdgeWorker(_Strict):
    model: ModelRef
    hardExampleMining: HardExampleMining
    template: PodTemplate
    hpa: HPA | None = None


class CloudWorker(_Strict):
    model: ModelRef
    template: PodTemplate
    hpa: HPA | None = None


class JointInferenceSpec(_Strict):
    edgeWorker: EdgeWorker
    cloudWorker: CloudWorker


OPERATORS = {
    "gt": ">", ">": ">", "ge": ">=", ">=": ">=", "eq": "==", "=": "==", "==": "==",
    "ne": "!=", "!=": "!=", "le": "<=", "<=": "<=", "lt": "<", "<": "<",
}  # fmt: skip


class Condition(_Strict):
    operator: str
    threshold: float
    metric: str = Field(min_length=1)

    @field_validator("operator")
    @classmethod
    def _known_operator(cls, v: str) -> str:
        if v not in OPERATORS:
            raise ValueError(f"unknown operator {v!r}; use one of {', '.join(OPERATORS)}")
        return v

    @field_validator("metric")
    @classmethod
    def _metric_form(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\[\d+\])?", v):
            raise ValueError(f"{v!r} is not a metric name, optionally indexed like precision_delta[0]")
        return v


class Timer(_Strict):
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        m = re.fullmatch(r"(\d\d):(\d\d)", v)
        if not m or int(m[1]) > 24 or int(m[2]) > 59 or (int(m[1]) == 24 and int(m[2]) != 0):
            raise ValueError(f"{v!r} is not a time of day HH:MM (00:00 to 24:00)")
        return v


class Trigger(_Strict):
    checkPeriodSeconds: int | None = Field(default=None, ge=1)
    timer: Timer | None = None
    condition: Condition


class DatasetRef(_Strict):
    name: str = Field(min_length=1)
    trainProb: float = Field(ge=0.0, le=1.0)


class TrainSpec(_Strict):
    template: PodTemplate
    trigger: Trigger


class EvalSpec(_Strict):
    template: PodTemplate
    initialEvalModel: ModelRef | None = None


class DeployModel(_Strict):
    name: str = Field(min_length=1)
    hotUpdateEnabled: bool = False
    pollPeriodSeconds: int = Field(default=60, ge=1)


class DeploySpec(_Strict):
    model: DeployModel
    trigger: Trigger
    hardExampleMining: HardExampleMining
    template: PodTemplate


class IncrementalLearningSpec(_Strict):
    dataset: DatasetRef
    initialModel: ModelRef
    trainSpec: TrainSpec
    evalSpec: EvalSpec
    deploySpec: DeploySpec
    credentialName: str | None = None
    outputDir: str = Field(min_length=1)


class DatasetSpec(_Strict):
    url: str = Field(min_length=1)
    format: str = Field(min_length=1)
    nodeName: str = Field(min_length=1)
    credentialName: str | None = None


class ModelSpec(_Strict):
    url: str = Field(min_length=1)
    format: str = Field(min_length=1)
    device_soc_versions: list[str] = Field(default_factory=list)
    credentialName: str | None = None


class _Object(_Strict):
    apiVersion: Literal["sedna.io/v1alpha1"]
    metadata: Metadata
    status: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"


class JointInferenceService(_Object):
    kind: Literal["JointInferenceService"]
    spec: JointInferenceSpec


class IncrementalLearningJob(_Object):
    kind: Literal["IncrementalLearningJob"]
    spec: IncrementalLearningSpec


class Dataset(_Object):
    kind: Literal["Dataset"]
    spec: DatasetSpec


class Model(_Object):
    kind: Literal["Model"]
    spec: ModelSpec


SednaObject = JointInferenceService | IncrementalLearningJob | Dataset | Model
KINDS: dict[str, type[_Object]] = {
    "JointInferenceService": JointInferenceService,
    "IncrementalLearningJob": IncrementalLearningJob,
    "Dataset": Dataset,
    "Model": Model,
}
SHORT_NAMES = {"ji": "JointInferenceService", "il": "IncrementalLearningJob", "dataset": "Dataset", "model": "Model"}


def _loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check its spelling against Sedna's CRD)"
        elif err["type"] == "literal_error" and err["loc"] and err["loc"][-1] == "apiVersion":
            msg = f"must be {API_VERSION}"
        lines.append(f"{_loc(err['loc'])}: {msg}")
    return "; ".join(lines)


def parse_object(doc: Any, where: str) -> SednaObject:
    """One CR from a YAML document; ``where`` names the file and document for errors."""
    if not isinstance(doc, dict):
        raise CRError(f"{where}: expected a mapping with apiVersion, kind, metadata and spec")
    kind = doc.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise CRError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}; fix the kind field")
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    try:
        return cls.model_validate(doc)  # type: ignore[return-value]
    except ValidationError as exc:
        raise CRError(f"{where}: {kind} {name or '?'}: {_describe(exc)}") from None


@dataclass
class JobFile:
    """Every Sedna object of a job file (one or more YAML documents)."""

    path: Path
    objects: list[SednaObject]

    def of(self, cls: type[Any]) -> list[Any]:
        return [o for o in self.objects if isinstance(o, cls)]

    def find(self, cls: type[Any], namespace: str, name: str) -> Any:
        for o in self.objects:
            if isinstance(o, cls) and o.metadata.namespace == namespace and o.metadata.name == name:
                return o
        raise CRError(f"{self.path}: no {cls.__name__} {namespace}/{name} in this file (it is referenced)")


def load_job_file(path: Path) -> JobFile:
    """Parse and validate a job file; every referenced Model and Dataset must be in it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CRError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise CRError(f"{path}:{at}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not docs:
        raise CRError(f"{path}: no objects in the file")
    objects = [parse_object(d, f"{path} (document {i + 1})") for i, d in enumerate(docs)]
    job = JobFile(path, objects)
    seen: set[tuple[str, str]] = set()
    for o in objects:
        ident = (o.kind, o.key)
        if ident in seen:
            raise CRError(f"{path}: {o.kind} {o.key} is defined twice")
        seen.add(ident)
    for ji in job.of(JointInferenceService):
        ns = ji.metadata.namespace
        job.find(Model, ns, ji.spec.edgeWorker.model.name)
        job.find(Model, ns, ji.spec.cloudWorker.model.name)
    for il in job.of(IncrementalLearningJob):
        ns = il.metadata.namespace
        job.find(Dataset, ns, il.spec.dataset.name)
        job.find(Model, ns, il.spec.initialModel.name)
        job.find(Model, ns, il.spec.deploySpec.model.name)
        if il.spec.evalSpec.initialEvalModel is not None:
            job.find(Model, ns, il.spec.evalSpec.initialEvalModel.name)
    if not job.of(JointInferenceService) and not job.of(IncrementalLearningJob):
        raise CRError(f"{path}: no JointInferenceService or IncrementalLearningJob to run")
    return job
