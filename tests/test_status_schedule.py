"""Which device the status writer writes next when the budget is short (dmi/agent/kube_status.py).

The writer runs here without its loop and without an API: a hand-driven clock, reports marked, and the
writer's own choice taken one token at a time. What the whole agent does with it against the simulated API
is in test_cluster_agent.py; the figures at 1,000 devices are in bench/cloud_sync.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dmi.agent.kube_status import StatusWriter
from dmi.agent.store import AgentStore
from dmi.resources import ObjectKey


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def writer(clock: Clock) -> StatusWriter:
    none: Any = None
    return StatusWriter(none, none, lambda: none, interval_s=1.0, clock=clock)


def key(name: str) -> ObjectKey:
    return ObjectKey("default", name)


def take(w: StatusWriter, n: int) -> list[str]:
    """Up to ``n`` writes, each answered as landed before the next is chosen."""
    out = []
    for _ in range(n):
        taken = w._take_next()
        if taken is None:
            break
        w._answered(taken[0], True, taken[1])
        out.append(taken[0].name)
    return out


def report(w: StatusWriter, clock: Clock, names: str, at: float) -> None:
    for i, name in enumerate(names):
        clock.now = at + i / 64  # in the order given, 1/64 s apart (exact in binary: ties stay ties)
        w.mark(key(name))


def test_skipped_devices_win_over_devices_written_a_moment_ago_and_fresh_reports_win_ties() -> None:
    clock = Clock()
    w = writer(clock)
    report(w, clock, "abcd", 100.0)
    assert take(w, 4) == ["d", "c", "b", "a"]  # never written: all before anything else, freshest first
    report(w, clock, "abcd", 101.0)
    # The budget allows two: all four were written one report ago; the freshest reports go.
    assert take(w, 2) == ["d", "c"]
    report(w, clock, "abcd", 102.25)
    # a and b now carry two reports' worth of news, c and d one: a and b go, though d's report is the freshest.
    assert take(w, 2) == ["b", "a"]
    assert take(w, 2) == ["d", "c"]  # the budget allows more: the rest, freshest first
    assert take(w, 1) == []  # every report is written: nothing stale is left to pick


def test_at_most_one_write_per_interval_and_the_latest_report_when_it_is_up() -> None:
    clock = Clock()
    w = writer(clock)
    report(w, clock, "a", 100.0)
    assert take(w, 1) == ["a"]
    report(w, clock, "a", 100.3)
    report(w, clock, "a", 100.6)
    assert take(w, 1) == []  # written at 100.0: waits out its interval
    clock.now = 101.0
    assert take(w, 1) == ["a"]
    assert w._written_report[key("a")] == 100.6  # the newest report goes out, once
    assert take(w, 1) == []


def test_a_write_that_did_not_land_keeps_its_priority() -> None:
    clock = Clock()
    w = writer(clock)
    report(w, clock, "ab", 100.0)
    assert sorted(take(w, 2)) == ["a", "b"]
    report(w, clock, "ab", 101.0)
    taken = w._take_next()
    assert taken is not None and taken[0].name == "b"
    w._answered(taken[0], False, taken[1])  # refused, or the API server away
    assert take(w, 1) == ["a"]  # lands
    report(w, clock, "ba", 102.0)
    clock.now = 102.1
    # a's report is the fresher, but b's cluster view is still its report of 100 (the write of 101's never
    # landed) while a's is 101's: b goes first.
    assert take(w, 2) == ["b", "a"]


def test_dead_queue_entries_are_compacted() -> None:
    clock = Clock()
    w = writer(clock)
    names = [f"d{i}" for i in range(50)]
    for name in names:
        w.mark(key(name))
    for _step in range(40):  # every device reports again and again while none is written
        clock.now += 0.01
        for name in names:
            w.mark(key(name))
    assert len(w._ready) <= 2 * len(names) + 64
    assert sorted(take(w, 60)) == sorted(names)  # each once, with its latest report


def test_writes_that_bring_little_news_leave_a_reserve_for_views_falling_behind() -> None:
    clock = Clock()
    none: Any = None
    w = StatusWriter(none, none, lambda: none, interval_s=1.0, qps=600, burst=1000, clock=clock)
    # 1.5 intervals of news or more: always; less: only from tokens above half the burst.
    assert w._may_spend(2.0, level=1.0)
    assert w._may_spend(1.5, level=1.0)
    assert not w._may_spend(1.0, level=500.0)
    assert w._may_spend(1.0, level=501.0)
    report(w, clock, "a", 100.0)
    gain = w._best_gain()
    assert gain is not None and w._may_spend(gain, level=1.0)  # never written: urgent


def test_a_device_that_stopped_reporting_is_not_starved_by_devices_that_report_on() -> None:
    clock = Clock()
    w = writer(clock)
    report(w, clock, "abcs", 100.0)
    assert sorted(take(w, 4)) == ["a", "b", "c", "s"]
    report(w, clock, "sabc", 101.0)  # s's last report; a, b, c keep reporting every second
    for second in range(102, 112):
        # The budget: one write a second; a, b and c always have a fresher report of the same news as s.
        report(w, clock, "abc", float(second))
        written = take(w, 1)
        if written == ["s"]:
            break
    else:
        raise AssertionError("the device that stopped reporting was never written")
    # Overdue after 3 intervals; the sweep (once an interval) sees it up to one interval later; then the next
    # write of this test's budget (one a second) is its.
    assert clock.now - w._written_report[key("s")] <= 3 + 1 + 1


def test_no_second_write_while_one_is_in_flight_and_reports_meanwhile_follow_it() -> None:
    clock = Clock()
    w = writer(clock)
    report(w, clock, "a", 100.0)
    first = w._take_next()
    assert first is not None
    clock.now = 101.5  # the write is slow: its interval is up, and a newer report comes
    w.mark(key("a"))
    assert w._take_next() is None  # a second write could land before the first and be overwritten by it
    w._answered(first[0], True, first[1])
    assert take(w, 1) == ["a"]
    assert w._written_report[key("a")] == 101.5


def test_one_live_queue_entry_per_device_however_often_its_write_fails() -> None:
    clock = Clock()
    w = writer(clock)
    report(w, clock, "a", 100.0)
    for _ in range(50):  # refused again and again, no new report: promote and sweep must not pile up entries
        clock.now += 1.0
        w._promote(clock.now)
        taken = w._take_next()
        assert taken is not None
        w._answered(taken[0], False, taken[1])
    assert sum(1 for entry in w._ready if w._valid(entry)) <= 1
    assert len(w._ready) <= 2 * len(w._dirty) + 64


def test_a_device_no_longer_ours_is_forgotten(tmp_path: Path) -> None:
    clock = Clock()
    none: Any = None
    store = AgentStore(tmp_path / "agent.db")
    w = StatusWriter(none, store, lambda: none, interval_s=1.0, clock=clock)
    report(w, clock, "a", 100.0)
    assert store.twins(key("a")) == []  # the store's copy of it starts
    w._forget(key("a"))
    assert take(w, 1) == []
    assert key("a") not in w._reported and key("a") not in w._last_write
    assert key("a") not in store._twins
    store._conn.close()  # never started: no writer thread to stop
    store._reader.close()
