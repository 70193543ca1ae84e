"""What the agent accepts in DeviceManagerService requests.

The rules are real edgecore's, made explicit: where edgecore silently drops a
value later, or dereferences a missing field and crashes, we answer at once
with INVALID_ARGUMENT and a message that names the field and the rule.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

TWIN_NAME_RE = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,128}$")
TWIN_VALUE_RE = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,512}$")
TWIN_NAME_RULE = "^[a-zA-Z0-9-_.,:/@#]{1,128}$"
TWIN_VALUE_RULE = "^[a-zA-Z0-9-_.,:/@#]{1,512}$"

DEVICE_STATES = ("ok", "online", "offline", "unhealthy", "unknown")
ONLINE_STATES = ("ok", "online")


class RequestError(ValueError):
    """A request the agent refuses; ``code`` names the gRPC status to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def invalid(message: str) -> RequestError:
    return RequestError("INVALID_ARGUMENT", message)


def not_found(message: str) -> RequestError:
    return RequestError("NOT_FOUND", message)


MAX_NAME = 253  # a Kubernetes object name (DNS-1123 subdomain)


def shown(text: str, limit: int = 60) -> str:
    """``text`` quoted and cut short: error details travel in gRPC metadata, which has a size limit."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def check_object_name(field: str, name: str) -> None:
    if len(name) > MAX_NAME:
        raise invalid(f"{field} {shown(name)} is {len(name)} characters long; Kubernetes names have at most {MAX_NAME}")


def check_twin_name(index: int, name: str) -> None:
    if not TWIN_NAME_RE.match(name):
        raise invalid(f"twins[{index}].propertyName {shown(name)} does not match {TWIN_NAME_RULE}")


def check_twin_value(index: int, name: str, side: str, value: str) -> None:
    # Empty values are exempt, as in edgecore.
    if value and not TWIN_VALUE_RE.match(value):
        raise invalid(
            f"twins[{index}] ({name}) {side}.value {shown(value)} does not match {TWIN_VALUE_RULE}"
            " (no spaces, '+', quotes or braces; format numbers plainly, e.g. -350 not -3.5e+2)"
        )


def normalise_state(state: str) -> str:
    """Check a state (case-insensitively, like edgecore); return it verbatim."""
    if state.lower() not in DEVICE_STATES:
        hint = (
            " (mapper-framework's 'disconnected' is ignored by edgecore: report 'offline')"
            if (state.lower() == "disconnected")
            else ""
        )
        raise invalid(f"state {shown(state)} is not one of {', '.join(DEVICE_STATES)}{hint}")
    return state


def last_online_time(now: datetime | None = None) -> str:
    """RFC 3339, UTC, whole seconds: the form KubeEdge writes to lastOnlineTime."""
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
