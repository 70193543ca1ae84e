"""A test driver for real-process tests (not shipped): the device is a JSON file the test edits.

``configData.file`` names ``{"registers": {"0": 215, ...}, "down": false}``; writes are appended to
``<file>.writes`` as JSON lines, so the test can see them from outside the mapper process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mapper_framework.driver import Driver


@dataclass
class FileProtocol:
    file: str


@dataclass
class FileVisitor:
    offset: int = 0


class FileDriver(Driver[FileProtocol, FileVisitor]):
    protocol_config = FileProtocol
    visitor_config = FileVisitor

    def __init__(self) -> None:
        self.path: Path | None = None

    async def connect(self, config: FileProtocol) -> None:
        self.path = Path(config.file)

    def _load(self) -> dict[str, Any]:
        assert self.path is not None
        data: dict[str, Any] = json.loads(self.path.read_text())
        if data.get("down"):
            raise ConnectionError("device does not answer")
        return data

    async def read(self, visitor: FileVisitor) -> Any:
        return self._load()["registers"].get(str(visitor.offset), 0)

    async def write(self, visitor: FileVisitor, value: Any) -> None:
        self._load()
        assert self.path is not None
        with self.path.with_suffix(".writes").open("a") as f:
            f.write(json.dumps({"offset": visitor.offset, "value": value}) + "\n")
