"""The status writer's aiohttp transport: built from the same kubeconfig as lightkube, TLS included."""

from __future__ import annotations

import base64
import ssl
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web
from lightkube import KubeConfig

from dmi.agent.kube_http import StatusPatcher
from tests.brokers import free_port, make_certs


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("kubeedge-mapper-*")}


async def test_https_with_inline_ca_and_client_certificate(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    seen: list[tuple[str, str, dict[str, Any], str | None]] = []

    async def patch(request: web.Request) -> web.Response:
        seen.append((request.path, request.content_type, await request.json(), request.headers.get("Authorization")))
        if request.match_info["name"] == "gone":
            return web.json_response({"kind": "Status", "reason": "NotFound", "message": "not there"}, status=404)
        return web.json_response({"kind": "DeviceStatus"})

    app = web.Application()
    app.router.add_patch("/apis/devices.kubeedge.io/v1beta1/namespaces/{ns}/{plural}/{name}", patch)
    runner = web.AppRunner(app)
    await runner.setup()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(certs["cert"], certs["key"])
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ssl).start()
    before = leftovers()
    config = KubeConfig.from_dict(
        {
            "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                    "certificate-authority-data": b64(certs["ca"])}}],
            "users": [{"name": "u", "user": {"client-certificate-data": b64(certs["cert"]),
                                              "client-key-data": b64(certs["key"]), "token": "t0ken"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )  # fmt: skip
    patcher = StatusPatcher.from_lightkube(config.get())
    assert patcher is not None
    assert leftovers() == before  # the inline key was on disk only while ssl read it
    try:
        body = {"status": {"state": "ok"}}
        ok = await patcher.patch("devicestatus", "default", "thermo", body)
        assert ok.code == 200
        gone = await patcher.patch("device", "plant", "gone", body)
        assert (gone.code, gone.reason, gone.message) == (404, "NotFound", "not there")
    finally:
        await patcher.close()
        await runner.cleanup()
    assert seen[0] == (
        "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devicestatuses/thermo",
        "application/merge-patch+json",
        body,
        "Bearer t0ken",
    )
    assert seen[1][0] == "/apis/devices.kubeedge.io/v1beta1/namespaces/plant/devices/gone"


def test_exec_plugin_auth_stays_with_lightkube(tmp_path: Path) -> None:
    config = KubeConfig.from_dict(
        {
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443",
                                                    "insecure-skip-tls-verify": True}}],
            "users": [{"name": "u", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                                      "command": "get-token"}}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )  # fmt: skip
    assert StatusPatcher.from_lightkube(config.get()) is None
