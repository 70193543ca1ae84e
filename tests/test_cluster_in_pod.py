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
import re
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mapper_framework.mapper import Mapper
from tests import crs
from tests.brokers import make_certs
from tests.k8s_sim import KubeApiSimulator
from tests.sdk_driver import fast_device, start_fake_mapper, until

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


class PodAgent:
    """``mapper agent --in-cluster`` started as a pod would start it, with ``ca`` as the cluster CA it is given."""

    def __init__(self, sim: KubeApiSimulator, ca: Path, sockdir: Path, tmp_path: Path) -> None:
        account = tmp_path / "account"
        account.mkdir()
        (account / "token").write_text(TOKEN)
        (account / "namespace").write_text("kubeedge")
        shutil.copy(ca, account / "ca.crt")
        self.socket = sockdir / "dmi.sock"
        self.log = tmp_path / "agent.log"
        args = [
            sys.executable, "-m", "mapper_cli.main", "agent", "--in-cluster",
            "--socket", str(self.socket), "--state-dir", str(tmp_path / "state"),
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
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(pod_command(account, args), env=env, stdout=out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        return self.proc.returncode


def refused_for_auth(log_text: str) -> bool:
    return bool(re.search(r"HTTP/1\.1 (401|403)|Unauthorized|Forbidden", log_text))


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
    agent = PodAgent(sim, ca, sockdir, tmp_path)
    mapper: Mapper | None = None
    try:
        await until(lambda: agent.socket.is_socket() or agent.proc.poll() is not None, 20, "the agent's socket")
        assert agent.proc.poll() is None, f"the agent exited:\n{agent.text()}"
        mapper, fleet = await start_fake_mapper(agent.socket, sockdir)
        await until(lambda: "dev-a" in fleet.devices, timeout=20, what="dev-a (node edge-1) served")
        await until(lambda: "dev-c" in fleet.devices, timeout=20, what="dev-c (namespace plant-a) served")
        assert "dev-b" not in fleet.devices

        fleet.devices["dev-a"].registers[0] = 321
        fleet.devices["dev-c"].registers[0] = 654

        def reported(namespace: str, name: str) -> str | None:
            doc = sim.get("devicestatuses", namespace, name)
            for twin in ((doc or {}).get("status") or {}).get("twins", []):
                if twin["propertyName"] == "temperature":
                    return str(twin["reported"]["value"])
            return None

        await until(lambda: reported("default", "dev-a") == "321", 20, "the twin in dev-a's DeviceStatus")
        await until(lambda: reported("plant-a", "dev-c") == "654", 20, "the twin in plant-a/dev-c's DeviceStatus")
        # Both the list+watch client and the status writer took the pod's configuration: HTTPS to the service
        # address, verified with the account's CA (see the test below), the account's token on every request (the
        # simulator refuses any other), and the fast status transport rather than the fallback.
        assert sim.requests[("watch", "devices")] >= 1
        assert sim.requests[("patch", "devicestatuses")] >= 1
        assert "go through lightkube" not in agent.text(), agent.text()
        assert not refused_for_auth(agent.text()), agent.text()
    finally:
        if mapper is not None:
            await mapper.stop()
        returncode = await agent.stop()
    assert returncode == 0, agent.text()
    assert os.path.exists("/var/run/secrets") == host_had_secrets, "the pod's files leaked onto the host"


async def test_in_cluster_agent_verifies_the_api_server_with_the_accounts_ca(
    api: tuple[KubeApiSimulator, Path], sockdir: Path, tmp_path: Path
) -> None:
    """Given another CA than the one that signed the server's certificate, the agent connects to nothing."""
    sim, _ = api
    sim.create(crs.model("thermo"))
    sim.create(on_node(fast_device("dev-a"), "edge-1"))
    other = tmp_path / "other-ca"
    other.mkdir()
    agent = PodAgent(sim, make_certs(other)["ca"], sockdir, tmp_path)
    try:
        await until(lambda: "CERTIFICATE_VERIFY_FAILED" in agent.text(), 20, "a certificate error in the agent's log")
        assert agent.proc.poll() is None, "the agent must keep running (and retrying), not exit"
        assert sum(sim.requests.values()) == 0, f"requests reached the API server: {dict(sim.requests)}"
    finally:
        await agent.stop()
