"""The environment contract of a Sedna worker, read the way Sedna's ``Context`` reads it.

A worker started by Sedna's global manager (or by ``mapper ai run``) learns everything from environment variables:
where its model is, where the big model and the local controller listen, which hard-example mining to use. Names
and defaults follow Sedna (see ``../shared/SEDNA.md`` section 2.1); values are read when asked for, not frozen at
import, so a test or a launcher can set them late.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_LC_SERVER = "http://127.0.0.1:9100"
DEFAULT_BIG_MODEL_PORT = 5000
DEFAULT_LC_PERIOD_S = 30.0


class ConfigError(ValueError):
    """A worker parameter has a value it cannot use; the message names the variable and the expected form."""


def _env() -> Mapping[str, str]:
    return os.environ


class Context:
    """Sedna's ``Context``: worker parameters from the environment."""

    @staticmethod
    def get_parameters(param: str, default: Any = None) -> Any:
        """The value of ``param`` (or of ``param.upper()``) from the environment, else ``default``."""
        env = _env()
        value = env.get(param)
        if value is None:
            value = env.get(param.upper())
        return default if value is None else value

    @staticmethod
    def get_algorithm_from_api(algorithm: str, **param: Any) -> dict[str, Any] | None:
        """``{"method": NAME, "param": {...}}`` for ``HEM`` from ``HEM_NAME``/``HEM_PARAMETERS``; kwargs override."""
        if algorithm.upper() != "HEM":
            return None
        name = Context.get_parameters("HEM_NAME")
        if not name:
            return None
        params = parse_key_values("HEM_PARAMETERS", Context.get_parameters("HEM_PARAMETERS"))
        params.update(param)
        return {"method": name, "param": params}


def parse_key_values(var: str, text: str | None) -> dict[str, Any]:
    """Sedna's ``[{"key": K, "value": V}, ...]`` JSON (the CR's parameter list) as a dict.

    A plain JSON object is accepted too, since people write that by hand.
    """
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = 'expected [{"key": ..., "value": ...}]'
        raise ConfigError(f"{var}={text!r} is not JSON ({exc.msg}); {hint}") from None
    if isinstance(data, dict):
        return dict(data)
    if not isinstance(data, list):
        raise ConfigError(f"{var}: expected a list of {{key, value}} objects, got {type(data).__name__}")
    out: dict[str, Any] = {}
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "key" not in item:
            raise ConfigError(f"{var}[{i}]={item!r}: expected an object with 'key' and 'value'")
        out[str(item["key"])] = item.get("value")
    return out


def _float(var: str, value: str | None, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{var}={value!r} is not a number") from None


def _int(var: str, value: str | None, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{var}={value!r} is not an integer") from None


@dataclass
class WorkerEnv:
    """What Sedna injects into a worker's environment, typed.

    ``job_name`` is the CR's name: ``JOB_NAME`` for incremental/lifelong/federated jobs, ``SERVICE_NAME`` for a
    joint inference service. Sedna's library prefers ``JOB_NAME`` with a default of ``"sedna"`` and so reports
    every joint inference service as "sedna"; we take ``SERVICE_NAME`` first when it is set.
    """

    namespace: str = "default"
    worker_name: str = "worker"
    job_name: str = "sedna"
    service_name: str | None = None
    lc_server: str = DEFAULT_LC_SERVER
    lc_period_s: float = DEFAULT_LC_PERIOD_S
    model_url: str | None = None
    big_model_ip: str = "127.0.0.1"
    big_model_port: int = DEFAULT_BIG_MODEL_PORT
    big_model_bind_ip: str = "0.0.0.0"
    big_model_bind_port: int = DEFAULT_BIG_MODEL_PORT
    big_model_timeout_s: float = 1.0
    hem_name: str | None = None
    hem_parameters: dict[str, Any] = field(default_factory=dict)
    base_model_url: str | None = None
    train_dataset_url: str | None = None
    test_dataset_url: str | None = None
    model_urls: list[str] = field(default_factory=list)
    model_hot_update: bool = False
    model_poll_period_s: float = 60.0
    model_hot_update_config: str | None = None
    mining_mode: str = "inference-then-mining"

    def hem_config(self, **override: Any) -> dict[str, Any] | None:
        """Sedna's ``{"method", "param"}`` form of ``HEM_NAME``/``HEM_PARAMETERS`` (None without a HEM_NAME)."""
        if not self.hem_name:
            return None
        return {"method": self.hem_name, "param": {**self.hem_parameters, **override}}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerEnv:
        e = os.environ if env is None else env
        service = e.get("SERVICE_NAME") or None
        job = service or e.get("JOB_NAME") or "sedna"
        urls = [u for u in (e.get("MODEL_URLS") or "").split(";") if u]
        return cls(
            namespace=e.get("NAMESPACE") or "default",
            worker_name=e.get("WORKER_NAME") or "worker",
            job_name=job,
            service_name=service,
            lc_server=(e.get("LC_SERVER") or DEFAULT_LC_SERVER).rstrip("/"),
            lc_period_s=_float("LC_PERIOD", e.get("LC_PERIOD"), DEFAULT_LC_PERIOD_S),
            model_url=e.get("MODEL_URL") or None,
            big_model_ip=e.get("BIG_MODEL_IP") or "127.0.0.1",
            big_model_port=_int("BIG_MODEL_PORT", e.get("BIG_MODEL_PORT"), DEFAULT_BIG_MODEL_PORT),
            big_model_bind_ip=e.get("BIG_MODEL_BIND_IP") or "0.0.0.0",
            big_model_bind_port=_int("BIG_MODEL_BIND_PORT", e.get("BIG_MODEL_BIND_PORT"), DEFAULT_BIG_MODEL_PORT),
            big_model_timeout_s=_float("BIG_MODEL_TIMEOUT", e.get("BIG_MODEL_TIMEOUT"), 1.0),
            hem_name=e.get("HEM_NAME") or None,
            hem_parameters=parse_key_values("HEM_PARAMETERS", e.get("HEM_PARAMETERS")),
            base_model_url=e.get("BASE_MODEL_URL") or None,
            train_dataset_url=e.get("TRAIN_DATASET_URL") or None,
            test_dataset_url=e.get("TEST_DATASET_URL") or None,
            model_urls=urls,
            model_hot_update=(e.get("MODEL_HOT_UPDATE") or "").lower() in ("1", "true", "yes"),
            model_poll_period_s=max(1.0, _float("MODEL_POLL_PERIOD_SECONDS", e.get("MODEL_POLL_PERIOD_SECONDS"), 60.0)),
            model_hot_update_config=e.get("MODEL_HOT_UPDATE_CONFIG") or None,
            mining_mode=e.get("MINING_MODE") or "inference-then-mining",
        )
