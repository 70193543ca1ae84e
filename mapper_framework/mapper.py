"""A running mapper: its DeviceMapperService socket, registration with the agent, its devices."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc

from dmi import sockets
from dmi.v1beta1 import api_pb2_grpc
from mapper_framework.agent_client import AgentClient
from mapper_framework.config import MapperConfig
from mapper_framework.mapper_service import MapperService
from mapper_framework.push import PushManager
from mapper_framework.register_answer import RegisterAnswer
from mapper_framework.registry import DeviceRegistry, DriverFactory

if TYPE_CHECKING:
    from mapper_framework.rest import RestApi

log = logging.getLogger(__name__)


class Mapper:
    """``await start()`` serves the mapper socket, registers (withData) and starts the devices."""

    def __init__(self, config: MapperConfig, driver_factory: DriverFactory) -> None:
        self.config = config
        self.client = AgentClient(config, self._registered)
        self.push = PushManager(settings=config.push)
        self.registry = DeviceRegistry(driver_factory, self.client.outbox, config.state, self.push)
        self.rest: RestApi | None = None
        if config.rest.enabled:
            from mapper_framework.rest import RestApi

            self.rest = RestApi(config, self.registry, self.client, self.push)
        self._server: grpc.aio.Server | None = None

    async def _registered(self, answer: RegisterAnswer) -> None:
        await self.registry.sync(answer)

    async def start(self) -> None:
        path = self.config.socket_path
        sockets.claim_socket(path)
        max_bytes = self.config.report.max_message_mb * 1024 * 1024
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes)]
        )
        api_pb2_grpc.add_DeviceMapperServiceServicer_to_server(MapperService(self.registry), server)
        with sockets.private_umask():
            server.add_insecure_port(f"unix:{path}")
            await server.start()
        sockets.restrict(path)
        self._server = server
        log.info("mapper %s (%s) serving on %s", self.config.name, self.config.protocol, path)
        if self.rest is not None:
            await self.rest.start()
        await self._registered(await self.client.register())
        self.client.start()

    async def stop(self) -> None:
        if self.rest is not None:
            await self.rest.stop()
        await self.registry.close()
        # Points already read are the plant's history: give the sinks a moment to take what is queued.
        await self.push.close(flush_s=self.config.push.flush_on_stop_s)
        await self.client.close()
        if self._server is not None:
            await self._server.stop(grace=1.0)
            self._server = None
            self.config.socket_path.unlink(missing_ok=True)
