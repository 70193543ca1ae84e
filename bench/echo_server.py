"""Baseline for dmi_ingest: a bare grpc.aio DeviceManagerService that parses the request, answers empty."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc

from dmi.v1beta1 import api_pb2 as pb
from dmi.v1beta1 import api_pb2_grpc


class Echo(api_pb2_grpc.DeviceManagerServiceServicer):  # type: ignore[misc]
    async def ReportDeviceStatus(self, request: Any, context: Any) -> pb.ReportDeviceStatusResponse:
        return pb.ReportDeviceStatusResponse()


async def main(path: str) -> None:
    server = grpc.aio.server()
    api_pb2_grpc.add_DeviceManagerServiceServicer_to_server(Echo(), server)
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
