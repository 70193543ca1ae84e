"""The agent as the DaemonSet runs it: ``mapper agent --in-cluster`` with nothing but what a pod is given.

A pod has no kubeconfig. The API server's address comes from ``KUBERNETES_SERVICE_HOST``/``PORT``, and the
cluster CA, the service account's token and its namespace from files at
``/var/run/secrets/kubernetes.io/serviceaccount``. No kubelet can run here, so the test builds that world for one
real agent process: a private mount namespace (``unshare``) with a tmpfs over ``/run`` that holds those three
files, the two variables and ``NODE_NAME`` in its environment, and the simulated API server on HTTPS with a
certificate of the test CA, refusing any request without the service account's token. Nothing changes on the
host: the tmpfs exists only inside the agent's namespace.
"""

from __future__ import annotations

import asyncio
import copy
import os
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mapper_framework.config import config_from_dict
from mapper_framework.mapper import Mapper
from tests import crs
from tests.brokers import make_certs
from tests.k8s_sim import KubeApiSimulator
from tests.sdk_driver import FakeFleet, fast_device, until

ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN = "pod-service-account-token-7f3a"
ROOT = Path(__file__).resolve().parent.parent


def on_node(doc: dict[str, Any], node: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["spec"]["nodeName"] = node
    return doc


def in_namespace(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = namespace
    return doc


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[KubeApiSimulator, Path]]:
    certs = make_certs(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs["cert"], certs["key"])
    sim = KubeApiSimulator(token=TOKEN, ssl_context=context)
    await sim.start()
    yield sim, certs["ca"]
    await sim.stop()


def pod_command(account: Path, args: list[str]) -> list[str]:
    """``args`` run in a mount namespace of their own where the service account files sit at the pod's path."""
    run_dir = os.path.realpath("/var/run")  # /run on Debian: the tmpfs goes over the real folder
    script = (
        f'mount -t tmpfs tmpfs "{run_dir}" && mkdir -p "{ACCOUNT_DIR}" && cp "$ACCOUNT"/* "{ACCOUNT_DIR}"/ && exec "$@"'
    )
    # As root a mount namespace is enough; otherwise a user namespace maps us to root inside it.
    userns = [] if os.geteuid() == 0 else ["--map-root-user"]
    return ["unshare", *userns, "--mount", "--propagation", "private", "sh", "-c", script, "pod", *args]


async def test_in_cluster_agent_serves_this_nodes_devices_and_writes_their_status(
    api: tuple[KubeApiSimulator, Path], sockdir: Path, tmp_path: Path
) -> None:
    sim, ca = api
    host_had_secrets = os.path.exists("/var/run/secrets")
    sim.create(crs.model("thermo"))
    sim.create(on_node(fast_device("dev-a"), "edge-1"))
    sim.create(on_node(fast_device("dev-b"), "edge-2"))  # another node's
    # The agent's own namespace (the service account's) says nothing about where this node's Devices live.
    sim.create(in_namespace(crs.model("thermo"), "plant-a"))
    sim.create(in_namespace(on_node(fast_device("dev-c"), "edge-1"), "plant-a"))
    account = tmp_path / "account"
    account.mkdir()
    (account / "token").write_text(TOKEN)
    (account / "namespace").write_text("kubeedge")
    shutil.copy(ca, account / "ca.crt")

    socket = sockdir / "dmi.sock"
    log_path = tmp_path / "agent.log"
    agent_args = [
        sys.executable, "-m", "mapper_cli.main", "agent", "--in-cluster",
        "--socket", str(socket), "--state-dir", str(tmp_path / "state"),
        "--status-interval", "0.2", "--log-level", "info",
    ]  # fmt: skip
    env = {
        **os.environ,
        "ACCOUNT": str(account),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(sim.port),
        "NODE_NAME": "edge-1",
        "PYTHONPATH": str(ROOT),
    }
    with log_path.open("wb") as out:
        agent = subprocess.Popen(pod_command(account, agent_args), env=env, stdout=out, stderr=subprocess.STDOUT)
    fleet = FakeFleet()
    mapper: Mapper | None = None
    try:
        await until(lambda: socket.is_socket() or agent.poll() is not None, timeout=20, what="the agent's socket")
        assert agent.poll() is None, f"the agent exited:\n{log_path.read_text()}"
        config = config_from_dict(
            {
                "grpc_server": {"socket_path": str(sockdir / "testproto.sock")},
                "common": {
                    "name": "test-mapper",
                    "protocol": "testproto",
                    "edgecore_sock": str(socket),
                    "http_port": "0",
                },
                "report": {"retry_initial_s": 0.05, "retry_max_s": 0.5},
            }
        )
        mapper = Mapper(config, fleet)
        await mapper.start()
        await until(lambda: "dev-a" in fleet.devices, timeout=20, what="dev-a (node edge-1) served")
        await until(lambda: "dev-c" in fleet.devices, timeout=20, what="dev-c (namespace plant-a) served")
        assert "dev-b" not in fleet.devices

        fleet.devices["dev-a"].registers[0] = 321

        def reported() -> str | None:
            doc = sim.get("devicestatuses", "default", "dev-a")
            for twin in ((doc or {}).get("status") or {}).get("twins", []):
                if twin["propertyName"] == "temperature":
                    return str(twin["reported"]["value"])
            return None

        await until(lambda: reported() == "321", timeout=20, what="the twin in dev-a's DeviceStatus")
        # Both the list+watch client and the status writer took the pod's configuration: HTTPS to the service
        # address, verified with the account's CA, the account's token on every request (the simulator refuses
        # any other), and the fast status transport rather than the fallback.
        assert sim.requests[("watch", "devices")] >= 1
        assert sim.requests[("patch", "devicestatuses")] >= 1
        log_text = log_path.read_text()
        assert "go through lightkube" not in log_text, log_text
        assert "401" not in log_text and "Unauthorized" not in log_text, log_text
    finally:
        if mapper is not None:
            await mapper.stop()
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            await asyncio.to_thread(agent.wait, 15)
    assert agent.returncode == 0, log_path.read_text()
    assert os.path.exists("/var/run/secrets") == host_had_secrets, "the pod's files leaked onto the host"
