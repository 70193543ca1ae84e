"""The agent store's in-memory copy of each device's latest twins and state (what the status writer reads for every
write) against what SQLite holds: after any mix of reports, desired values and states, read back through a fresh
connection, they are the same."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from dmi.agent.store import AgentStore, TwinWrite, _dump, connect, read_state, read_twins
from dmi.resources import ObjectKey

KEYS = [ObjectKey("default", f"dev-{i}") for i in range(3)]
PROPS = ["temperature", "setpoint", "mode"]


def random_write(rng: random.Random, n: int) -> list[TwinWrite]:
    out = []
    for prop in rng.sample(PROPS, rng.randint(1, len(PROPS))):
        reported = rng.random() < 0.8
        desired = rng.random() < 0.3
        out.append(
            TwinWrite(
                prop,
                f"r{n}" if reported else None,
                {"type": "int", "timestamp": str(n)} if reported or rng.random() < 0.2 else None,
                f"d{n}" if desired else None,
                {"type": "int"} if desired else None,
            )
        )
    return out


async def test_the_copy_in_memory_matches_sqlite_through_any_mix_of_writes(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.db")
    store.start()
    rng = random.Random(7)
    marked: list[ObjectKey] = []
    store.on_written.append(marked.append)
    fresh = connect(tmp_path / "agent.db", readonly=True)
    try:
        store.twins(KEYS[0])  # one device read before any write: its copy is kept from then on
        for n in range(1, 300):
            key = rng.choice(KEYS)
            if rng.random() < 0.25:
                online = "2026-12-03T10:00:00Z" if rng.random() < 0.5 else None
                await store.write_state(key, rng.choice(["ok", "offline"]), n, online)
            else:
                # Several reports in flight at once land in one group commit, in order.
                await asyncio.gather(*(store.write_twins(key, random_write(rng, n * 10 + k), n) for k in range(3)))
            if rng.random() < 0.3:
                store.twins(rng.choice(KEYS))  # copies start at any moment
                store.state(rng.choice(KEYS))
            for key in KEYS:  # after every step, not only at the end: a later write can hide a wrong merge
                assert store.twins(key) == read_twins(fresh, key), (n, key)
                assert store.state(key) == read_state(fresh, key), (n, key)
        assert set(marked) == set(KEYS)
    finally:
        fresh.close()
        await store.close()


async def test_a_write_whose_caller_is_cancelled_still_lands_in_the_copy_and_is_marked(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.db")
    store.start()
    key = KEYS[0]
    marked: list[ObjectKey] = []
    store.on_written.append(marked.append)
    try:
        assert store.twins(key) == []
        task = asyncio.create_task(store.write_twins(key, [TwinWrite("temperature", "21", {}, None, None)], 1))
        await asyncio.sleep(0)  # queued for the writer thread
        task.cancel()
        await asyncio.sleep(0.5)  # the group commit goes on without its caller
        assert [row.reported_value for row in store.twins(key)] == ["21"]
        assert marked == [key]
    finally:
        await store.close()


async def test_no_copy_starts_from_sqlite_while_a_commit_waits_to_be_applied(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.db")
    store.start()
    key = KEYS[0]
    seen: list[str | None] = []
    store.on_written.append(lambda k: seen.extend(row.reported_value for row in store.twins(k)))
    try:
        first = asyncio.create_task(store.write_twins(key, [TwinWrite("p", "1", {}, None, None)], 1))
        await asyncio.sleep(0)  # queued for the writer thread
        time.sleep(0.2)  # the loop is held: group 1 commits, its resolution waits for the loop
        second = store.write_twins(key, [TwinWrite("p", "2", {}, None, None)], 2)
        second.send(None)  # queued too, without giving the loop a turn
        time.sleep(0.2)  # group 2 commits
        # A first read sees both commits in SQLite. Had it started the copy, applying group 1 on top would put
        # "1" back after "2" had been handed out.
        assert [row.reported_value for row in store.twins(key)] == ["2"]
        await first
        await asyncio.sleep(0.05)
        with pytest.raises(StopIteration):  # resolved by now: one more step ends it
            second.send(None)
        assert seen == ["2", "2"], seen
        assert [row.reported_value for row in store.twins(key)] == ["2"]
    finally:
        await store.close()


def test_twin_metadata_text_is_what_the_json_encoder_writes() -> None:
    """The hand-built JSON of twin metadata (the ingest hot path) is byte for byte the general encoder's, for any
    strings (quotes, backslashes, control characters, non-ASCII, surrogates) and for values that are not strings."""
    reference = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
    rng = random.Random(7)
    alphabet = ['"', "\\", "\n", "\t", "\x00", "\x1f", "é", "水", "\U0001f600", "\ud800", "/", " ", "a", "Z", "0"]

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))

    cases: list[dict[str, Any]] = [{}, {"type": "int", "timestamp": "1764790000000"}]
    cases += [{text(): text() for _ in range(rng.randint(1, 4))} for _ in range(2000)]
    cases += [{"timestamp": 1764790000000}, {"type": None}, {"a": 1.5, "b": True}, {"x": ["y"]}]
    for meta in cases:
        assert _dump(meta) == reference(meta), meta
        assert json.loads(_dump(meta) or "") == meta
    assert _dump(None) is None
