"""``mapper crds install``: put KubeEdge's device CRDs (DeviceModel, Device, DeviceStatus) on a cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from mapper_cli.common import fail

CRD_FILES = ("devices_v1beta1_devicemodel.yaml", "devices_v1beta1_device.yaml", "devices_v1beta1_devicestatus.yaml")

crds_app = typer.Typer(name="crds", help="KubeEdge's device CRDs on a cluster.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(crds_app)


def crd_documents() -> list[dict[str, Any]]:
    """The three CRDs shipped in the ``crds`` package."""
    folder = Path(__file__).resolve().parent.parent / "crds"
    return [yaml.safe_load((folder / name).read_text()) for name in CRD_FILES]


async def install(kubeconfig: Path | None) -> list[str]:
    """Server-side apply of each CRD (created, or updated to ours); returns their names."""
    from lightkube.generic_resource import create_global_resource

    from dmi.agent.kube import make_client

    crd = create_global_resource("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions")
    client = make_client(kubeconfig)
    names = []
    try:
        for doc in crd_documents():
            name = doc["metadata"]["name"]
            obj: Any = crd(**doc)
            await client.apply(obj, name=name, field_manager="kubeedge-mapper", force=True)
            names.append(name)
    finally:
        await client.close()
    return names


@crds_app.command("install")
def install_command(
    kubeconfig: Annotated[
        Path | None, typer.Option("--kubeconfig", help="The cluster's kubeconfig (default: in-cluster config).")
    ] = None,
) -> None:
    """Apply the DeviceModel, Device and DeviceStatus CRDs (server-side apply; safe to run again)."""
    from lightkube import ApiError

    from dmi.agent.kube import KubeUnavailable

    if kubeconfig is not None and not kubeconfig.is_file():
        fail(f"--kubeconfig {kubeconfig}: no such file. Hint: the path of a kubeconfig, e.g. ~/.kube/config")
    try:
        names = asyncio.run(install(kubeconfig))
    except KubeUnavailable as exc:
        fail(str(exc))
        raise AssertionError from exc
    except ApiError as exc:
        fail(f"the cluster refused a CRD: {exc.status.code} {exc.status.reason}: {exc.status.message}")
        raise AssertionError from exc
    except OSError as exc:
        fail(f"cannot reach the cluster: {exc}. Hint: check the kubeconfig's server address")
        raise AssertionError from exc
    for name in names:
        typer.echo(f"customresourcedefinition.apiextensions.k8s.io/{name} serverside-applied")
